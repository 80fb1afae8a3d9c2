//! The firewall tables of schema steps 3 and 4. Their names never change.

use sea_query::Iden;

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
