//! The sled backend and its on-disk records.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `actions` | session id (zeros for none) ‖ sequence, big-endian | [`record::ActionRecordV1`] |
//! | `actions-index` | sequence | [`record::LocatorRecordV1`] (the global index) |
//! | `actions-by-time` | attempted time ‖ sequence | [`record::LocatorRecordV1`] |
//!
//! The sequence is the action's [`ActionLocator`]. LiT keeps the
//! actions of each session under that session's bucket plus the global
//! index; the time index is nodestore's addition, so this backend lists in
//! the same (time, locator) order as SQL whatever order the times were
//! written in. Session and account links are kept explicitly in the record.
//! Writes are serialised by one mutex and applied to the three trees in one
//! transaction. sled calls run on tokio's blocking pool.

use std::sync::{Arc, Mutex};
use store_support::off_executor;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use sled::transaction::ConflictableTransactionError;
use store_accounts::AccountId;
use store_sessions::SessionId;
use tombstone::KvDb;

use crate::{
    Action, ActionFilter, ActionLocator, ActionPage, ActionQuery, ActionState, AddAction, Clock,
    Error, Result, Store, SystemClock, check_state,
};

/// The actions tree.
pub const ACTIONS_TREE: &str = "actions";
/// The global index tree.
pub const INDEX_TREE: &str = "actions-index";
/// The time index tree.
pub const TIME_TREE: &str = "actions-by-time";

const BACKEND: &str = "kv";

/// The records stored in the trees. Released versions are never edited.
pub mod record {
    use kvcodec::TimeV1;
    use serde::{Deserialize, Serialize};

    /// Version of [`ActionRecordV1`].
    pub const ACTION_V1: u8 = 1;
    /// Version of [`LocatorRecordV1`].
    pub const LOCATOR_V1: u8 = 1;

    /// One action.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ActionRecordV1 {
        /// Its sequence (the locator).
        pub seq: u64,
        /// Full macaroon root key id.
        pub macaroon_root_key_id: Option<u64>,
        /// Linked session.
        pub session_id: Option<[u8; 4]>,
        /// Linked account.
        pub account_id: Option<[u8; 8]>,
        /// Actor.
        pub actor_name: String,
        /// Feature.
        pub feature_name: String,
        /// Trigger.
        pub trigger: String,
        /// Intent.
        pub intent: String,
        /// Structured JSON.
        pub structured_json_data: String,
        /// RPC method.
        pub rpc_method: String,
        /// RPC params JSON.
        #[serde(with = "serde_bytes")]
        pub rpc_params_json: Vec<u8>,
        /// Attempted time.
        pub attempted_at: TimeV1,
        /// State number.
        pub state: u8,
        /// Error reason.
        pub error_reason: String,
    }

    /// Where an action is stored: its session bucket.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct LocatorRecordV1 {
        /// The session bucket (zeros for none).
        pub session: [u8; 4],
    }
}

fn rec_key(locator: ActionLocator) -> String {
    format!("action {locator}")
}

fn invalid(record: String, field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        record,
        field,
        reason: reason.into(),
    }
}

impl record::ActionRecordV1 {
    /// The record of an action.
    pub fn from_action(a: &Action) -> record::ActionRecordV1 {
        let r = &a.request;
        record::ActionRecordV1 {
            seq: a.locator.index(),
            macaroon_root_key_id: r.macaroon_root_key_id,
            session_id: r.session_id.map(|s| s.0),
            account_id: r.account_id.map(|a| a.0),
            actor_name: r.actor_name.clone(),
            feature_name: r.feature_name.clone(),
            trigger: r.trigger.clone(),
            intent: r.intent.clone(),
            structured_json_data: r.structured_json_data.clone(),
            rpc_method: r.rpc_method.clone(),
            rpc_params_json: r.rpc_params_json.clone(),
            attempted_at: kvcodec::TimeV1::from_time(a.attempted_at),
            state: a.state.code(),
            error_reason: a.error_reason.clone(),
        }
    }

