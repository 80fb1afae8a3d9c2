//! nodestore's firewall store: the rule kv-stores rules keep their state in,
//! and the privacy mapper that swaps real values for pseudo ones per session
//! group.
//!
//! # What it is
//! One async [`Store`] trait and three interchangeable backends:
//! - [`KvStore`] on sled, with the reference's bucket layout (see [`kv`]).
//! - [`SqlStore`] on SQLite or PostgreSQL: `rules`, `features`, `kvstores`
//!   and `privacy_pairs`, one implementation of the logic for both.
//!
//! # Transactions
//! Both features are used through transactions. A rule opens one with
//! [`update_kv`] (read-write) or [`view_kv`] (read-only) and writes its
//! closure once, against `&mut dyn KvTx`; it works the same on every
//! backend. `update_*` commits exactly when the closure returns `Ok`, and
//! rolls every write back otherwise. In a view, writes fail with
//! [`Error::ReadOnly`].
//!
//! # Rule kv-stores
//! For a (rule, group, feature) [`Namespace`] a transaction offers four
//! [`Scope`]s: `Global` and `GlobalTemp` (shared by every group and feature
//! of the rule), `Local` and `LocalTemp` (the group's own store when the
//! feature is empty, the group-and-feature store otherwise). Temporary
//! stores are wiped by [`Store::delete_temp_kv_stores`], which the daemon
//! calls at start-up. `get` of a missing key is `Ok(None)`; `set` inserts or
//! overwrites; `del` of a missing key succeeds. For a group that does not
//! exist, `Global` scopes work, `Local` `get` and `del` find nothing, and
//! `Local` `set` fails with [`Error::UnknownGroup`].
//!
//! # Privacy mapper
//! Per session group, a bijection between real and pseudo values: each real
//! and each pseudo value appears at most once in a group; the same real
//! value may appear in different groups. Every call fails with
//! [`Error::UnknownGroup`] for a group that does not exist.
#![warn(
    clippy::unwrap_used,
    reason = "a panic in a storage library is a bug; errors are values"
)]

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::future::BoxFuture;
use store_sessions::SessionId;

#[cfg(feature = "testing")]
pub mod conformance;
pub mod kv;
pub mod path;
pub mod sql;

pub use kv::KvStore;
pub use sql::SqlStore;

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

tombstone::store_error_conversions!(Error);

/// Which of the four stores of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The rule's permanent store, shared by all groups and features.
    Global,
    /// The rule's temporary store, shared by all groups and features.
    GlobalTemp,
    /// The group's (or group-and-feature's) permanent store.
    Local,
    /// The group's (or group-and-feature's) temporary store.
    LocalTemp,
}

impl Scope {
    /// True for the permanent scopes.
    pub fn is_perm(self) -> bool {
        matches!(self, Scope::Global | Scope::Local)
    }

    /// True for the group scopes.
    pub fn is_local(self) -> bool {
        matches!(self, Scope::Local | Scope::LocalTemp)
    }
}

/// Whose kv-stores a transaction opens: a rule, a session group and a
/// feature (empty for the group-level store).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace {
    /// The rule's name.
    pub rule: String,
    /// The session group.
    pub group: SessionId,
    /// The feature's name; empty for the group-level store.
    pub feature: String,
}

impl Namespace {
    /// The namespace of `rule` for `group` and `feature`.
    pub fn new(rule: impl Into<String>, group: SessionId, feature: impl Into<String>) -> Namespace {
        Namespace {
            rule: rule.into(),
            group,
            feature: feature.into(),
        }
    }
}

/// One kv-store entry with its whole namespace, as listings, dumps and the
/// migration see it. Ordered by permanence, rule, group, feature, key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KvEntry {
    /// False for a temporary store.
    pub perm: bool,
    /// The rule.
    pub rule: String,
    /// The group; `None` for the rule's global store.
    pub group: Option<SessionId>,
    /// The feature; `None` for a group-level or global store.
    pub feature: Option<String>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
}

