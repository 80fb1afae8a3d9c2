//! The sled backend and its on-disk records.
//!
//! Layout (LiT's `accounts` bucket, one sled tree):
//!
//! | key | value |
//! |---|---|
//! | 8-byte account id | [`record::AccountRecordV1`] |
//! | `last-add-index` | [`record::IndexRecordV1`] |
//! | `last-settle-index` | [`record::IndexRecordV1`] |
//!
//! Any other key is an error when read. Values go through [`kvcodec`];
//! `testdata/accounts/` holds golden bytes of every record kind.
//!
//! Writes are serialised by one mutex per store (read, check, write,
//! flush), so concurrent credits and debits never lose an update, and every
//! write is flushed to disk before the call returns. All sled calls run on
//! tokio's blocking pool.

use std::sync::{Arc, Mutex};
use store_support::off_executor;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tombstone::KvDb;

use crate::types::{
    Account, AccountId, AccountPayment, AccountUpdate, Hash, LastIndexes, PaymentStatus,
    UpsertOptions,
};
use crate::{
    Error, Result, Store, amount_i64, check_new_account, check_update, invalid,
    normalise_expiration,
};

/// The tree of the accounts store.
pub const TREE: &str = "accounts";
/// The key of the last add index.
pub const LAST_ADD_INDEX_KEY: &[u8] = b"last-add-index";
/// The key of the last settle index.
pub const LAST_SETTLE_INDEX_KEY: &[u8] = b"last-settle-index";

const BACKEND: &str = "kv";

/// The records stored in the tree. Released versions are never edited; a
/// new shape gets a new version (see [`kvcodec`]).
pub mod record {
    use std::collections::{BTreeMap, BTreeSet};

    pub use kvcodec::TimeV1;
    use serde::{Deserialize, Serialize};

    use crate::types::{Account, AccountId, AccountType, Hash, PaymentEntry, PaymentStatus};
    use crate::{Result, invalid};

    /// Version of [`AccountRecordV1`].
    pub const ACCOUNT_V1: u8 = 1;
    /// Version of [`IndexRecordV1`].
    pub const INDEX_V1: u8 = 1;

    /// A payment inside an account record.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PaymentRecordV1 {
        /// The payment hash.
        pub hash: [u8; 32],
        /// lnd's status number.
        pub status: u8,
        /// Amount plus fee limit, msat.
        pub full_amount_msat: u64,
    }

    /// One account with its invoices and payments (sorted by hash).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct AccountRecordV1 {
        /// The id; must equal the key.
        pub id: [u8; 8],
        /// The account type number.
        pub account_type: u8,
        /// Initial balance, msat.
        pub initial_balance_msat: u64,
        /// Current balance, msat (may be negative).
        pub current_balance_msat: i64,
        /// Last change.
        pub last_update: TimeV1,
        /// Expiry; absent means never.
        pub expiration: Option<TimeV1>,
        /// Label; empty means none.
        pub label: String,
        /// Invoice hashes.
        pub invoices: Vec<[u8; 32]>,
        /// Payments.
        pub payments: Vec<PaymentRecordV1>,
    }

    /// A last invoice index.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct IndexRecordV1 {
        /// The index.
        pub value: u64,
    }

    impl AccountRecordV1 {
        /// The record of an account.
        pub fn from_account(a: &Account) -> AccountRecordV1 {
            AccountRecordV1 {
                id: a.id.0,
                account_type: a.account_type.code(),
                initial_balance_msat: a.initial_balance_msat,
                current_balance_msat: a.current_balance_msat,
                last_update: TimeV1::from_time(a.last_update),
                expiration: a.expiration.map(TimeV1::from_time),
                label: a.label.clone(),
                invoices: a.invoices.iter().map(|h| h.0).collect(),
                payments: a
                    .payments
                    .iter()
                    .map(|(h, p)| PaymentRecordV1 {
                        hash: h.0,
                        status: p.status.code(),
                        full_amount_msat: p.full_amount_msat,
                    })
                    .collect(),
            }
        }

        /// The account of a record, checking every field.
        pub fn to_account(&self) -> Result<Account> {
            let id = AccountId(self.id);
            let rec = || format!("account {id}");
            let account_type =
                AccountType::from_code(i64::from(self.account_type)).ok_or_else(|| {
                    invalid(
                        rec(),
                        "account_type",
                        format!("unknown type {}", self.account_type),
                    )
                })?;
            let last_update = self
                .last_update
                .to_time()
                .ok_or_else(|| invalid(rec(), "last_update", "not a valid time"))?;
            let expiration = match self.expiration {
                None => None,
                Some(t) => Some(
                    t.to_time()
                        .ok_or_else(|| invalid(rec(), "expiration", "not a valid time"))?,
                ),
            };
            let mut payments = BTreeMap::new();
            for p in &self.payments {
                let status = PaymentStatus::from_code(i64::from(p.status)).ok_or_else(|| {
                    invalid(
                        rec(),
                        "payments",
                        format!("payment {} has unknown status {}", Hash(p.hash), p.status),
                    )
                })?;
                payments.insert(
                    Hash(p.hash),
                    PaymentEntry {
                        status,
                        full_amount_msat: p.full_amount_msat,
                    },
                );
            }
            Ok(Account {
                id,
                account_type,
                initial_balance_msat: self.initial_balance_msat,
                current_balance_msat: self.current_balance_msat,
                last_update,
                expiration,
                label: self.label.clone(),
                invoices: self
                    .invoices
                    .iter()
                    .copied()
                    .map(Hash)
                    .collect::<BTreeSet<_>>(),
                payments,
            })
        }
    }
}

