//! nodestore's accounts store: off-chain balance accounts a remote app can
//! spend from, with the invoices paid into them, the payments made from
//! them, labels and expiry.
//!
//! # What it is
//! One async [`Store`] trait and three interchangeable backends:
//! - [`KvStore`]: the legacy sled layout, one `accounts` tree with one
//!   record per account (keyed by its 8-byte id) and the two index keys
//!   `last-add-index` and `last-settle-index`; values through [`kvcodec`].
//! - [`SqlStore`] on SQLite or PostgreSQL (a [`sqldb::Db`]): the tables
//!   `accounts`, `account_invoices`, `account_payments` and
//!   `account_indices`, with one implementation of the logic for both.
//!
//! # Contract (every backend)
//! - Ids are random; [`Store::accounts`] lists by id (unsigned byte order).
//! - A label is unique when not empty, and a label of exactly 16 hex
//!   characters is refused ([`Error::LabelNotAllowed`]) because it could be
//!   mistaken for an account id.
//! - Every method that changes an account sets its `last_update` to now,
//!   except an [`Store::add_account_invoice`] that finds the invoice already
//!   there, and [`Store::remove_account`] / [`Store::store_last_indexes`].
//! - Amounts and indexes are stored as signed 64-bit numbers: a value above
//!   `i64::MAX` is refused with [`Error::InvalidInput`], never wrapped.
//! - Timestamps are kept to the microsecond on SQL backends; sled keeps them
//!   to the nanosecond. Expiry times must be within years 1 to 9999.
//! - Each call is one transaction: it applies completely or not at all.
//! - Removing an account on a SQL backend also removes what references it
//!   there: its invoices and payments, and sessions and actions linked to it
//!   (`ON DELETE CASCADE`); sled removes only the account record.
//!
//! # Features
//! `kv` (`KvStore`), `sqlite` and `postgres` (`SqlStore` on each), all on by
//! default; a build with only the backends it uses compiles only their
//! drivers (docs/design.md §4.4).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[cfg(feature = "testing")]
pub mod conformance;
mod error;
#[cfg(feature = "kv")]
pub mod kv;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
mod types;

pub use error::{Error, Result};
#[cfg(feature = "kv")]
pub use kv::KvStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::SqlStore;
pub use types::{
    Account, AccountId, AccountPayment, AccountType, AccountUpdate, Hash, LastIndexes,
    PaymentEntry, PaymentStatus, UpsertOptions,
};