/// One privacy pair with its group. Ordered by group, then real value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrivacyPair {
    /// The session group.
    pub group: SessionId,
    /// The real value.
    pub real: String,
    /// The pseudo value.
    pub pseudo: String,
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read-only.
    View,
    /// Read-write.
    Update,
}

/// An open kv-store transaction over one [`Namespace`].
///
/// Dropping it without [`KvTx::commit`] discards its writes.
#[async_trait]
pub trait KvTx: Send {
    /// The value of `key` in `scope`, or `None`.
    async fn get(&mut self, scope: Scope, key: &str) -> Result<Option<Vec<u8>>>;
    /// Inserts or overwrites `key` in `scope`.
    ///
    /// Errors: [`Error::UnknownGroup`] in a local scope of an unknown group;
    /// [`Error::ReadOnly`] in a view.
    async fn set(&mut self, scope: Scope, key: &str, value: &[u8]) -> Result<()>;
    /// Removes `key` from `scope`; succeeds when it is absent.
    ///
    /// Errors: [`Error::ReadOnly`] in a view.
    async fn del(&mut self, scope: Scope, key: &str) -> Result<()>;
    /// Makes every write visible.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// An open privacy-map transaction over one session group.
///
/// Dropping it without [`PrivacyTx::commit`] discards its writes.
#[async_trait]
pub trait PrivacyTx: Send {
    /// Adds the pair `real` ↔ `pseudo`.
    ///
    /// Errors: [`Error::UnknownGroup`], [`Error::DuplicateRealValue`],
    /// [`Error::DuplicatePseudoValue`], [`Error::ReadOnly`], and
    /// [`Error::InvalidInput`] for an empty value.
    async fn new_pair(&mut self, real: &str, pseudo: &str) -> Result<()>;
    /// The real value of `pseudo`.
    ///
    /// Errors: [`Error::UnknownGroup`], [`Error::NoSuchKey`].
    async fn pseudo_to_real(&mut self, pseudo: &str) -> Result<String>;
    /// The pseudo value of `real`.
    ///
    /// Errors: [`Error::UnknownGroup`], [`Error::NoSuchKey`].
    async fn real_to_pseudo(&mut self, real: &str) -> Result<String>;
    /// Every pair of the group, real → pseudo; empty when there are none.
    ///
    /// Errors: [`Error::UnknownGroup`].
    async fn fetch_all_pairs(&mut self) -> Result<BTreeMap<String, String>>;
    /// Makes every write visible.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// The firewall store. See the crate docs for the contract.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync {
    /// Opens a kv-store transaction. Prefer [`update_kv`] and [`view_kv`].
    async fn begin_kv(&self, ns: Namespace, mode: Mode) -> Result<Box<dyn KvTx>>;

    /// Opens a privacy-map transaction for `group`. Prefer
    /// [`update_privacy`] and [`view_privacy`].
    async fn begin_privacy(&self, group: SessionId, mode: Mode) -> Result<Box<dyn PrivacyTx>>;

    /// Wipes every temporary kv-store (`GlobalTemp` and `LocalTemp` of every
    /// rule, group and feature). Idempotent.
    async fn delete_temp_kv_stores(&self) -> Result<()>;

    /// Every kv-store entry of every namespace, in [`KvEntry`] order.
    async fn kv_entries(&self) -> Result<Vec<KvEntry>>;

