//! Everything a firewall store call can fail with.

use store_sessions::SessionId;

/// Everything a firewall store call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session group does not exist.
    #[error("unknown session group {group}")]
    UnknownGroup {
        /// The group.
        group: SessionId,
    },
    /// The privacy map has no such value.
    #[error("no such key found: {} in group {group}", store_contract::shown(.key))]
    NoSuchKey {
        /// The group.
        group: SessionId,
        /// The value looked up.
        key: String,
    },
    /// The real value already has a pseudo value in the group.
    #[error("real value {} already has a pseudo value in group {group}", store_contract::shown(.real))]
    DuplicateRealValue {
        /// The group.
        group: SessionId,
        /// The real value.
        real: String,
    },
    /// The pseudo value is already used in the group.
    #[error("pseudo value {} is already used in group {group}", store_contract::shown(.pseudo))]
    DuplicatePseudoValue {
        /// The group.
        group: SessionId,
        /// The pseudo value.
        pseudo: String,
    },
    /// A write in a read-only transaction.
    #[error("this transaction is read-only")]
    ReadOnly,
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