/// The accounts store. See the crate docs for the contract every backend
/// keeps; each method's docs say what it does, its errors, its ordering and
/// whether it is idempotent.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync {
    /// Creates an account with `balance_msat` as its initial and current
    /// balance, the given expiry (`None`: never) and label (empty: none).
    ///
    /// Errors: [`Error::LabelNotAllowed`], [`Error::LabelAlreadyExists`],
    /// [`Error::InvalidInput`] for a balance above `i64::MAX` or an expiry
    /// out of range. Not idempotent: each call creates a new account.
    async fn new_account(
        &self,
        balance_msat: u64,
        expiration: Option<DateTime<Utc>>,
        label: &str,
    ) -> Result<Account>;

    /// The account `id` with its invoices and payments.
    ///
    /// Errors: [`Error::NotFound`].
    async fn account(&self, id: AccountId) -> Result<Account>;

    /// Every account, ordered by id (unsigned byte order). Empty when there
    /// are none.
    async fn accounts(&self) -> Result<Vec<Account>>;

    /// Changes the fields that `update` sets and always bumps `last_update`
    /// (even when nothing else changes). Renaming an account to its own label
    /// is allowed.
    ///
    /// Errors: [`Error::NotFound`], [`Error::LabelNotAllowed`],
    /// [`Error::LabelAlreadyExists`], [`Error::InvalidInput`]. Idempotent
    /// apart from `last_update`.
    async fn update_account(&self, id: AccountId, update: AccountUpdate) -> Result<()>;

    /// Adds an invoice hash to the account. Idempotent: adding a known hash
    /// changes nothing, not even `last_update`.
    ///
    /// Errors: [`Error::NotFound`].
    async fn add_account_invoice(&self, id: AccountId, hash: Hash) -> Result<()>;

    /// Adds `amount_msat` to the balance.
    ///
    /// Errors: [`Error::NotFound`], [`Error::InvalidInput`] when the amount
    /// or the new balance does not fit in an i64. Not idempotent.
    async fn credit_account(&self, id: AccountId, amount_msat: u64) -> Result<()>;

    /// Subtracts `amount_msat` from the balance; reaching exactly zero is
    /// allowed.
    ///
    /// Errors: [`Error::NotFound`], [`Error::WouldGoBelowZero`]. Not idempotent.
    async fn debit_account(&self, id: AccountId, amount_msat: u64) -> Result<()>;

    /// Inserts or overwrites the payment `hash` with `full_amount_msat` and
    /// `status`, applying `opts` (see [`UpsertOptions`]). Returns whether the
    /// payment was known before.
    ///
    /// Errors: [`Error::NotFound`], [`Error::AlreadySucceeded`],
    /// [`Error::AlreadyPending`], [`Error::PaymentNotAssociated`] (with
    /// `err_if_unknown`), [`Error::InvalidInput`] for an amount above
    /// `i64::MAX`. On error nothing changes.
    async fn upsert_account_payment(
        &self,
        id: AccountId,
        hash: Hash,
        full_amount_msat: u64,
        status: PaymentStatus,
        opts: UpsertOptions,
    ) -> Result<bool>;

    /// Removes the payment `hash` from the account.
    ///
    /// Errors: [`Error::NotFound`], [`Error::PaymentNotAssociated`] when the
    /// account has no such payment (so not idempotent).
    async fn delete_account_payment(&self, id: AccountId, hash: Hash) -> Result<()>;

    /// A page of the account's payments ordered by hash (byte order):
    /// skips `offset`, returns at most `limit`. An offset past the end or a
    /// limit of 0 gives an empty page.
    ///
    /// Errors: [`Error::NotFound`].
    async fn list_account_payments(
        &self,
        id: AccountId,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<AccountPayment>>;

    /// The number of payments of the account.
    ///
    /// Errors: [`Error::NotFound`].
    async fn count_account_payments(&self, id: AccountId) -> Result<u64>;

    /// Removes the account (see the crate docs for what SQL removes with it).
    ///
    /// Errors: [`Error::NotFound`] (so not idempotent).
    async fn remove_account(&self, id: AccountId) -> Result<()>;

    /// The last invoice indexes stored.
    ///
    /// Errors: [`Error::NoInvoiceIndexKnown`] when either was never stored.
    async fn last_indexes(&self) -> Result<LastIndexes>;

    /// Stores both last invoice indexes, replacing earlier ones. Idempotent.
    ///
    /// Errors: [`Error::InvalidInput`] for an index above `i64::MAX`.
    async fn store_last_indexes(&self, indexes: LastIndexes) -> Result<()>;
}

/// Refuses a label that could be mistaken for an account id: exactly 16
/// characters that all are hex digits (either case).
pub fn check_label(label: &str) -> Result<()> {
    if label.len() == 16 && label.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::LabelNotAllowed {
            label: label.to_owned(),
        });
    }
    Ok(())
}

/// A value of `record`'s `field` checked against the data contract
/// (`store_contract`), refused as [`Error::InvalidInput`] naming the field.
pub(crate) fn contract<T>(
    record: impl Into<String>,
    field: &'static str,
    checked: std::result::Result<T, store_contract::Violation>,
) -> Result<T> {
    checked.map_err(|v| invalid(record, field, v.to_string()))
}

pub(crate) fn invalid(
    record: impl Into<String>,
    field: &'static str,
    reason: impl Into<String>,
) -> Error {
    Error::InvalidInput {
        record: record.into(),
        field,
        reason: reason.into(),
    }
}