    /// The action of a record, checking every field. Takes the record, so
    /// its text moves into the action uncopied (every action of a
    /// database is decoded by the migration, twice).
    pub fn into_action(self) -> Result<Action> {
        let locator = ActionLocator::from_index(self.seq);
        Ok(Action {
            locator,
            request: AddAction {
                macaroon_root_key_id: self.macaroon_root_key_id,
                session_id: self.session_id.map(SessionId),
                account_id: self.account_id.map(AccountId),
                actor_name: self.actor_name,
                feature_name: self.feature_name,
                trigger: self.trigger,
                intent: self.intent,
                structured_json_data: self.structured_json_data,
                rpc_method: self.rpc_method,
                rpc_params_json: self.rpc_params_json,
            },
            attempted_at: self
                .attempted_at
                .to_time()
                .ok_or_else(|| invalid(rec_key(locator), "attempted_at", "not a valid time"))?,
            state: ActionState::from_code(i64::from(self.state)).ok_or_else(|| {
                invalid(
                    rec_key(locator),
                    "state",
                    format!("unknown state {}", self.state),
                )
            })?,
            error_reason: self.error_reason,
        })
    }
}

/// The bucket of an action: its session, or zeros.
fn bucket(session: Option<SessionId>) -> [u8; 4] {
    session.map_or([0; 4], |s| s.0)
}

