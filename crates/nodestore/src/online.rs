//! The node's side of an online migration (docs/design.md §7): stores that
//! serve every call from the key-value database while the data moves to
//! SQL in the background, record what each write touched, wait at the
//! write gate during the cutover, and run on SQL after the switch.
//!
//! Reads never wait. Every write goes through one path,
//! `Route::write`, which makes a write's key reach the journal whatever
//! becomes of its caller (docs/design.md §7.4): the call runs on a task of
//! its own that holds the gate shared from before the write to after its
//! key is recorded, so a caller that gives up (a dropped RPC handler, a
//! timeout) cannot leave a write applied in the key-value database and
//! unknown to the migration, and the cutover, which takes the gate
//! exclusively, never starts while a write is landing. A firewall update
//! transaction holds the gate from `begin` to its commit, so it begins and
//! commits on the same side of the switch, and takes the gate before the
//! store's own lock, as every other write does.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock as StdRwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use migrator::online::{OnlineState, Protocol};
use migrator::replay::{Touched, TouchedEntry};
use store_accounts::{
    Account, AccountId, AccountPayment, AccountUpdate, Hash, LastIndexes, PaymentStatus,
    UpsertOptions,
};
use store_actions::{Action, ActionLocator, ActionPage, ActionQuery, ActionState, AddAction};
use store_firewall::{KvEntry, KvTx, Mode, Namespace, PrivacyPair, PrivacyTx, Scope};
use store_sessions::{NewSession, PublicKey, Session, SessionId, SessionState, SessionType};
use store_support::TaskFailed;
use tokio::sync::OwnedRwLockReadGuard;

/// What a routed write touched, known once the call ended.
enum Wrote {
    /// These keys (none for a call that changed nothing).
    Keys(Vec<Touched>),
    /// A write that may have landed, with no key to replay it by.
    Unknown(String),
}

impl Wrote {
    /// Journals it (while the migration records).
    fn journal(self, protocol: &Protocol) {
        match self {
            Wrote::Keys(keys) => protocol.record(keys),
            Wrote::Unknown(what) => protocol.uncertain(what),
        }
    }

    fn key(key: Touched) -> Wrote {
        Wrote::Keys(vec![key])
    }

    /// A call that creates a record whose key only its success returns:
    /// the key when it succeeded, nothing when the store refused it, and
    /// unknown when it failed in a way that may have left it applied.
    fn created<T, E: WriteError>(
        r: &Result<T, E>,
        key: impl FnOnce(&T) -> Touched,
        what: &str,
    ) -> Wrote {
        match r {
            Ok(t) => Wrote::key(key(t)),
            Err(e) if e.changed_nothing() => Wrote::Keys(Vec::new()),
            Err(e) => Wrote::Unknown(format!("{what} ({e})")),
        }
    }
}

/// A store's error, as a routed write needs to read it.
pub(crate) trait WriteError: From<TaskFailed> + std::fmt::Display + Send + 'static {
    /// True when the call certainly changed nothing: the store refused it
    /// by its rules before writing. A backend failure may have come after
    /// the write applied (a failed flush, say), so it is not.
    fn changed_nothing(&self) -> bool;
}

/// Every store's error has the same two variants that may come after a
/// write applied: a backend failure and a retired database.
macro_rules! write_error {
    ($($store:ident),+) => {$(
        impl WriteError for $store::Error {
            fn changed_nothing(&self) -> bool {
                !matches!(self, $store::Error::Backend { .. } | $store::Error::Tombstoned(_))
            }
        }
    )+};
}

write_error!(
    store_accounts,
    store_sessions,
    store_firewall,
    store_actions
);

/// Waits for a routed write's own task: its result, or its panic carried
/// on in the caller, as if the call had run in it.
async fn joined<R, E: WriteError>(task: tokio::task::JoinHandle<Result<R, E>>) -> Result<R, E> {
    match task.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(E::from(TaskFailed::from(e))),
    }
}

