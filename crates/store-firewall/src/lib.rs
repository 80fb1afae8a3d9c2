//! nodestore's firewall store: the rule kv-stores rules keep their state in,
//! and the privacy mapper that swaps real values for pseudo ones per session
//! group.
//!
//! # What it is
//! One async [`Store`] trait and three interchangeable backends:
//! - [`KvStore`] on sled, with LiT's bucket layout (see [`kv`]).
//! - [`SqlStore`] on SQLite or PostgreSQL: `rules`, `features`, `kvstores`
//!   and `privacy_pairs`, one implementation of the logic for both.
//!
//! # Transactions
//! Both features are used through transactions. A rule opens one with
//! [`update_kv`] (read-write) or [`view_kv`] (read-only) and writes its
//! closure once, against `&mut dyn KvTx`; it works the same on every
//! backend. `update_*` commits exactly when the closure returns `Ok`, and
//! rolls every write back otherwise; when PostgreSQL ends it for its
//! timing (a deadlock), it runs the whole transaction again, closure
//! included, so the closure may run more than once (docs/design.md §4.5).
//! In a view, writes fail with [`Error::ReadOnly`].
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
//!
//! # Features
//! `kv` (`KvStore`), `sqlite` and `postgres` (`SqlStore` on each), all on by
//! default; a build with only the backends it uses compiles only their
//! drivers (docs/design.md §4.4).

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::future::BoxFuture;
use store_sessions::SessionId;

#[cfg(feature = "testing")]
pub mod conformance;
mod error;
#[cfg(feature = "kv")]
pub mod kv;
pub mod path;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
mod types;

pub use error::{Error, Result};
#[cfg(feature = "kv")]
pub use kv::KvStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::SqlStore;
pub use types::{KvEntry, Mode, Namespace, PrivacyPair, Scope};
pub(crate) use types::{
    check_key, check_namespace, check_pair, check_privacy_value, check_value, invalid,
};

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

/// Runs `f` in a read-write kv-store transaction; commits iff it returns
/// `Ok`.
///
/// When PostgreSQL ends the transaction for its timing (a deadlock, a
/// serialization failure: `f` or the commit returns an error whose
/// `is_retryable` holds), the whole transaction is run again, `f`
/// included, as every other store call is (`sqldb::Db::write`,
/// docs/design.md §4.5). So `f` may run more than once and must change
/// nothing outside the transaction; it should pass a store error on as it
/// is, or the failure cannot be told from a refusal.
pub async fn update_kv<T, F>(store: &dyn Store, ns: Namespace, f: F) -> Result<T>
where
    F: for<'t> Fn(&'t mut dyn KvTx) -> BoxFuture<'t, Result<T>> + Send + Sync,
    T: Send,
{
    run_again_on_conflict(|| async {
        let mut tx = store.begin_kv(ns.clone(), Mode::Update).await?;
        let value = f(&mut *tx).await?;
        tx.commit().await?;
        Ok(value)
    })
    .await
}

/// Runs `f` in a read-only kv-store transaction. Run once: a read takes no
/// row locks, so the database never ends it for its timing.
pub async fn view_kv<T, F>(store: &dyn Store, ns: Namespace, f: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t mut dyn KvTx) -> BoxFuture<'t, Result<T>> + Send,
    T: Send,
{
    let mut tx = store.begin_kv(ns, Mode::View).await?;
    f(&mut *tx).await
}

/// Runs `f` in a read-write privacy-map transaction; commits iff it returns
/// `Ok`; run again as [`update_kv`] says.
pub async fn update_privacy<T, F>(store: &dyn Store, group: SessionId, f: F) -> Result<T>
where
    F: for<'t> Fn(&'t mut dyn PrivacyTx) -> BoxFuture<'t, Result<T>> + Send + Sync,
    T: Send,
{
    run_again_on_conflict(|| async {
        let mut tx = store.begin_privacy(group, Mode::Update).await?;
        let value = f(&mut *tx).await?;
        tx.commit().await?;
        Ok(value)
    })
    .await
}

/// Runs `f` in a read-only privacy-map transaction, once (as [`view_kv`]).
pub async fn view_privacy<T, F>(store: &dyn Store, group: SessionId, f: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t mut dyn PrivacyTx) -> BoxFuture<'t, Result<T>> + Send,
    T: Send,
{
    let mut tx = store.begin_privacy(group, Mode::View).await?;
    f(&mut *tx).await
}

/// Runs `attempt` until it succeeds, fails for another reason than its
/// timing (`sqldb::run_again`), or has run `sqldb::TX_ATTEMPTS` times.
async fn run_again_on_conflict<T, Fut>(mut attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    {
        let mut n = 1;
        loop {
            match attempt().await {
                Err(e)
                    if n < sqldb::TX_ATTEMPTS
                        && e.backend_error().is_some_and(sqldb::run_again) =>
                {
                    tokio::time::sleep(sqldb::retry_pause(n)).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }
    #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
    {
        attempt().await
    }
}

#[cfg(test)]
testkit::suite_lists_every_function!(include_str!("conformance.rs"));
