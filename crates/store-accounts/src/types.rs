//! The accounts store's domain types.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::error::Error;

/// An account's identifier: 8 random bytes, shown as 16 hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub [u8; 8]);

impl AccountId {
    /// The id as the SQL `alias`: the 8 bytes read as a big-endian i64.
    pub fn to_alias(self) -> i64 {
        i64::from_be_bytes(self.0)
    }

    /// The id of an SQL `alias`.
    pub fn from_alias(alias: i64) -> AccountId {
        AccountId(alias.to_be_bytes())
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

impl FromStr for AccountId {
    type Err = Error;

    /// Parses exactly 16 hex characters (either case).
    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidInput {
            record: format!("account id {s:?}"),
            field: "id",
            reason: reason.to_owned(),
        };
        if s.len() != 16 {
            return Err(invalid("must be exactly 16 hex characters"));
        }
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).map_err(|_| invalid("must be hex"))?;
        Ok(AccountId(id))
    }
}

/// A 32-byte payment or invoice hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl From<[u8; 32]> for Hash {
    fn from(b: [u8; 32]) -> Self {
        Hash(b)
    }
}

/// The kind of account; only one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AccountType {
    /// A balance set at creation and changed by payments.
    #[default]
    InitialBalance,
}

impl AccountType {
    /// The stored number.
    pub fn code(self) -> u8 {
        match self {
            AccountType::InitialBalance => 0,
        }
    }

    /// The type of a stored number.
    pub fn from_code(code: i64) -> Option<AccountType> {
        (code == 0).then_some(AccountType::InitialBalance)
    }
}

/// The status of a payment made from an account (lnd's payment statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaymentStatus {
    /// Not known yet.
    Unknown,
    /// Sent, not settled.
    InFlight,
    /// Settled.
    Succeeded,
    /// Failed; may be retried.
    Failed,
    /// Created, not sent yet.
    Initiated,
}

impl PaymentStatus {
    /// Every status.
    pub const ALL: [PaymentStatus; 5] = [
        PaymentStatus::Unknown,
        PaymentStatus::InFlight,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Initiated,
    ];

    /// The stored number (lnd's enum value).
    pub fn code(self) -> u8 {
        match self {
            PaymentStatus::Unknown => 0,
            PaymentStatus::InFlight => 1,
            PaymentStatus::Succeeded => 2,
            PaymentStatus::Failed => 3,
            PaymentStatus::Initiated => 4,
        }
    }

    /// The status of a stored number.
    pub fn from_code(code: i64) -> Option<PaymentStatus> {
        PaymentStatus::ALL
            .into_iter()
            .find(|s| i64::from(s.code()) == code)
    }
}

/// A payment made from an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaymentEntry {
    /// Its status.
    pub status: PaymentStatus,
    /// Amount plus fee limit in msat (the actual fee once settled).
    pub full_amount_msat: u64,
}

/// A payment with its hash, as listed by [`crate::Store::list_account_payments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountPayment {
    /// The payment hash.
    pub hash: Hash,
    /// The payment.
    pub entry: PaymentEntry,
}

/// An off-chain balance account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// Its type.
    pub account_type: AccountType,
    /// The balance it was created with, in msat; never changes.
    pub initial_balance_msat: u64,
    /// The current balance in msat; may be negative when fees exceeded the
    /// estimate.
    pub current_balance_msat: i64,
    /// When the store last changed it.
    pub last_update: DateTime<Utc>,
    /// When it expires; `None` means never.
    pub expiration: Option<DateTime<Utc>>,
    /// Its label; empty means none. Unique when not empty.
    pub label: String,
    /// Hashes of invoices paid into it.
    pub invoices: BTreeSet<Hash>,
    /// Payments made from it, by hash.
    pub payments: BTreeMap<Hash, PaymentEntry>,
}

impl Account {
    /// True when it has an expiry that is before `now`.
    pub fn has_expired(&self, now: DateTime<Utc>) -> bool {
        self.expiration.is_some_and(|e| e < now)
    }
}

/// The fields [`crate::Store::update_account`] changes; `None` leaves a
/// field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountUpdate {
    /// The new current balance (set, not added).
    pub balance_msat: Option<i64>,
    /// The new expiry; `Some(None)` removes it.
    pub expiration: Option<Option<DateTime<Utc>>>,
    /// The new label; `Some("")` removes it.
    pub label: Option<String>,
}

/// Options of [`crate::Store::upsert_account_payment`]; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertOptions {
    /// After the upsert, subtract the payment's amount from the balance
    /// (without a check against going negative).
    pub debit_account: bool,
    /// Fail with [`Error::AlreadyPending`] when the payment is known and not
    /// failed.
    pub err_if_already_pending: bool,
    /// Fail with [`Error::AlreadySucceeded`] when the payment is known and
    /// succeeded (checked before `err_if_already_pending`).
    pub err_if_already_succeeded: bool,
    /// When the payment is known, keep its stored amount instead of the one
    /// given.
    pub use_pending_amount: bool,
    /// Fail with [`Error::PaymentNotAssociated`] when the payment is not known.
    pub err_if_unknown: bool,
}

impl UpsertOptions {
    /// The one decision of an upsert, for every backend: given the payment
    /// as stored (`None` when unknown) and the amount asked for, the amount
    /// to store, or the error these options call for. Succeeded is checked
    /// before pending, as documented on the fields.
    pub fn decide(
        self,
        id: crate::AccountId,
        hash: crate::Hash,
        existing: Option<crate::PaymentEntry>,
        full_amount_msat: u64,
    ) -> crate::Result<u64> {
        match existing {
            Some(p)
                if self.err_if_already_succeeded && p.status == crate::PaymentStatus::Succeeded =>
            {
                Err(crate::Error::AlreadySucceeded { id, hash })
            }
            Some(p) if self.err_if_already_pending && p.status != crate::PaymentStatus::Failed => {
                Err(crate::Error::AlreadyPending {
                    id,
                    hash,
                    status: p.status,
                })
            }
            Some(p) if self.use_pending_amount => Ok(p.full_amount_msat),
            Some(_) => Ok(full_amount_msat),
            None if self.err_if_unknown => Err(crate::Error::PaymentNotAssociated { id, hash }),
            None => Ok(full_amount_msat),
        }
    }
}

/// The last invoice indexes seen from lnd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastIndexes {
    /// The last add index.
    pub add_index: u64,
    /// The last settle index.
    pub settle_index: u64,
}