/// The backend a store is served by, swapped at the switch. Clones share
/// the backend and the protocol.
#[derive(Debug)]
pub(crate) struct Route<T: ?Sized> {
    current: Arc<StdRwLock<Arc<T>>>,
    protocol: Arc<Protocol>,
}

impl<T: ?Sized> Clone for Route<T> {
    fn clone(&self) -> Self {
        Route {
            current: self.current.clone(),
            protocol: self.protocol.clone(),
        }
    }
}

/// The four stores routed as an online migration routes them
/// (docs/design.md §7.4): every call served by the backend they were built
/// over, every write through the one routed path (the gate, the journal,
/// its own task), until [`Routed::switch`] moves them all to other
/// backends, as the cutover moves them to SQL. The routing is a backend
/// like the others: each store's conformance suite runs through it, before
/// and after a switch (`tests/routed_conformance.rs`).
#[derive(Debug, Clone)]
pub struct Routed {
    protocol: Arc<Protocol>,
    accounts: Route<dyn store_accounts::Store>,
    sessions: Route<dyn store_sessions::Store>,
    firewall: Arc<Firewall>,
    actions: Route<dyn store_actions::Store>,
}

impl Routed {
    /// The stores routed over these backends, journaling every write.
    pub fn over(
        accounts: Arc<dyn store_accounts::Store>,
        sessions: Arc<dyn store_sessions::Store>,
        firewall: Arc<dyn store_firewall::Store>,
        actions: Arc<dyn store_actions::Store>,
    ) -> Routed {
        let protocol = Protocol::new();
        Routed {
            accounts: Route::new(accounts, protocol.clone()),
            sessions: Route::new(sessions, protocol.clone()),
            firewall: Arc::new(Route::new(firewall, protocol.clone())),
            actions: Route::new(actions, protocol.clone()),
            protocol,
        }
    }

    /// Moves every store to these backends at once and stops journaling,
    /// as the cutover's switch does (after which nothing is replayed).
    pub fn switch(
        &self,
        accounts: Arc<dyn store_accounts::Store>,
        sessions: Arc<dyn store_sessions::Store>,
        firewall: Arc<dyn store_firewall::Store>,
        actions: Arc<dyn store_actions::Store>,
    ) {
        self.accounts.set(accounts);
        self.sessions.set(sessions);
        self.firewall.set(firewall);
        self.actions.set(actions);
        self.protocol.switch();
    }

    /// The routed accounts store.
    pub fn accounts(&self) -> Box<dyn store_accounts::Store> {
        Box::new(self.accounts.clone())
    }

    /// The routed sessions store.
    pub fn sessions(&self) -> Box<dyn store_sessions::Store> {
        Box::new(self.sessions.clone())
    }

    /// The routed firewall store.
    pub fn firewall(&self) -> Box<dyn store_firewall::Store> {
        Box::new(RoutedFirewall(self.firewall.clone()))
    }

    /// The routed actions store.
    pub fn actions(&self) -> Box<dyn store_actions::Store> {
        Box::new(self.actions.clone())
    }

    /// The protocol the routed stores and their migration share.
    pub fn protocol(&self) -> &Arc<Protocol> {
        &self.protocol
    }
}