/// One entry of the accounts tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// An account.
    Account(Account),
    /// The last add index.
    LastAddIndex(u64),
    /// The last settle index.
    LastSettleIndex(u64),
}

fn key_name(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if key.len() != 8 && s.chars().all(|c| c.is_ascii_graphic()) => format!("{s:?}"),
        _ => hex::encode(key),
    }
}

/// Decodes one entry of the accounts tree; the error names the tree and key.
pub fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry> {
    let record = || format!("tree {TREE}, key {}", key_name(key));
    let codec = |e: kvcodec::CodecError| invalid(record(), "value", e.to_string());
    if key == LAST_ADD_INDEX_KEY || key == LAST_SETTLE_INDEX_KEY {
        let idx: record::IndexRecordV1 = kvcodec::decode(value, record::INDEX_V1).map_err(codec)?;
        return Ok(if key == LAST_ADD_INDEX_KEY {
            Entry::LastAddIndex(idx.value)
        } else {
            Entry::LastSettleIndex(idx.value)
        });
    }
    if key.len() != 8 {
        return Err(invalid(
            record(),
            "key",
            "neither an 8-byte account id nor an index key",
        ));
    }
    let rec: record::AccountRecordV1 = kvcodec::decode(value, record::ACCOUNT_V1).map_err(codec)?;
    if rec.id != key {
        return Err(invalid(
            record(),
            "id",
            format!("record holds id {}", hex::encode(rec.id)),
        ));
    }
    rec.to_account().map(Entry::Account)
}

fn encode_account(a: &Account) -> Result<Vec<u8>> {
    kvcodec::encode(
        record::ACCOUNT_V1,
        &record::AccountRecordV1::from_account(a),
    )
    .map_err(|e| invalid(format!("account {}", a.id), "value", e.to_string()))
}

fn encode_index(v: u64) -> Result<Vec<u8>> {
    kvcodec::encode(record::INDEX_V1, &record::IndexRecordV1 { value: v })
        .map_err(|e| invalid("last index", "value", e.to_string()))
}

/// The accounts store on sled.
#[derive(Clone)]
pub struct KvStore {
    kv: KvDb,
    tree: sled::Tree,
    write: Arc<Mutex<()>>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("path", &self.kv.path())
            .finish()
    }
}

fn now() -> DateTime<Utc> {
    store_contract::normalise_time(Utc::now())
}

impl KvStore {
    /// The accounts store of an open key-value database.
    ///
    /// Errors: [`Error::Tombstoned`] when the database was retired.
    pub fn open(kv: &KvDb) -> Result<KvStore> {
        kv.check()?;
        Ok(KvStore {
            kv: kv.clone(),
            tree: kv.tree(TREE)?,
            write: Arc::new(Mutex::new(())),
        })
    }