/// An msat amount as the i64 every backend stores.
pub(crate) fn amount_i64(record: impl Into<String>, field: &'static str, v: u64) -> Result<i64> {
    contract(record, field, store_contract::number(v))
}

/// Checks an expiry is storable on every backend, and returns it as every
/// backend stores it (microseconds, no leap second).
pub(crate) fn check_expiration(
    record: impl Into<String>,
    exp: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>> {
    exp.map(|t| contract(record, "expiration", store_contract::time(t)))
        .transpose()
}

impl Account {
    /// A stored account against the data contract (imports and the
    /// migration check what they write with it).
    pub fn check(&self) -> Result<()> {
        let rec = format!("account {}", self.id);
        amount_i64(
            rec.clone(),
            "initial_balance_msat",
            self.initial_balance_msat,
        )?;
        contract(rec.clone(), "label", store_contract::key(&self.label))?;
        contract(
            rec.clone(),
            "last_update",
            store_contract::time(self.last_update),
        )?;
        check_expiration(rec.clone(), self.expiration)?;
        for (hash, p) in &self.payments {
            // The payment's name is written only for one that fails: the
            // migration checks every payment of a database.
            store_contract::number(p.full_amount_msat).map_err(|v| {
                invalid(
                    format!("{rec}, payment {hash}"),
                    "full_amount_msat",
                    v.to_string(),
                )
            })?;
        }
        Ok(())
    }
}

/// The arguments of [`Store::new_account`] checked against the contract, as
/// every backend stores them: the balance as i64, the expiry normalised.
pub(crate) fn check_new_account(
    balance_msat: u64,
    expiration: Option<DateTime<Utc>>,
    label: &str,
) -> Result<(i64, Option<DateTime<Utc>>)> {
    let balance = amount_i64("new account", "balance_msat", balance_msat)?;
    let expiration = check_expiration("new account", expiration)?;
    check_label_contract("new account", label)?;
    Ok((balance, expiration))
}

/// An [`AccountUpdate`] checked against the contract, its expiry normalised.
pub(crate) fn check_update(id: AccountId, mut update: AccountUpdate) -> Result<AccountUpdate> {
    let rec = format!("account {id}");
    if let Some(exp) = update.expiration {
        update.expiration = Some(check_expiration(rec.clone(), exp)?);
    }
    if let Some(label) = &update.label {
        check_label_contract(rec, label)?;
    }
    Ok(update)
}

/// Checks a label against the contract (a key: it is unique) and the rule
/// that it may not look like an account id.
pub(crate) fn check_label_contract(record: impl Into<String>, label: &str) -> Result<()> {
    contract(record, "label", store_contract::key(label))?;
    check_label(label)
}

/// The SQL layer stores "no expiry" as the zero time; reading it back (or
/// being given it) means "never expires" on every backend.
pub(crate) fn normalise_expiration(exp: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    exp.filter(|t| *t > store_contract::zero_time())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_that_look_like_ids_are_refused() {
        for ok in [
            "",
            "foo",
            "a label with spaces",
            "00112233",
            "G011223344556677",
            "0011223344556677aa",
        ] {
            check_label(ok).unwrap();
        }
        for bad in ["0011223344556677", "AABBCCDDEEFF0011", "aAbBcCdDeEfF0011"] {
            assert!(
                matches!(check_label(bad), Err(Error::LabelNotAllowed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn account_ids_print_and_parse_as_16_hex_characters() {
        let id = AccountId([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 0xff]);
        assert_eq!(id.to_string(), "deadbeef000102ff");
        assert_eq!("DEADBEEF000102FF".parse::<AccountId>().unwrap(), id);
        assert!("deadbeef".parse::<AccountId>().is_err());
        assert!("deadbeef000102fg".parse::<AccountId>().is_err());
        assert_eq!(AccountId::from_alias(id.to_alias()), id);
        assert!(
            id.to_alias() < 0,
            "the alias is the big-endian signed value"
        );
    }
}

#[cfg(test)]
testkit::suite_lists_every_function!(include_str!("conformance.rs"));
