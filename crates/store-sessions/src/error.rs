//! The sessions store's one error type.

use store_accounts::AccountId;

use crate::types::{SessionId, SessionState};

/// Everything a sessions store call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No session matches.
    #[error("session {what} not found")]
    NotFound {
        /// What was looked for: `id 0a1b2c3d` or `local key 02…`.
        what: String,
    },
    /// No session group has this id.
    #[error("unknown session group {group}")]
    UnknownGroup {
        /// The group id.
        group: SessionId,
    },
    /// A session may join a group only when every session in it is revoked
    /// or expired.
    #[error("session group {group} still has active sessions")]
    GroupStillActive {
        /// The group id.
        group: SessionId,
    },
    /// The state machine does not allow this shift.
    #[error("illegal session state transition from {from:?} to {to:?} (session {id})")]
    IllegalStateShift {
        /// The session.
        id: SessionId,
        /// Its current state.
        from: SessionState,
        /// The state asked for.
        to: SessionState,
    },
    /// Only reserved sessions may be deleted.
    #[error("session {id} is not reserved (it is {state:?})")]
    NotReserved {
        /// The session.
        id: SessionId,
        /// Its state.
        state: SessionState,
    },
    /// The account to link does not exist.
    #[error("account {id} not found")]
    AccountNotFound {
        /// The account.
        id: AccountId,
    },
    /// A privacy flag bitmask has bits beyond the eight known flags.
    #[error("unknown privacy flag in bitmask {bits:#x}")]
    UnknownPrivacyFlag {
        /// The bitmask.
        bits: u64,
    },
    /// An argument or a stored record is invalid; names the record and field.
    #[error("invalid {field} of {record}: {reason}")]
    InvalidInput {
        /// What the value belongs to.
        record: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The key-value database was migrated to SQL and is retired.
    #[cfg(feature = "kv")]
    #[error(transparent)]
    Tombstoned(tombstone::Error),
    /// The backend failed.
    #[error("{backend} backend: {source}")]
    Backend {
        /// `"kv"`, `"sqlite"` or `"postgres"`.
        backend: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

store_support::store_error_conversions!(Error);