    /// Every privacy pair of every group, in [`PrivacyPair`] order.
    async fn privacy_pairs(&self) -> Result<Vec<PrivacyPair>>;
}

/// Runs `f` in a read-write kv-store transaction; commits iff it returns `Ok`.
pub async fn update_kv<T, F>(store: &dyn Store, ns: Namespace, f: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t mut dyn KvTx) -> BoxFuture<'t, Result<T>> + Send,
    T: Send,
{
    let mut tx = store.begin_kv(ns, Mode::Update).await?;
    let value = f(&mut *tx).await?;
    tx.commit().await?;
    Ok(value)
}

/// Runs `f` in a read-only kv-store transaction.
pub async fn view_kv<T, F>(store: &dyn Store, ns: Namespace, f: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t mut dyn KvTx) -> BoxFuture<'t, Result<T>> + Send,
    T: Send,
{
    let mut tx = store.begin_kv(ns, Mode::View).await?;
    f(&mut *tx).await
}

/// Runs `f` in a read-write privacy-map transaction; commits iff it returns `Ok`.
pub async fn update_privacy<T, F>(store: &dyn Store, group: SessionId, f: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t mut dyn PrivacyTx) -> BoxFuture<'t, Result<T>> + Send,
    T: Send,
{
    let mut tx = store.begin_privacy(group, Mode::Update).await?;
    let value = f(&mut *tx).await?;
    tx.commit().await?;
    Ok(value)
}

/// Runs `f` in a read-only privacy-map transaction.
pub async fn view_privacy<T, F>(store: &dyn Store, group: SessionId, f: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t mut dyn PrivacyTx) -> BoxFuture<'t, Result<T>> + Send,
    T: Send,
{
    let mut tx = store.begin_privacy(group, Mode::View).await?;
    f(&mut *tx).await
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

/// A value of `record`'s `field` checked against the data contract
/// (`store_contract`), refused as [`Error::InvalidInput`] naming the field.
fn contract<T>(
    record: impl Into<String>,
    field: &'static str,
    checked: std::result::Result<T, store_contract::Violation>,
) -> Result<T> {
    checked.map_err(|v| invalid(record, field, v.to_string()))
}

/// A namespace against the contract: the rule names something; the feature
/// is a key (empty means the group's own store).
pub(crate) fn check_namespace(ns: &Namespace) -> Result<()> {
    let rec = || {
        format!(
            "kv-store namespace of rule {}",
            store_contract::shown(&ns.rule)
        )
    };
    contract(rec(), "rule", store_contract::name(&ns.rule))?;
    contract(rec(), "feature", store_contract::key(&ns.feature))
}

/// A kv-store key against the contract.
pub(crate) fn check_key(key: &str) -> Result<()> {
    contract("a kv-store entry", "key", store_contract::key(key))
}

/// A kv-store value against the contract.
pub(crate) fn check_value(key: &str, value: &[u8]) -> Result<()> {
    contract(
        format!("kv-store entry {}", store_contract::shown(key)),
        "value",
        store_contract::bytes(value),
    )
}

/// A privacy value being looked up.
pub(crate) fn check_privacy_value(field: &'static str, value: &str) -> Result<()> {
    contract("a privacy pair", field, store_contract::key(value))
}

/// A new privacy pair: both values name something.
pub(crate) fn check_pair(real: &str, pseudo: &str) -> Result<()> {
    let rec = || {
        format!(
            "privacy pair {} -> {}",
            store_contract::shown(real),
            store_contract::shown(pseudo)
        )
    };
    contract(rec(), "real", store_contract::name(real))?;
    contract(rec(), "pseudo", store_contract::name(pseudo))
}

impl KvEntry {
    /// The entry against the contract, as a whole: a feature store is a
    /// group's, and a feature, when present, is not empty (an empty one
    /// would silently be the group's own store).
    pub fn check(&self) -> Result<()> {
        let rec = || {
            format!(
                "kv-store entry {} of rule {}",
                store_contract::shown(&self.key),
                store_contract::shown(&self.rule)
            )
        };
        contract(rec(), "rule", store_contract::name(&self.rule))?;
        if let Some(f) = &self.feature {
            contract(rec(), "feature", store_contract::name(f))?;
            if self.group.is_none() {
                return Err(invalid(rec(), "feature", "a feature store needs a group"));
            }
        }
        check_key(&self.key)?;
        check_value(&self.key, &self.value)
    }
}

impl PrivacyPair {
    /// The pair against the contract.
    pub fn check(&self) -> Result<()> {
        check_pair(&self.real, &self.pseudo)
    }
}
