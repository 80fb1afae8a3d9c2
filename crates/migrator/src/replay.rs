//! Replaying what changed in the key-value stores while an online
//! migration copied them (docs/design.md §7.2).
//!
//! A write through the stores during an online migration records what it
//! touched ([`Touched`]) in a [`Journal`]. Replaying a set of touched keys
//! reads each record again from the live stores and makes SQL hold it as
//! the migration's rules say, store by store in the migration's order, with
//! the copy's own writers and read-back comparisons: an existing row is
//! updated in place, a new one inserted, a record gone from the key-value
//! store deleted (after the links to it are dropped, as the migration drops
//! links to what is gone). Replay reads current values, so it is
//! idempotent, and a key replayed twice costs only time.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use sea_query::{Alias, Expr, ExprTrait, Func, Query};
use sqldb::{Dialect, Sql, Tx, TxExt};
use store_accounts::AccountId;
use store_sessions::SessionId;

use crate::Error;
pub use crate::firewall::TouchedEntry;

/// A record (or set of records) a write touched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Touched {
    /// An account, by id.
    Account(AccountId),
    /// The last invoice indexes.
    LastIndexes,
    /// A session, by id.
    Session(SessionId),
    /// A kv-store entry.
    Entry(TouchedEntry),
    /// Every temporary kv-store entry (they were wiped).
    TempEntries,
    /// A session group's privacy map, whole (the copy read it while it
    /// was written).
    Privacy(SessionId),
    /// One privacy pair, by the id it was written under and its real
    /// value: pairs are only ever added, so a replay writes just this one.
    Pair(SessionId, String),
    /// An action, by locator index.
    Action(u64),
    /// Every reserved session (they were deleted together, and which ones
    /// is known only to the store).
    ReservedSessions,
}

/// The keys touched since the journal was last taken: a set, so its memory
/// is bounded by the distinct keys touched, whatever the write rate.
///
/// A write whose outcome is unknown (it failed in a way that may have left
/// it applied, and its key is not known: a new record whose id the failed
/// call never returned) cannot be replayed; [`Journal::uncertain`] says
/// so, and from then on [`Journal::take`] fails, which fails the migration
/// before its last commit (docs/design.md §7.4). A poisoned lock keeps its
/// data: a set of keys is never half-updated, and dropping a key would lose
/// a write.
#[derive(Debug, Default)]
pub struct Journal {
    state: Mutex<JournalState>,
}

#[derive(Debug, Default)]
struct JournalState {
    keys: HashSet<Touched>,
    peak: usize,
    /// A write that may have landed with no key to replay it by.
    uncertain: Option<String>,
}

impl Journal {
    fn state(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a write touched `key`.
    pub fn record(&self, key: Touched) {
        let mut s = self.state();
        s.keys.insert(key);
        s.peak = s.peak.max(s.keys.len());
    }

    /// Records that a write of `what` failed in a way that may have left it
    /// applied, with no key to replay it by: the migration cannot prove it
    /// and must not finish.
    pub fn uncertain(&self, what: String) {
        let mut s = self.state();
        if s.uncertain.is_none() {
            s.uncertain = Some(what);
        }
    }

    /// The keys touched so far, leaving the journal empty.
    ///
    /// # Errors
    /// [`Error::UncertainWrite`] once a write's outcome was unknown.
    pub fn take(&self) -> Result<Vec<Touched>, Error> {
        let mut s = self.state();
        if let Some(what) = &s.uncertain {
            return Err(Error::UncertainWrite { what: what.clone() });
        }
        Ok(std::mem::take(&mut s.keys).into_iter().collect())
    }

    /// Drops every key (the migration ended).
    pub fn clear(&self) {
        self.state().keys.clear();
    }

    /// Keys waiting to be replayed.
    pub fn pending(&self) -> usize {
        self.state().keys.len()
    }

    /// The most keys the journal held at once.
    pub fn peak(&self) -> usize {
        self.state().peak
    }
}

/// The live key-value stores a replay reads from.
#[derive(Clone)]
pub struct LiveStores {
    /// Accounts.
    pub accounts: Arc<dyn store_accounts::Store>,
    /// Sessions.
    pub sessions: Arc<dyn store_sessions::Store>,
    /// Firewall.
    pub firewall: Arc<dyn store_firewall::Store>,
    /// Actions.
    pub actions: Arc<dyn store_actions::Store>,
}

impl std::fmt::Debug for LiveStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStores").finish_non_exhaustive()
    }
}

/// Rows a replay added to (or, negative, removed from) each table the
/// migration record counts: the copy's counts plus these are the table
/// counts, with no `COUNT(*)` of a large table in the cutover's pause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deltas {
    /// `accounts`.
    pub accounts: i64,
    /// `account_invoices`.
    pub invoices: i64,
    /// `account_payments`.
    pub payments: i64,
    /// `sessions`.
    pub sessions: i64,
    /// `kvstores`.
    pub kv_entries: i64,
    /// `privacy_pairs`.
    pub privacy_pairs: i64,
    /// `actions`.
    pub actions: i64,
}