fn action_key(bucket: [u8; 4], seq: u64) -> Vec<u8> {
    let mut k = bucket.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A time as 8 bytes that sort in time order (microseconds since the epoch,
/// sign bit flipped).
fn time_bytes(t: DateTime<Utc>) -> [u8; 8] {
    ((t.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The key of an action in the time index: its time, then its sequence.
pub fn time_key(t: DateTime<Utc>, seq: u64) -> Vec<u8> {
    let mut k = time_bytes(t).to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes an action record; the error names the tree and key.
pub fn decode_action(key: &[u8], value: &[u8]) -> Result<Action> {
    let rec: record::ActionRecordV1 = kvcodec::decode(value, record::ACTION_V1).map_err(|e| {
        invalid(
            format!("tree {ACTIONS_TREE}, key {}", hex::encode(key)),
            "value",
            e.to_string(),
        )
    })?;
    rec.into_action()
}

/// Decodes a locator record; the error names the tree and key.
pub fn decode_locator(tree: &str, key: &[u8], value: &[u8]) -> Result<record::LocatorRecordV1> {
    kvcodec::decode(value, record::LOCATOR_V1).map_err(|e| {
        invalid(
            format!("tree {tree}, key {}", hex::encode(key)),
            "value",
            e.to_string(),
        )
    })
}

/// The sequence of an index key.
pub fn index_seq(key: &[u8]) -> Result<u64> {
    let b: [u8; 8] = key.try_into().map_err(|_| {
        invalid(
            format!("tree {INDEX_TREE}, key {}", hex::encode(key)),
            "key",
            "not 8 bytes",
        )
    })?;
    Ok(u64::from_be_bytes(b))
}

fn encode<T: serde::Serialize>(version: u8, what: &ActionLocator, v: &T) -> Result<Vec<u8>> {
    kvcodec::encode(version, v).map_err(|e| invalid(rec_key(*what), "value", e.to_string()))
}

/// The actions store on sled.
#[derive(Clone)]
pub struct KvStore {
    kv: KvDb,
    actions: sled::Tree,
    index: sled::Tree,
    by_time: sled::Tree,
    session_ids: sled::Tree,
    groups: sled::Tree,
    accounts: sled::Tree,
    write: Arc<Mutex<()>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("path", &self.kv.path())
            .finish()
    }
}

impl KvStore {
    /// The actions store of an open key-value database (the sessions and
    /// accounts stores of the same database are consulted for links).
    ///
    /// Errors: [`Error::Tombstoned`] when the database was retired.
    pub fn open(kv: &KvDb) -> Result<KvStore> {
        kv.check()?;
        Ok(KvStore {
            kv: kv.clone(),
            actions: kv.tree(ACTIONS_TREE)?,
            index: kv.tree(INDEX_TREE)?,
            by_time: kv.tree(TIME_TREE)?,
            session_ids: kv.tree(store_sessions::kv::ID_INDEX_TREE)?,
            groups: kv.tree(store_sessions::kv::GROUP_INDEX_TREE)?,
            accounts: kv.tree(store_accounts::kv::TREE)?,
            write: Arc::new(Mutex::new(())),
            clock: Arc::new(SystemClock),
        })
    }

    /// The same store, recording actions at `clock`'s time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> KvStore {
        self.clock = clock;
        self
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.write.lock().map_err(|_| Error::Backend {
            backend: BACKEND,
            source: "write lock poisoned".into(),
        })
    }

    fn put(&self, a: &Action, fresh: bool) -> Result<()> {
        self.put_unflushed(a, fresh)?;
        self.kv.flush()?;
        Ok(())
    }

    fn put_unflushed(&self, a: &Action, fresh: bool) -> Result<()> {
        let seq = a.locator.index();
        let b = bucket(a.request.session_id);
        let value = encode(
            record::ACTION_V1,
            &a.locator,
            &record::ActionRecordV1::from_action(a),
        )?;
        let loc = encode(
            record::LOCATOR_V1,
            &a.locator,
            &record::LocatorRecordV1 { session: b },
        )?;
        let (akey, tkey) = (action_key(b, seq), time_key(a.attempted_at, seq));
        self.write(|w| {
            w.insert(0, &akey, &value)?;
            if fresh {
                w.insert(1, seq.to_be_bytes(), &loc)?;
                w.insert(2, &tkey, &loc)?;
            }
            Ok(())
        })
    }

    /// One tracked transaction over the actions (0), index (1) and time
    /// index (2) trees.
    fn write<T>(
        &self,
        f: impl Fn(
            &mut tombstone::Writes<'_>,
        ) -> std::result::Result<T, ConflictableTransactionError<Error>>,
    ) -> Result<T> {
        self.kv
            .write(&[&self.actions, &self.index, &self.by_time], f)
            .map_err(tombstone::transaction_error)
    }

    fn get(&self, locator: ActionLocator) -> Result<Action> {
        let seq = locator.index();
        let idx = self
            .index
            .get(seq.to_be_bytes())?
            .ok_or(Error::NotFound { locator })?;
        let loc = decode_locator(INDEX_TREE, &seq.to_be_bytes(), &idx)?;
        let key = action_key(loc.session, seq);
        let raw = self.actions.get(&key)?.ok_or(Error::NotFound { locator })?;
        decode_action(&key, &raw)
    }

    fn next_seq(&self) -> Result<u64> {
        Ok(match self.index.last()? {
            None => 1,
            Some((k, _)) => index_seq(&k)? + 1,
        })
    }

    /// Writes `actions` as they are, at their locators, without checking
    /// links, with one flush at the end. For restoring a dump and for
    /// building databases.
    pub async fn import_actions(&self, actions: Vec<Action>) -> Result<()> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            for action in &actions {
                if let Ok(old) = this.get(action.locator) {
                    // Replacing: drop the old entries first.
                    let akey = action_key(bucket(old.request.session_id), old.locator.index());
                    let tkey = time_key(old.attempted_at, old.locator.index());
                    this.write(|w| {
                        w.remove(0, &akey)?;
                        w.remove(2, &tkey)?;
                        Ok(())
                    })?;
                }
                this.put_unflushed(action, true)?;
            }
            this.kv.flush()?;
            Ok(())
        })
        .await
    }

    fn scan_bucket(&self, session: SessionId) -> Result<Vec<Action>> {
        let mut out = Vec::new();
        for item in self.actions.scan_prefix(session.0) {
            let (k, v) = item?;
            let a = decode_action(&k, &v)?;
            if a.request.session_id == Some(session) {
                out.push(a);
            }
        }
        Ok(out)
    }

    fn list(&self, q: &ActionQuery) -> Result<ActionPage> {
        let f = &q.filter;
        let matches = |a: &Action| filter_matches(f, a);
        let mut page = ActionPage::default();
        let mut skipped = 0u64;
        let mut take = |a: Action, page: &mut ActionPage| -> bool {
            // Returns false once the page is full and nothing needs counting.
            page.total_count += 1;
            if skipped < q.offset {
                skipped += 1;
            } else if q.max == 0 || (page.actions.len() as u64) < q.max {
                page.actions.push(a);
            } else if !q.count_all {
                return false;
            }
            true
        };
        let sessions: Option<Vec<SessionId>> = if let Some(s) = f.session_id {
            if !self.session_ids.contains_key(s.0)? {
                return Err(Error::SessionNotFound { id: s });
            }
            Some(vec![s])
        } else if let Some(g) = f.group_id {
            let members: Vec<SessionId> = store_sessions::kv::group_index(&self.groups, g)
                .map_err(|e| invalid(format!("group {g}"), "members", e.to_string()))?
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            if members.is_empty() {
                return Err(Error::UnknownGroup { group: g });
            }
            Some(members)
        } else {
            None
        };
        match sessions {
            Some(sessions) => {
                let mut all = Vec::new();
                for s in sessions {
                    all.extend(self.scan_bucket(s)?);
                }
                all.sort_by_key(|a| (a.attempted_at, a.locator));
                if q.reversed {
                    all.reverse();
                }
                for a in all.into_iter().filter(matches) {
                    if !take(a, &mut page) {
                        break;
                    }
                }
            }
            None => {
                use std::ops::Bound;
                let lower = f.start_time.map_or(Bound::Unbounded, |s| {
                    Bound::Included(time_bytes(s).to_vec())
                });
                let upper = f
                    .end_time
                    .map_or(Bound::Unbounded, |e| Bound::Included(time_key(e, u64::MAX)));
                let range = self.by_time.range::<Vec<u8>, _>((lower, upper));
                let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
                    if q.reversed {
                        Box::new(range.rev())
                    } else {
                        Box::new(range)
                    };
                for item in iter {
                    let (k, v) = item?;
                    let loc = decode_locator(TIME_TREE, &k, &v)?;
                    let seq = u64::from_be_bytes(k[8..].try_into().map_err(|_| {
                        invalid(format!("tree {TIME_TREE}"), "key", "not 16 bytes")
                    })?);
                    let key = action_key(loc.session, seq);
                    let raw = self.actions.get(&key)?.ok_or_else(|| {
                        invalid(
                            format!("tree {TIME_TREE}"),
                            "key",
                            format!("action {seq} is missing"),
                        )
                    })?;
                    let a = decode_action(&key, &raw)?;
                    if matches(&a) && !take(a, &mut page) {
                        break;
                    }
                }
            }
        }
        if !q.count_all {
            page.total_count = 0;
        }
        page.last_index = page.actions.last().map_or(0, |a| a.locator.index());
        Ok(page)
    }
}

/// True when `a` passes every filter other than session and group (which
/// choose the candidates). An empty string filter does not filter.
fn filter_matches(f: &ActionFilter, a: &Action) -> bool {
    let text = |want: &Option<String>, have: &str| {
        want.as_deref().is_none_or(|w| w.is_empty() || w == have)
    };
    text(&f.feature_name, &a.request.feature_name)
        && text(&f.actor_name, &a.request.actor_name)
        && text(&f.rpc_method, &a.request.rpc_method)
        && f.state.is_none_or(|s| s == a.state)
        && f.start_time.is_none_or(|t| a.attempted_at >= t)
        && f.end_time.is_none_or(|t| a.attempted_at <= t)
}

#[async_trait]
impl Store for KvStore {
    async fn add_action(&self, request: AddAction) -> Result<ActionLocator> {
        request.check()?;
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            if let Some(s) = request.session_id
                && !this.session_ids.contains_key(s.0)?
            {
                return Err(Error::SessionNotFound { id: s });
            }
            if let Some(a) = request.account_id
                && !this.accounts.contains_key(a.0)?
            {
                return Err(Error::AccountNotFound { id: a });
            }
            let locator = ActionLocator::from_index(this.next_seq()?);
            let action = Action {
                locator,
                request,
                attempted_at: store_contract::normalise_time(this.clock.now()),
                state: ActionState::Init,
                error_reason: String::new(),
            };
            this.put(&action, true)?;
            Ok(locator)
        })
        .await
    }

    async fn action(&self, locator: ActionLocator) -> Result<Action> {
        let this = self.clone();
        off_executor(move || this.get(locator)).await
    }

    async fn set_action_state(
        &self,
        locator: ActionLocator,
        state: ActionState,
        error_reason: &str,
    ) -> Result<()> {
        check_state(locator, state, error_reason)?;
        let reason = error_reason.to_owned();
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            let mut a = this.get(locator)?;
            a.state = state;
            a.error_reason = reason;
            this.put(&a, false)
        })
        .await
    }

    async fn list_actions(&self, query: &ActionQuery) -> Result<ActionPage> {
        query.filter.check()?;
        let (this, q) = (self.clone(), query.clone());
        off_executor(move || this.list(&q)).await
    }
}
