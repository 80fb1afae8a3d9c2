//! Everything an actions store call can fail with.

use store_accounts::AccountId;
use store_sessions::SessionId;

use crate::ActionLocator;

/// Everything an actions store call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No action at this locator.
    #[error("action {locator} not found")]
    NotFound {
        /// The locator.
        locator: ActionLocator,
    },
    /// The session does not exist.
    #[error("session {id} not found")]
    SessionNotFound {
        /// The session.
        id: SessionId,
    },
    /// The account does not exist.
    #[error("account {id} not found")]
    AccountNotFound {
        /// The account.
        id: AccountId,
    },
    /// The session group does not exist.
    #[error("unknown session group {group}")]
    UnknownGroup {
        /// The group.
        group: SessionId,
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
