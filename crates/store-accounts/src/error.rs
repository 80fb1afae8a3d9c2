//! The accounts store's one error type.

use crate::types::{AccountId, Hash, PaymentStatus};

/// Everything an accounts store call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No account has this id.
    #[error("account {id} not found")]
    NotFound {
        /// The id asked for.
        id: AccountId,
    },
    /// Another account already has this label.
    #[error("an account with label {} already exists", store_contract::shown(.label))]
    LabelAlreadyExists {
        /// The label.
        label: String,
    },
    /// The label is 16 hex characters and could be mistaken for an account id.
    #[error("the label {} is not allowed as it can be mistaken for an account id", store_contract::shown(.label))]
    LabelNotAllowed {
        /// The label.
        label: String,
    },
    /// The account has no payment with this hash.
    #[error("payment {hash} is not associated with account {id}")]
    PaymentNotAssociated {
        /// The account.
        id: AccountId,
        /// The payment hash.
        hash: Hash,
    },
    /// The payment already succeeded.
    #[error("payment {hash} of account {id} has already succeeded")]
    AlreadySucceeded {
        /// The account.
        id: AccountId,
        /// The payment hash.
        hash: Hash,
    },
    /// The payment is already in flight or succeeded.
    #[error("payment {hash} of account {id} is already in flight or succeeded (status {status:?})")]
    AlreadyPending {
        /// The account.
        id: AccountId,
        /// The payment hash.
        hash: Hash,
        /// Its current status.
        status: PaymentStatus,
    },
    /// A debit would take the balance below zero.
    #[error(
        "cannot debit {amount_msat} msat from account {id}: the balance of {balance_msat} msat would go below 0"
    )]
    WouldGoBelowZero {
        /// The account.
        id: AccountId,
        /// Its balance before the debit.
        balance_msat: i64,
        /// The amount asked for.
        amount_msat: u64,
    },
    /// The last invoice indexes were never stored.
    #[error("no invoice index known")]
    NoInvoiceIndexKnown,
    /// An argument or a stored record is invalid; names the record and field.
    #[error("invalid {field} of {record}: {reason}")]
    InvalidInput {
        /// What the value belongs to, e.g. `account 0011…`.
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
