//! The node's side of an online migration (docs/design.md §7): stores that
//! serve every call from the key-value database while the data moves to
//! SQL in the background, record what each write touched, wait at the
//! write gate during the cutover, and run on SQL after the switch.
//!
//! Reads never wait. A write holds the gate shared for its call; the
//! cutover holds it exclusively from its last replay to the switch, so a
//! write arriving then waits and goes to SQL. A firewall transaction that
//! began on the key-value store and commits after the switch is applied to
//! SQL instead: its writes are buffered until commit on every backend.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock as StdRwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use migrator::online::OnlineState;
use migrator::replay::{Journal, Touched, TouchedEntry};
use store_accounts::{
    Account, AccountId, AccountPayment, AccountUpdate, Hash, LastIndexes, PaymentStatus,
    UpsertOptions,
};
use store_actions::{Action, ActionLocator, ActionPage, ActionQuery, ActionState, AddAction};
use store_firewall::{KvEntry, KvTx, Mode, Namespace, PrivacyPair, PrivacyTx, Scope};
use store_sessions::{NewSession, PublicKey, Session, SessionId, SessionState, SessionType};
use tokio::sync::RwLock;

/// What the routed stores share: the journal, the gate, whether writes are
/// still recorded, and which backend serves.
#[derive(Debug)]
pub(crate) struct Capture {
    pub(crate) journal: Arc<Journal>,
    pub(crate) gate: Arc<RwLock<()>>,
    recording: AtomicBool,
    /// Bumped at the switch: a transaction begun before it was on the
    /// key-value store.
    epoch: AtomicU64,
}

impl Capture {
    pub(crate) fn new() -> Arc<Capture> {
        Arc::new(Capture {
            journal: Arc::new(Journal::default()),
            gate: Arc::new(RwLock::new(())),
            recording: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
        })
    }

    fn record(&self, key: Touched) {
        if self.recording.load(Ordering::Acquire) {
            self.journal.record(key);
        }
    }

    fn recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// Stops recording (the migration switched or failed) and drops what
    /// was recorded.
    pub(crate) fn stop(&self) {
        self.recording.store(false, Ordering::Release);
        let _ = self.journal.take();
    }