    /// Writes `accounts` as they are, replacing accounts with their ids,
    /// without the business rules (label checks, `last_update`), as one
    /// batch with one flush. For restoring a dump and for building databases.
    pub async fn import_accounts(&self, accounts: Vec<Account>) -> Result<()> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            let values = accounts
                .iter()
                .map(|a| Ok((a.id.0, encode_account(a)?)))
                .collect::<Result<Vec<_>>>()?;
            this.kv
                .write(&[&this.tree], |w| {
                    for (k, v) in &values {
                        w.insert(0, k, v)?;
                    }
                    Ok::<_, sled::transaction::ConflictableTransactionError<Error>>(())
                })
                .map_err(tombstone::transaction_error)?;
            this.kv.flush()?;
            Ok(())
        })
        .await
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.write.lock().map_err(|_| Error::Backend {
            backend: BACKEND,
            source: "write lock poisoned".into(),
        })
    }

    fn get(&self, id: AccountId) -> Result<Account> {
        let value = self.tree.get(id.0)?.ok_or(Error::NotFound { id })?;
        match decode_entry(&id.0, &value)? {
            Entry::Account(a) => Ok(a),
            _ => Err(Error::NotFound { id }),
        }
    }

    fn all(&self) -> Result<Vec<Account>> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            if let Entry::Account(a) = decode_entry(&k, &v)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    fn put(&self, account: &Account) -> Result<()> {
        let value = encode_account(account)?;
        self.write(|w| {
            w.insert(0, account.id.0, &value)?;
            Ok(())
        })?;
        self.kv.flush()?;
        Ok(())
    }

    /// One tracked transaction on the accounts tree (tree 0).
    fn write<T>(
        &self,
        f: impl Fn(
            &mut tombstone::Writes<'_>,
        )
            -> std::result::Result<T, sled::transaction::ConflictableTransactionError<Error>>,
    ) -> Result<T> {
        self.kv
            .write(&[&self.tree], f)
            .map_err(tombstone::transaction_error)
    }

    fn label_taken(&self, label: &str, except: Option<AccountId>) -> Result<bool> {
        Ok(self
            .all()?
            .iter()
            .any(|a| a.label == label && Some(a.id) != except))
    }

    /// Reads the account, applies `f`, writes it back: all under the write lock.
    async fn modify<T, F>(&self, id: AccountId, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&KvStore, &mut Account) -> Result<(T, bool)> + Send + 'static,
    {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            let mut account = this.get(id)?;
            let (out, changed) = f(&this, &mut account)?;
            if changed {
                this.put(&account)?;
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl Store for KvStore {
    async fn new_account(
        &self,
        balance_msat: u64,
        expiration: Option<DateTime<Utc>>,
        label: &str,
    ) -> Result<Account> {
        let label = label.to_owned();
        let this = self.clone();
        off_executor(move || {
            let (balance, expiration) = check_new_account(balance_msat, expiration, &label)?;
            let _guard = this.lock()?;
            if !label.is_empty() && this.label_taken(&label, None)? {
                return Err(Error::LabelAlreadyExists { label });
            }
            let mut id = None;
            for _ in 0..10 {
                let candidate = AccountId(rand::random());
                if this.tree.get(candidate.0)?.is_none() {
                    id = Some(candidate);
                    break;
                }
            }
            let id = id.ok_or_else(|| {
                invalid("new account", "id", "no unused random id in 10 attempts")
            })?;
            let account = Account {
                id,
                account_type: Default::default(),
                initial_balance_msat: balance_msat,
                current_balance_msat: balance,
                last_update: now(),
                expiration: normalise_expiration(expiration),
                label,
                invoices: Default::default(),
                payments: Default::default(),
            };
            this.put(&account)?;
            Ok(account)
        })
        .await
    }

    async fn account(&self, id: AccountId) -> Result<Account> {
        let this = self.clone();
        off_executor(move || this.get(id)).await
    }

    async fn accounts(&self) -> Result<Vec<Account>> {
        let this = self.clone();
        off_executor(move || this.all()).await
    }

    async fn update_account(&self, id: AccountId, update: AccountUpdate) -> Result<()> {
        let update = check_update(id, update)?;
        self.modify(id, move |this, a| {
            if let Some(label) = &update.label
                && !label.is_empty()
                && this.label_taken(label, Some(id))?
            {
                return Err(Error::LabelAlreadyExists {
                    label: label.clone(),
                });
            }
            if let Some(b) = update.balance_msat {
                a.current_balance_msat = b;
            }
            if let Some(exp) = update.expiration {
                a.expiration = normalise_expiration(exp);
            }
            if let Some(label) = update.label {
                a.label = label;
            }
            a.last_update = now();
            Ok(((), true))
        })
        .await
    }

    async fn add_account_invoice(&self, id: AccountId, hash: Hash) -> Result<()> {
        self.modify(id, move |_, a| {
            if !a.invoices.insert(hash) {
                return Ok(((), false));
            }
            a.last_update = now();
            Ok(((), true))
        })
        .await
    }

    async fn credit_account(&self, id: AccountId, amount_msat: u64) -> Result<()> {
        self.modify(id, move |_, a| {
            let rec = format!("account {id}");
            let amount = amount_i64(rec.clone(), "amount_msat", amount_msat)?;
            a.current_balance_msat =
                a.current_balance_msat.checked_add(amount).ok_or_else(|| {
                    invalid(
                        rec,
                        "current_balance_msat",
                        "the credit would overflow the balance",
                    )
                })?;
            a.last_update = now();
            Ok(((), true))
        })
        .await
    }

    async fn debit_account(&self, id: AccountId, amount_msat: u64) -> Result<()> {
        self.modify(id, move |_, a| {
            let below = Error::WouldGoBelowZero {
                id,
                balance_msat: a.current_balance_msat,
                amount_msat,
            };
            let Ok(amount) = i64::try_from(amount_msat) else {
                return Err(below);
            };
            if a.current_balance_msat < amount {
                return Err(below);
            }
            a.current_balance_msat -= amount;
            a.last_update = now();
            Ok(((), true))
        })
        .await
    }

    async fn upsert_account_payment(
        &self,
        id: AccountId,
        hash: Hash,
        full_amount_msat: u64,
        status: PaymentStatus,
        opts: UpsertOptions,
    ) -> Result<bool> {
        self.modify(id, move |_, a| {
            let rec = format!("account {id}");
            amount_i64(rec.clone(), "full_amount_msat", full_amount_msat)?;
            let existing = a.payments.get(&hash).copied();
            let known = existing.is_some();
            let amount = opts.decide(id, hash, existing, full_amount_msat)?;
            if opts.debit_account {
                let debit = amount_i64(rec.clone(), "full_amount_msat", amount)?;
                a.current_balance_msat =
                    a.current_balance_msat.checked_sub(debit).ok_or_else(|| {
                        invalid(
                            rec,
                            "current_balance_msat",
                            "the debit would overflow the balance",
                        )
                    })?;
            }
            a.payments.insert(
                hash,
                crate::PaymentEntry {
                    status,
                    full_amount_msat: amount,
                },
            );
            a.last_update = now();
            Ok((known, true))
        })
        .await
    }

    async fn delete_account_payment(&self, id: AccountId, hash: Hash) -> Result<()> {
        self.modify(id, move |_, a| {
            if a.payments.remove(&hash).is_none() {
                return Err(Error::PaymentNotAssociated { id, hash });
            }
            a.last_update = now();
            Ok(((), true))
        })
        .await
    }

    async fn list_account_payments(
        &self,
        id: AccountId,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<AccountPayment>> {
        let account = self.account(id).await?;
        Ok(account
            .payments
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(|(hash, entry)| AccountPayment { hash, entry })
            .collect())
    }

    async fn count_account_payments(&self, id: AccountId) -> Result<u64> {
        Ok(self.account(id).await?.payments.len() as u64)
    }

    async fn remove_account(&self, id: AccountId) -> Result<()> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            if this.write(|w| Ok(w.remove(0, id.0)?))?.is_none() {
                return Err(Error::NotFound { id });
            }
            this.kv.flush()?;
            Ok(())
        })
        .await
    }

    async fn last_indexes(&self) -> Result<LastIndexes> {
        let this = self.clone();
        off_executor(move || {
            let read = |key: &[u8]| -> Result<Option<u64>> {
                match this.tree.get(key)? {
                    None => Ok(None),
                    Some(v) => match decode_entry(key, &v)? {
                        Entry::LastAddIndex(i) | Entry::LastSettleIndex(i) => Ok(Some(i)),
                        Entry::Account(_) => Ok(None),
                    },
                }
            };
            match (read(LAST_ADD_INDEX_KEY)?, read(LAST_SETTLE_INDEX_KEY)?) {
                (Some(add_index), Some(settle_index)) => Ok(LastIndexes {
                    add_index,
                    settle_index,
                }),
                _ => Err(Error::NoInvoiceIndexKnown),
            }
        })
        .await
    }

    async fn store_last_indexes(&self, indexes: LastIndexes) -> Result<()> {
        let this = self.clone();
        off_executor(move || {
            amount_i64("last indexes", "add_index", indexes.add_index)?;
            amount_i64("last indexes", "settle_index", indexes.settle_index)?;
            let _guard = this.lock()?;
            let (add, settle) = (
                encode_index(indexes.add_index)?,
                encode_index(indexes.settle_index)?,
            );
            this.write(|w| {
                w.insert(0, LAST_ADD_INDEX_KEY, &add)?;
                w.insert(0, LAST_SETTLE_INDEX_KEY, &settle)?;
                Ok(())
            })?;
            this.kv.flush()?;
            Ok(())
        })
        .await
    }
}
