//! The firewall tables, made by schema steps 4 ([`KVSTORES_STEP`]) and 5
//! ([`PRIVACY_PAIRS_STEP`]), the files `migrations/0004_kvstores.sql` and
//! `migrations/0005_privacy_pairs.sql`. Their names never change.

use sea_query::Iden;
use sqldb::schema::{Step, StepKind};

/// The step that makes the rule kv-stores: nodestore's step 4, litd's
/// version 3. The migrator puts it in the schema's one ordered list.
pub const KVSTORES_STEP: Step = Step {
    version: 4,
    name: "kvstores",
    kind: StepKind::Sql(include_str!("../../../../migrations/0004_kvstores.sql")),
};

/// The step that makes the privacy mapper's pairs: nodestore's step 5,
/// litd's version 4.
pub const PRIVACY_PAIRS_STEP: Step = Step {
    version: 5,
    name: "privacy_pairs",
    kind: StepKind::Sql(include_str!(
        "../../../../migrations/0005_privacy_pairs.sql"
    )),
};

/// `rules`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum Rules {
    /// The table.
    Table,
    /// SQL id.
    Id,
    /// Rule name.
    Name,
}

/// `features`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum Features {
    /// The table.
    Table,
    /// SQL id.
    Id,
    /// Feature name.
    Name,
}

/// `kvstores`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum Kvstores {
    /// The table.
    Table,
    /// SQL id.
    Id,
    /// Permanent (true) or temporary.
    Perm,
    /// `rules.id`.
    RuleId,
    /// `sessions.id` of the group; NULL for global.
    GroupId,
    /// `features.id`; NULL unless feature-scoped.
    FeatureId,
    /// The key.
    EntryKey,
    /// The value.
    Value,
}

/// `privacy_pairs`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum PrivacyPairs {
    /// The table.
    Table,
    /// `sessions.id` of the group.
    GroupId,
    /// Real value.
    RealVal,
    /// Pseudo value.
    PseudoVal,
}