    pub(crate) fn switched(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.stop();
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// The backend a store is served by, swapped at the switch.
#[derive(Debug)]
pub(crate) struct Route<T: ?Sized> {
    current: StdRwLock<Arc<T>>,
    capture: Arc<Capture>,
}

impl<T: ?Sized> Route<T> {
    pub(crate) fn new(store: Arc<T>, capture: Arc<Capture>) -> Route<T> {
        Route {
            current: StdRwLock::new(store),
            capture,
        }
    }

    fn get(&self) -> Arc<T> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set(&self, store: Arc<T>) {
        match self.current.write() {
            Ok(mut c) => *c = store,
            Err(poisoned) => *poisoned.into_inner() = store,
        }
    }
}

/// The firewall, routed.
pub(crate) type Firewall = Route<dyn store_firewall::Store>;

#[async_trait]
impl store_accounts::Store for Route<dyn store_accounts::Store> {
    async fn new_account(
        &self,
        balance_msat: u64,
        expiration: Option<DateTime<Utc>>,
        label: &str,
    ) -> store_accounts::Result<Account> {
        let _w = self.capture.gate.read().await;
        let a = self
            .get()
            .new_account(balance_msat, expiration, label)
            .await?;
        self.capture.record(Touched::Account(a.id));
        Ok(a)
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
        let _w = self.capture.gate.read().await;
        self.get().update_account(id, update).await?;
        self.capture.record(Touched::Account(id));
        Ok(())
    }

    async fn add_account_invoice(&self, id: AccountId, hash: Hash) -> store_accounts::Result<()> {
        let _w = self.capture.gate.read().await;
        self.get().add_account_invoice(id, hash).await?;
        self.capture.record(Touched::Account(id));
        Ok(())
    }

    async fn credit_account(&self, id: AccountId, amount_msat: u64) -> store_accounts::Result<()> {
        let _w = self.capture.gate.read().await;
        self.get().credit_account(id, amount_msat).await?;
        self.capture.record(Touched::Account(id));
        Ok(())
    }

    async fn debit_account(&self, id: AccountId, amount_msat: u64) -> store_accounts::Result<()> {
        let _w = self.capture.gate.read().await;
        self.get().debit_account(id, amount_msat).await?;
        self.capture.record(Touched::Account(id));
        Ok(())
    }

    async fn upsert_account_payment(
        &self,
        id: AccountId,
        hash: Hash,
        full_amount_msat: u64,
        status: PaymentStatus,
        opts: UpsertOptions,
    ) -> store_accounts::Result<bool> {
        let _w = self.capture.gate.read().await;
        let known = self
            .get()
            .upsert_account_payment(id, hash, full_amount_msat, status, opts)
            .await?;
        self.capture.record(Touched::Account(id));
        Ok(known)
    }

    async fn delete_account_payment(
        &self,
        id: AccountId,
        hash: Hash,
    ) -> store_accounts::Result<()> {
        let _w = self.capture.gate.read().await;
        self.get().delete_account_payment(id, hash).await?;
        self.capture.record(Touched::Account(id));
        Ok(())
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
        let _w = self.capture.gate.read().await;
        self.get().remove_account(id).await?;
        self.capture.record(Touched::Account(id));
        Ok(())
    }

    async fn last_indexes(&self) -> store_accounts::Result<LastIndexes> {
        self.get().last_indexes().await
    }

    async fn store_last_indexes(&self, indexes: LastIndexes) -> store_accounts::Result<()> {
        let _w = self.capture.gate.read().await;
        self.get().store_last_indexes(indexes).await?;
        self.capture.record(Touched::LastIndexes);
        Ok(())
    }
}

#[async_trait]
impl store_sessions::Store for Route<dyn store_sessions::Store> {
    async fn new_session(&self, new: NewSession) -> store_sessions::Result<Session> {
        let _w = self.capture.gate.read().await;
        let s = self.get().new_session(new).await?;
        self.capture.record(Touched::Session(s.id));
        Ok(s)
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
        let _w = self.capture.gate.read().await;
        self.get().update_remote_public_key(id, key).await?;
        self.capture.record(Touched::Session(id));
        Ok(())
    }

    async fn shift_state(&self, id: SessionId, to: SessionState) -> store_sessions::Result<()> {
        let _w = self.capture.gate.read().await;
        self.get().shift_state(id, to).await?;
        self.capture.record(Touched::Session(id));
        Ok(())
    }

    async fn delete_reserved_session(&self, id: SessionId) -> store_sessions::Result<()> {
        let _w = self.capture.gate.read().await;
        self.get().delete_reserved_session(id).await?;
        self.capture.record(Touched::Session(id));
        Ok(())
    }

    async fn delete_reserved_sessions(&self) -> store_sessions::Result<u64> {
        let _w = self.capture.gate.read().await;
        let store = self.get();
        // The ids are listed first, under the gate: a session reserved
        // meanwhile is recorded by its own `new_session`.
        let reserved = if self.capture.recording() {
            store
                .list_sessions_by_state(SessionState::Reserved)
                .await?
                .into_iter()
                .map(|s| s.id)
                .collect()
        } else {
            Vec::new()
        };
        let n = store.delete_reserved_sessions().await?;
        for id in reserved {
            self.capture.record(Touched::Session(id));
        }
        Ok(n)
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
        let _w = self.capture.gate.read().await;
        let l = self.get().add_action(request).await?;
        self.capture.record(Touched::Action(l.index()));
        Ok(l)
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
        let _w = self.capture.gate.read().await;
        self.get()
            .set_action_state(locator, state, error_reason)
            .await?;
        self.capture.record(Touched::Action(locator.index()));
        Ok(())
    }

    async fn list_actions(&self, query: &ActionQuery) -> store_actions::Result<ActionPage> {
        self.get().list_actions(query).await
    }
}

/// A buffered firewall write, kept to re-apply it on SQL when its
/// transaction began before the switch and commits after it.
#[derive(Debug, Clone)]
enum KvOp {
    Set(Scope, String, Vec<u8>),
    Del(Scope, String),
}

/// A firewall kv-store transaction begun through the routed store.
struct RoutedKvTx {
    inner: Box<dyn KvTx>,
    route: Arc<Firewall>,
    ns: Namespace,
    epoch: u64,
    ops: Vec<KvOp>,
}

#[async_trait]
impl KvTx for RoutedKvTx {
    async fn get(&mut self, scope: Scope, key: &str) -> store_firewall::Result<Option<Vec<u8>>> {
        self.inner.get(scope, key).await
    }

    async fn set(&mut self, scope: Scope, key: &str, value: &[u8]) -> store_firewall::Result<()> {
        self.inner.set(scope, key, value).await?;
        self.ops
            .push(KvOp::Set(scope, key.to_owned(), value.to_vec()));
        Ok(())
    }

    async fn del(&mut self, scope: Scope, key: &str) -> store_firewall::Result<()> {
        self.inner.del(scope, key).await?;
        self.ops.push(KvOp::Del(scope, key.to_owned()));
        Ok(())
    }

    async fn commit(self: Box<Self>) -> store_firewall::Result<()> {
        let this = *self;
        if this.ops.is_empty() {
            return this.inner.commit().await;
        }
        let capture = this.route.capture.clone();
        let _w = capture.gate.read().await;
        if capture.epoch() == this.epoch {
            this.inner.commit().await?;
            for op in &this.ops {
                let (KvOp::Set(scope, key, _) | KvOp::Del(scope, key)) = op;
                capture.record(Touched::Entry(TouchedEntry {
                    ns: this.ns.clone(),
                    scope: *scope,
                    key: key.clone(),
                }));
            }
            return Ok(());
        }
        // Begun on the key-value store, committing after the switch: the
        // writes go to SQL, which now holds what the key-value store held.
        drop(this.inner);
        let mut sql = this.route.get().begin_kv(this.ns, Mode::Update).await?;
        for op in this.ops {
            match op {
                KvOp::Set(scope, key, value) => sql.set(scope, &key, &value).await?,
                KvOp::Del(scope, key) => sql.del(scope, &key).await?,
            }
        }
        sql.commit().await
    }
}

/// A privacy-map transaction begun through the routed store.
struct RoutedPrivacyTx {
    inner: Box<dyn PrivacyTx>,
    route: Arc<Firewall>,
    group: SessionId,
    epoch: u64,
    pairs: Vec<(String, String)>,
}

#[async_trait]
impl PrivacyTx for RoutedPrivacyTx {
    async fn new_pair(&mut self, real: &str, pseudo: &str) -> store_firewall::Result<()> {
        self.inner.new_pair(real, pseudo).await?;
        self.pairs.push((real.to_owned(), pseudo.to_owned()));
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
        let this = *self;
        if this.pairs.is_empty() {
            return this.inner.commit().await;
        }
        let capture = this.route.capture.clone();
        let _w = capture.gate.read().await;
        if capture.epoch() == this.epoch {
            this.inner.commit().await?;
            capture.record(Touched::Privacy(this.group));
            return Ok(());
        }
        drop(this.inner);
        let mut sql = this
            .route
            .get()
            .begin_privacy(this.group, Mode::Update)
            .await?;
        for (real, pseudo) in &this.pairs {
            sql.new_pair(real, pseudo).await?;
        }
        sql.commit().await
    }
}

/// The routed firewall store: its transactions need the route itself.
#[derive(Debug, Clone)]
pub(crate) struct RoutedFirewall(pub(crate) Arc<Firewall>);

#[async_trait]
impl store_firewall::Store for RoutedFirewall {
    async fn begin_kv(&self, ns: Namespace, mode: Mode) -> store_firewall::Result<Box<dyn KvTx>> {
        let epoch = self.0.capture.epoch();
        let inner = self.0.get().begin_kv(ns.clone(), mode).await?;
        Ok(Box::new(RoutedKvTx {
            inner,
            route: self.0.clone(),
            ns,
            epoch,
            ops: Vec::new(),
        }))
    }

    async fn begin_privacy(
        &self,
        group: SessionId,
        mode: Mode,
    ) -> store_firewall::Result<Box<dyn PrivacyTx>> {
        let epoch = self.0.capture.epoch();
        let inner = self.0.get().begin_privacy(group, mode).await?;
        Ok(Box::new(RoutedPrivacyTx {
            inner,
            route: self.0.clone(),
            group,
            epoch,
            pairs: Vec::new(),
        }))
    }

    async fn delete_temp_kv_stores(&self) -> store_firewall::Result<()> {
        let _w = self.0.capture.gate.read().await;
        self.0.get().delete_temp_kv_stores().await?;
        self.0.capture.record(Touched::TempEntries);
        Ok(())
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
    state: tokio::sync::watch::Receiver<OnlineState>,
    capture: Arc<Capture>,
    journal: Arc<Journal>,
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    pub(crate) db: sqldb::Db,
}

impl OnlineMigration {
    pub(crate) fn new(
        state: tokio::sync::watch::Receiver<OnlineState>,
        capture: Arc<Capture>,
        task: tokio::task::JoinHandle<()>,
        db: sqldb::Db,
    ) -> OnlineMigration {
        OnlineMigration {
            state,
            journal: capture.journal.clone(),
            capture,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
            db,
        }
    }

    /// Where the migration is now.
    pub fn state(&self) -> OnlineState {
        self.state.borrow().clone()
    }

    /// True once the stores run on SQL (from the switch itself, before the
    /// state says so).
    pub fn switched(&self) -> bool {
        self.capture.epoch() > 0
    }

    /// Keys waiting to be replayed now.
    pub fn pending_keys(&self) -> usize {
        self.journal.len()
    }

    /// Waits until the migration ends (switched or failed) and returns how.
    pub async fn wait(&self) -> OnlineState {
        let mut rx = self.state.clone();
        loop {
            let s = rx.borrow_and_update().clone();
            if s.is_final() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The task is gone without a final state: it was stopped.
                return OnlineState::Failed {
                    error: "the online migration was stopped (the stores were closed)".into(),
                };
            }
        }
    }

    /// Stops a migration still running; its transaction rolls back (a copy
    /// already committed as staged stays, for the next migration to
    /// discard) and the stores stay on the key-value database.
    pub(crate) fn stop(&self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

/// The default longest pause of writers at the cutover.
pub const DEFAULT_PAUSE_BUDGET: Duration = Duration::from_secs(1);
