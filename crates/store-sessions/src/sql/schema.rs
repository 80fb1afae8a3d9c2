//! The sessions tables, made by schema step 3 ([`STEP`], the file
//! `migrations/0003_sessions.sql`). Their names never change.

use sea_query::Iden;
use sqldb::schema::{Step, StepKind};

/// The step that makes these tables: nodestore's step 3, litd's version 2.
/// The migrator puts it in the schema's one ordered list.
pub const STEP: Step = Step {
    version: 3,
    name: "sessions",
    kind: StepKind::Sql(include_str!("../../../../migrations/0003_sessions.sql")),
};

/// `sessions`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum Sessions {
    /// The table.
    Table,
    /// SQL id.
    Id,
    /// The 4-byte session id.
    Alias,
    /// Label.
    Label,
    /// State number.
    State,
    /// Type number.
    Type,
    /// Expiry.
    Expiry,
    /// Creation time.
    CreatedAt,
    /// Revocation time.
    RevokedAt,
    /// Mailbox server.
    ServerAddress,
    /// Dev server flag.
    DevServer,
    /// Root key id as i64.
    MacaroonRootKey,
    /// Pairing secret.
    PairingSecret,
    /// Local private key.
    LocalPrivateKey,
    /// Local public key.
    LocalPublicKey,
    /// Remote public key.
    RemotePublicKey,
    /// Privacy mapper flag.
    Privacy,
    /// `accounts.id`.
    AccountId,
    /// `sessions.id` of the group's first session.
    GroupId,
}

/// `session_macaroon_permissions`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum SessionMacaroonPermissions {
    /// The table.
    Table,
    /// `sessions.id`.
    SessionId,
    /// Entity.
    Entity,
    /// Action.
    Action,
    /// Order within the recipe.
    Position,
}

/// `session_macaroon_caveats`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum SessionMacaroonCaveats {
    /// The table.
    Table,
    /// `sessions.id`.
    SessionId,
    /// Caveat id.
    CaveatId,
    /// Verification id; NULL for first-party.
    VerificationId,
    /// Location; NULL when empty.
    Location,
    /// Order within the recipe.
    Position,
}

/// `session_feature_configs`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum SessionFeatureConfigs {
    /// The table.
    Table,
    /// `sessions.id`.
    SessionId,
    /// Feature name.
    FeatureName,
    /// Opaque config.
    Config,
}

/// `session_privacy_flags`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum SessionPrivacyFlags {
    /// The table.
    Table,
    /// `sessions.id`.
    SessionId,
    /// Flag bit number.
    Flag,
}