/// `n` rows as a signed count.
pub(crate) fn rows(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Makes SQL hold what the live stores hold for every key in `keys`, in
/// the migration's store order, adding the rows it changed to `deltas`.
pub async fn replay(
    tx: &mut dyn Tx,
    live: &LiveStores,
    keys: Vec<Touched>,
    deltas: &mut Deltas,
) -> Result<(), Error> {
    let keys: BTreeSet<Touched> = keys.into_iter().collect();
    let mut accounts = Vec::new();
    let mut last_indexes = false;
    let mut sessions = Vec::new();
    let mut entries = Vec::new();
    let mut temp = false;
    let mut privacy = Vec::new();
    let mut pairs = Vec::new();
    let mut actions = Vec::new();
    let mut reserved = false;
    for k in keys {
        match k {
            Touched::Account(id) => accounts.push(id),
            Touched::LastIndexes => last_indexes = true,
            Touched::Session(id) => sessions.push(id),
            Touched::Entry(e) => entries.push(e),
            Touched::TempEntries => temp = true,
            Touched::Privacy(g) => privacy.push(g),
            Touched::Pair(g, real) => pairs.push((g, real)),
            Touched::Action(l) => actions.push(l),
            Touched::ReservedSessions => reserved = true,
        }
    }
    if reserved {
        // Which reserved sessions went is the store's to know: every one
        // SQL holds is read again, and those gone are deleted.
        sessions.extend(crate::sessions::reserved_in_sql(tx).await?);
        sessions.sort();
        sessions.dedup();
    }
    let t = std::time::Instant::now();
    crate::accounts::replay(tx, &*live.accounts, &accounts, last_indexes, deltas).await?;
    let accounts_ms = t.elapsed().as_millis();
    let t = std::time::Instant::now();
    crate::sessions::replay(tx, live, &sessions, deltas).await?;
    let sessions_ms = t.elapsed().as_millis();
    let t = std::time::Instant::now();
    crate::firewall::replay(
        tx,
        &*live.firewall,
        temp,
        &entries,
        (&privacy, &pairs),
        deltas,
    )
    .await?;
    let firewall_ms = t.elapsed().as_millis();
    let t = std::time::Instant::now();
    crate::actions::replay(tx, live, &actions, deltas).await?;
    tracing::debug!(
        accounts = accounts.len(),
        accounts_ms,
        sessions = sessions.len(),
        sessions_ms,
        entries = entries.len(),
        privacy_groups = privacy.len(),
        firewall_ms,
        actions = actions.len(),
        actions_ms = t.elapsed().as_millis(),
        "replayed"
    );
    Ok(())
}

/// The next free SQL id of `table` (one past the largest).
pub(crate) async fn next_id(tx: &mut dyn Tx, table: &'static str) -> Result<i64, Error> {
    let row = tx
        .query_opt(
            &Query::select()
                .expr(Func::coalesce([
                    sea_query::Expr::from(Func::max(Expr::col(Alias::new("id")))),
                    Expr::val(0i64),
                ]))
                .from(Alias::new(table))
                .to_owned(),
        )
        .await?;
    Ok(row.map(|r| r.i64(0)).transpose()?.unwrap_or(0) + 1)
}

/// On PostgreSQL, moves `table`'s id sequence past `last` (explicit ids do
/// not advance it); nothing on SQLite.
pub(crate) async fn advance_sequence(
    tx: &mut dyn Tx,
    table: &'static str,
    last: i64,
) -> Result<(), Error> {
    if tx.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let max = next_id(tx, table).await? - 1;
    let target = Ord::max(max, last);
    if target < 1 {
        return Ok(());
    }
    tx.query_sql(Sql::fixed(
        "SELECT setval(pg_get_serial_sequence($1, 'id'), $2)",
        vec![table.into(), target.into()],
    ))
    .await?;
    Ok(())
}

/// Drops the links to the accounts or sessions with these SQL ids
/// (`column` is `account_id` or `session_id`) from sessions and actions,
/// as the migration drops links to records that are gone.
pub(crate) async fn drop_links(
    tx: &mut dyn Tx,
    column: &'static str,
    ids: &[i64],
) -> Result<(), Error> {
    let tables: &[&'static str] = if column == "account_id" {
        &["sessions", "actions"]
    } else {
        &["actions"]
    };
    for table in tables {
        tx.exec(
            &Query::update()
                .table(Alias::new(*table))
                .value(Alias::new(column), Expr::val(Option::<i64>::None))
                .and_where(Expr::col(Alias::new(column)).is_in(ids.iter().copied()))
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}
