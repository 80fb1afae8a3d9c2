//! The actions table, made by schema step 6 ([`STEP`]) and indexed by
//! steps 8 and 9 ([`LIST_INDEXES_STEP`], [`ACTOR_METHOD_INDEXES_STEP`]),
//! the files `migrations/0006_actions.sql`, `0008_…` and `0009_…`. Its
//! names never change.

use sea_query::Iden;
use sqldb::schema::{Step, StepKind};

/// The step that makes the table: nodestore's step 6, litd's version 5.
/// The migrator puts these steps in the schema's one ordered list.
pub const STEP: Step = Step {
    version: 6,
    name: "actions",
    kind: StepKind::Sql(include_str!("../../../../migrations/0006_actions.sql")),
};

/// The composite indexes behind each filtered listing in order (step 8).
pub const LIST_INDEXES_STEP: Step = Step {
    version: 8,
    name: "actions_list_indexes",
    kind: StepKind::Sql(include_str!(
        "../../../../migrations/0008_actions_list_indexes.sql"
    )),
};

/// The actor and method listing indexes (step 9).
pub const ACTOR_METHOD_INDEXES_STEP: Step = Step {
    version: 9,
    name: "actions_actor_method_indexes",
    kind: StepKind::Sql(include_str!(
        "../../../../migrations/0009_actions_actor_method_indexes.sql"
    )),
};

/// `actions`.
#[derive(Debug, Clone, Copy, Iden)]
pub enum Actions {
    /// The table.
    Table,
    /// SQL id (the locator).
    Id,
    /// `sessions.id`.
    SessionId,
    /// `accounts.id`.
    AccountId,
    /// 8-byte big-endian root key id.
    MacaroonIdentifier,
    /// Actor; NULL when empty.
    ActorName,
    /// Feature; NULL when empty.
    FeatureName,
    /// Trigger; NULL when empty.
    ActionTrigger,
    /// Intent; NULL when empty.
    Intent,
    /// Structured JSON.
    StructuredJsonData,
    /// RPC method.
    RpcMethod,
    /// RPC params JSON.
    RpcParamsJson,
    /// Attempted time.
    CreatedAt,
    /// State number.
    ActionState,
    /// Error reason; NULL when empty.
    ErrorReason,
}
