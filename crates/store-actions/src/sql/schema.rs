//! The actions table of schema step 5. Its names never change.

use sea_query::Iden;

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