fn current<T: ?Sized>(slot: &StdRwLock<Arc<T>>) -> Arc<T> {
    match slot.read() {
        Ok(c) => c.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

impl<T: ?Sized + Send + Sync + 'static> Route<T> {
    pub(crate) fn new(store: Arc<T>, protocol: Arc<Protocol>) -> Route<T> {
        Route {
            current: Arc::new(StdRwLock::new(store)),
            protocol,
        }
    }

    fn get(&self) -> Arc<T> {
        current(&self.current)
    }

    pub(crate) fn set(&self, store: Arc<T>) {
        match self.current.write() {
            Ok(mut c) => *c = store,
            Err(poisoned) => *poisoned.into_inner() = store,
        }
    }

    /// The one path of every routed write (docs/design.md §7.4): on a task
    /// of its own, takes the gate shared, runs `op` on the store serving
    /// then, journals what `touched` says the call touched, and only then
    /// lets the gate go. The caller waits for the task; a caller dropped
    /// meanwhile leaves the task to finish, so the write and its key stay
    /// together whatever becomes of the caller.
    async fn write<R, E, Fut>(
        &self,
        op: impl FnOnce(Arc<T>) -> Fut + Send + 'static,
        touched: impl FnOnce(&Result<R, E>) -> Wrote + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: WriteError,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let (slot, protocol) = (self.current.clone(), self.protocol.clone());
        joined(tokio::spawn(async move {
            let _gate = protocol.enter().await;
            let result = op(current(&slot)).await;
            touched(&result).journal(&protocol);
            result
        }))
        .await
    }

    /// Takes the gate shared for a transaction that writes: held until it
    /// commits or is dropped.
    async fn hold_gate(&self) -> OwnedRwLockReadGuard<()> {
        self.protocol.enter().await
    }
}

#[async_trait]
impl store_accounts::Store for Route<dyn store_accounts::Store> {
    async fn new_account(
        &self,
        balance_msat: u64,
        expiration: Option<DateTime<Utc>>,
        label: &str,
    ) -> store_accounts::Result<Account> {
        let label = label.to_owned();
        self.write(
            move |s| async move { s.new_account(balance_msat, expiration, &label).await },
            |r| Wrote::created(r, |a| Touched::Account(a.id), "a new account"),
        )
        .await
    }

    async fn account(&self, id: AccountId) -> store_accounts::Result<Account> {
        self.get().account(id).await
    }

    async fn accounts(&self) -> store_accounts::Result<Vec<Account>> {
        self.get().accounts().await
    }

    async fn update_account(
        &self,
        id: AccountId,
        update: AccountUpdate,
    ) -> store_accounts::Result<()> {
        self.write(
            move |s| async move { s.update_account(id, update).await },
            move |_| Wrote::key(Touched::Account(id)),
        )
        .await
    }

    async fn add_account_invoice(&self, id: AccountId, hash: Hash) -> store_accounts::Result<()> {
        self.write(
            move |s| async move { s.add_account_invoice(id, hash).await },
            move |_| Wrote::key(Touched::Account(id)),
        )
        .await
    }

    async fn credit_account(&self, id: AccountId, amount_msat: u64) -> store_accounts::Result<()> {
        self.write(
            move |s| async move { s.credit_account(id, amount_msat).await },
            move |_| Wrote::key(Touched::Account(id)),
        )
        .await
    }

    async fn debit_account(&self, id: AccountId, amount_msat: u64) -> store_accounts::Result<()> {
        self.write(
            move |s| async move { s.debit_account(id, amount_msat).await },
            move |_| Wrote::key(Touched::Account(id)),
        )
        .await
    }

    async fn upsert_account_payment(
        &self,
        id: AccountId,
        hash: Hash,
        full_amount_msat: u64,
        status: PaymentStatus,
        opts: UpsertOptions,
    ) -> store_accounts::Result<bool> {
        self.write(
            move |s| async move {
                s.upsert_account_payment(id, hash, full_amount_msat, status, opts)
                    .await
            },
            move |_| Wrote::key(Touched::Account(id)),
        )
        .await
    }

    async fn delete_account_payment(
        &self,
        id: AccountId,
        hash: Hash,
    ) -> store_accounts::Result<()> {
        self.write(
            move |s| async move { s.delete_account_payment(id, hash).await },
            move |_| Wrote::key(Touched::Account(id)),
        )
        .await
    }

    async fn list_account_payments(
        &self,
        id: AccountId,
        offset: u32,
        limit: u32,
    ) -> store_accounts::Result<Vec<AccountPayment>> {
        self.get().list_account_payments(id, offset, limit).await
    }

    async fn count_account_payments(&self, id: AccountId) -> store_accounts::Result<u64> {
        self.get().count_account_payments(id).await
    }

    async fn remove_account(&self, id: AccountId) -> store_accounts::Result<()> {
        self.write(
            move |s| async move { s.remove_account(id).await },
            move |_| Wrote::key(Touched::Account(id)),
        )
        .await
    }

    async fn last_indexes(&self) -> store_accounts::Result<LastIndexes> {
        self.get().last_indexes().await
    }

    async fn store_last_indexes(&self, indexes: LastIndexes) -> store_accounts::Result<()> {
        self.write(
            move |s| async move { s.store_last_indexes(indexes).await },
            |_| Wrote::key(Touched::LastIndexes),
        )
        .await
    }
}

#[async_trait]
impl store_sessions::Store for Route<dyn store_sessions::Store> {
    async fn new_session(&self, new: NewSession) -> store_sessions::Result<Session> {
        self.write(
            move |s| async move { s.new_session(new).await },
            |r| Wrote::created(r, |s| Touched::Session(s.id), "a new session"),
        )
        .await
    }

    async fn session(&self, id: SessionId) -> store_sessions::Result<Session> {
        self.get().session(id).await
    }

    async fn session_by_local_key(&self, key: &PublicKey) -> store_sessions::Result<Session> {
        self.get().session_by_local_key(key).await
    }

    async fn list_sessions(&self) -> store_sessions::Result<Vec<Session>> {
        self.get().list_sessions().await
    }

    async fn list_sessions_by_type(
        &self,
        session_type: SessionType,
    ) -> store_sessions::Result<Vec<Session>> {
        self.get().list_sessions_by_type(session_type).await
    }

    async fn list_sessions_by_state(
        &self,
        state: SessionState,
    ) -> store_sessions::Result<Vec<Session>> {
        self.get().list_sessions_by_state(state).await
    }

    async fn update_remote_public_key(
        &self,
        id: SessionId,
        key: PublicKey,
    ) -> store_sessions::Result<()> {
        self.write(
            move |s| async move { s.update_remote_public_key(id, key).await },
            move |_| Wrote::key(Touched::Session(id)),
        )
        .await
    }

    async fn shift_state(&self, id: SessionId, to: SessionState) -> store_sessions::Result<()> {
        self.write(
            move |s| async move { s.shift_state(id, to).await },
            move |_| Wrote::key(Touched::Session(id)),
        )
        .await
    }

    async fn delete_reserved_session(&self, id: SessionId) -> store_sessions::Result<()> {
        self.write(
            move |s| async move { s.delete_reserved_session(id).await },
            move |_| Wrote::key(Touched::Session(id)),
        )
        .await
    }

    async fn delete_reserved_sessions(&self) -> store_sessions::Result<u64> {
        // Which sessions went is the store's to know: the replay deletes
        // from SQL every reserved session the key-value store no longer
        // holds, including one reserved a moment before the delete.
        self.write(
            move |s| async move { s.delete_reserved_sessions().await },
            |_| Wrote::key(Touched::ReservedSessions),
        )
        .await
    }

    async fn group_id(&self, id: SessionId) -> store_sessions::Result<SessionId> {
        self.get().group_id(id).await
    }

    async fn session_ids_in_group(
        &self,
        group: SessionId,
    ) -> store_sessions::Result<Vec<SessionId>> {
        self.get().session_ids_in_group(group).await
    }
}

#[async_trait]
impl store_actions::Store for Route<dyn store_actions::Store> {
    async fn add_action(&self, request: AddAction) -> store_actions::Result<ActionLocator> {
        self.write(
            move |s| async move { s.add_action(request).await },
            |r| Wrote::created(r, |l| Touched::Action(l.index()), "a new action"),
        )
        .await
    }

    async fn action(&self, locator: ActionLocator) -> store_actions::Result<Action> {
        self.get().action(locator).await
    }

    async fn set_action_state(
        &self,
        locator: ActionLocator,
        state: ActionState,
        error_reason: &str,
    ) -> store_actions::Result<()> {
        let reason = error_reason.to_owned();
        self.write(
            move |s| async move { s.set_action_state(locator, state, &reason).await },
            move |_| Wrote::key(Touched::Action(locator.index())),
        )
        .await
    }

    async fn list_actions(&self, query: &ActionQuery) -> store_actions::Result<ActionPage> {
        self.get().list_actions(query).await
    }
}

/// A firewall kv-store transaction that writes, begun through the routed
/// store: it holds the gate from `begin` (so it begins and commits on the
/// same backend), and its commit runs, and journals the keys it wrote, on a
/// task of its own.
struct RoutedKvTx {
    inner: Box<dyn KvTx>,
    protocol: Arc<Protocol>,
    gate: OwnedRwLockReadGuard<()>,
    ns: Namespace,
    keys: Vec<(Scope, String)>,
}

#[async_trait]
impl KvTx for RoutedKvTx {
    async fn get(&mut self, scope: Scope, key: &str) -> store_firewall::Result<Option<Vec<u8>>> {
        self.inner.get(scope, key).await
    }

    async fn set(&mut self, scope: Scope, key: &str, value: &[u8]) -> store_firewall::Result<()> {
        self.inner.set(scope, key, value).await?;
        self.keys.push((scope, key.to_owned()));
        Ok(())
    }

    async fn del(&mut self, scope: Scope, key: &str) -> store_firewall::Result<()> {
        self.inner.del(scope, key).await?;
        self.keys.push((scope, key.to_owned()));
        Ok(())
    }

    async fn commit(self: Box<Self>) -> store_firewall::Result<()> {
        let RoutedKvTx {
            inner,
            protocol,
            gate,
            ns,
            keys,
        } = *self;
        joined(tokio::spawn(async move {
            let result = inner.commit().await;
            // Every key, even when the commit failed: replaying a key
            // reads what the store holds, so a key too many costs time only.
            protocol.record(
                keys.into_iter()
                    .map(|(scope, key)| {
                        Touched::Entry(TouchedEntry {
                            ns: ns.clone(),
                            scope,
                            key,
                        })
                    })
                    .collect::<Vec<_>>(),
            );
            drop(gate);
            result
        }))
        .await
    }
}

/// A privacy-map transaction that writes, begun through the routed store;
/// as [`RoutedKvTx`].
struct RoutedPrivacyTx {
    inner: Box<dyn PrivacyTx>,
    protocol: Arc<Protocol>,
    gate: OwnedRwLockReadGuard<()>,
    group: SessionId,
    /// The real values of the pairs written.
    reals: Vec<String>,
}

#[async_trait]
impl PrivacyTx for RoutedPrivacyTx {
    async fn new_pair(&mut self, real: &str, pseudo: &str) -> store_firewall::Result<()> {
        self.inner.new_pair(real, pseudo).await?;
        self.reals.push(real.to_owned());
        Ok(())
    }

    async fn pseudo_to_real(&mut self, pseudo: &str) -> store_firewall::Result<String> {
        self.inner.pseudo_to_real(pseudo).await
    }

    async fn real_to_pseudo(&mut self, real: &str) -> store_firewall::Result<String> {
        self.inner.real_to_pseudo(real).await
    }

    async fn fetch_all_pairs(&mut self) -> store_firewall::Result<BTreeMap<String, String>> {
        self.inner.fetch_all_pairs().await
    }

    async fn commit(self: Box<Self>) -> store_firewall::Result<()> {
        let RoutedPrivacyTx {
            inner,
            protocol,
            gate,
            group,
            reals,
        } = *self;
        joined(tokio::spawn(async move {
            let result = inner.commit().await;
            protocol.record(reals.into_iter().map(|real| Touched::Pair(group, real)));
            drop(gate);
            result
        }))
        .await
    }
}

/// The firewall, routed.
pub(crate) type Firewall = Route<dyn store_firewall::Store>;

/// The routed firewall store.
#[derive(Debug, Clone)]
pub(crate) struct RoutedFirewall(pub(crate) Arc<Firewall>);

#[async_trait]
impl store_firewall::Store for RoutedFirewall {
    async fn begin_kv(&self, ns: Namespace, mode: Mode) -> store_firewall::Result<Box<dyn KvTx>> {
        if mode == Mode::View {
            return self.0.get().begin_kv(ns, mode).await;
        }
        // The gate first, then the store's own lock inside `begin_kv`: the
        // order of every routed write.
        let gate = self.0.hold_gate().await;
        let inner = self.0.get().begin_kv(ns.clone(), mode).await?;
        Ok(Box::new(RoutedKvTx {
            inner,
            protocol: self.0.protocol.clone(),
            gate,
            ns,
            keys: Vec::new(),
        }))
    }

    async fn begin_privacy(
        &self,
        group: SessionId,
        mode: Mode,
    ) -> store_firewall::Result<Box<dyn PrivacyTx>> {
        if mode == Mode::View {
            return self.0.get().begin_privacy(group, mode).await;
        }
        let gate = self.0.hold_gate().await;
        let inner = self.0.get().begin_privacy(group, mode).await?;
        Ok(Box::new(RoutedPrivacyTx {
            inner,
            protocol: self.0.protocol.clone(),
            gate,
            group,
            reals: Vec::new(),
        }))
    }

    async fn delete_temp_kv_stores(&self) -> store_firewall::Result<()> {
        self.0
            .write(
                move |s| async move { s.delete_temp_kv_stores().await },
                |_| Wrote::key(Touched::TempEntries),
            )
            .await
    }

    async fn kv_entries(&self) -> store_firewall::Result<Vec<KvEntry>> {
        self.0.get().kv_entries().await
    }

    async fn privacy_pairs(&self) -> store_firewall::Result<Vec<PrivacyPair>> {
        self.0.get().privacy_pairs().await
    }
}

/// The node's view of an online migration: its state, and its end.
#[derive(Debug, Clone)]
pub struct OnlineMigration {
    protocol: Arc<Protocol>,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    pub(crate) db: sqldb::Db,
}

impl OnlineMigration {
    pub(crate) fn new(
        protocol: Arc<Protocol>,
        task: tokio::task::JoinHandle<()>,
        db: sqldb::Db,
    ) -> OnlineMigration {
        OnlineMigration {
            protocol,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
            db,
        }
    }

    /// Where the migration is now.
    pub fn state(&self) -> OnlineState {
        self.protocol.state()
    }

    /// True once the stores run on SQL (from the switch itself, before the
    /// state says so).
    pub fn switched(&self) -> bool {
        self.protocol.switched()
    }

    /// Keys waiting to be replayed now.
    pub fn pending_keys(&self) -> usize {
        self.protocol.pending()
    }

    /// Waits until the migration ends (switched or failed) and returns how.
    pub async fn wait(&self) -> OnlineState {
        let mut rx = self.protocol.subscribe();
        loop {
            let s = rx.borrow_and_update().clone();
            if s.is_final() {
                return s;
            }
            if rx.changed().await.is_err() {
                return self.state();
            }
        }
    }

    /// The stores are closing. A migration whose last commit was not sent
    /// is dropped where it is: its transaction rolls back (a copy already
    /// committed as staged stays, for the next migration to discard) and
    /// the stores stay on the key-value database. One whose last commit
    /// was sent runs to its end (proof, tombstone, switch) first, so no
    /// writer is released onto a database whose data SQL already holds
    /// (docs/design.md §7.4). Returns when the migration's task is gone.
    pub(crate) async fn stop(&self) {
        let Some(task) = self.task.lock().await.take() else {
            return;
        };
        if self.protocol.request_stop() {
            task.abort();
        }
        if let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!(
                "the online migration's task panicked; the stores stay on the key-value database"
            );
        }
        if !self.state().is_final() {
            self.protocol.stopped();
        }
    }
}

/// The default longest pause of writers at the cutover.
pub const DEFAULT_PAUSE_BUDGET: Duration = Duration::from_secs(1);
