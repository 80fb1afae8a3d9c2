//! The online migration (docs/design.md §7): the node keeps serving from
//! its key-value database while the data moves to SQL in two transactions.
//! The first copies every store, replays the writes made meanwhile
//! ([`crate::replay`]) and commits the copy as staged ([`crate::staging`]),
//! which no open serves; the second replays the writes made since, and a
//! short pause of writers covers its last replay, its commit (the migration
//! record, the staging row gone), the proof, the tombstone and the switch
//! of the stores to SQL.
//!
//! The node's side (stores that route every call, journal every write and
//! wait at the gate) is `nodestore`'s; this module is the migration's side:
//! [`migrate_online`] and the states it reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqldb::schema::KV_TO_SQL_VERSION;
use sqldb::{Db, Tx, TxMode};
use tokio::sync::OwnedRwLockWriteGuard;
use tombstone::{KvDb, Mark, MigrationSource};

use crate::error::schema_failure;
pub use crate::protocol::Protocol;
use crate::replay::LiveStores;
use crate::retire::{later_steps, retire};
use crate::run::{Mode, run};
use crate::shared::millis;
use crate::{
    DataState, Error, Failure, KvToSql, MarkWriter, MigrationRecord, Options, Outcome, OutcomeKind,
    Progress, ProgressEvent, Report, SourceFacts,
};

/// Where an online migration is.
#[derive(Debug, Clone)]
pub enum OnlineState {
    /// Not started yet.
    Starting,
    /// Copying a store: records done of about `total`.
    Copying {
        /// The store.
        store: &'static str,
        /// Records copied.
        done: u64,
        /// Records in the store (an estimate until the store is done).
        total: u64,
    },
    /// Replaying the writes made during the copy, writers running.
    CatchingUp {
        /// The round, from 1.
        round: u32,
        /// Keys this round replays.
        keys: usize,
    },
    /// The copy is committed as staged (on SQLite, its log is then copied
    /// into the database file), writers running; the catch-up and the
    /// cutover go on in a second, short transaction.
    CommittingCopy,
    /// Writers paused for the last replay, the commit and the switch.
    CuttingOver {
        /// The attempt, from 1 (an attempt over budget backs off).
        attempt: u32,
    },
    /// Done: the stores run on SQL; the key-value database is retired.
    Switched {
        /// The migration's outcome.
        outcome: Box<Outcome>,
        /// The longest time writers waited at a cutover attempt.
        longest_pause: Duration,
        /// The most distinct keys the journal held at once.
        journal_peak: usize,
        /// How the copy was committed (in pieces, on SQLite).
        copy: crate::PieceStats,
    },
    /// Failed; the stores still run on the key-value database, which is
    /// live and untombstoned. The next open tries again.
    Failed {
        /// Why, and what it left behind.
        error: Arc<Failure>,
    },
}

impl OnlineState {
    /// True once the migration ended, either way.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            OnlineState::Switched { .. } | OnlineState::Failed { .. }
        )
    }
}

/// What an online migration works with: the protocol it shares with the
/// node's routed stores, the live stores the replay reads, its pause
/// budget, and SQLite's files for pacing.
pub struct Online {
    /// The gate, journal, epoch and state, shared with the routed stores.
    pub protocol: Arc<Protocol>,
    /// The key-value stores the node runs on, read by the replay.
    pub live: LiveStores,
    /// The longest a cutover may pause writers before it backs off.
    pub pause_budget: Duration,
    /// SQLite's write-ahead log, synced ahead of the cutover's commit.
    pub(crate) wal: Option<std::path::PathBuf>,
    /// SQLite's database file.
    sqlite_file: Option<std::path::PathBuf>,
    /// How the copy was committed.
    copy: std::sync::Mutex<crate::PieceStats>,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Online")
            .field("pause_budget", &self.pause_budget)
            .field("pending", &self.protocol.pending())
            .finish_non_exhaustive()
    }
}

impl Online {
    /// An online migration over `protocol` (the routed stores' own).
    pub fn new(protocol: Arc<Protocol>, live: LiveStores, pause_budget: Duration) -> Online {
        Online {
            protocol,
            live,
            pause_budget,
            wal: None,
            sqlite_file: None,
            copy: std::sync::Mutex::new(crate::PieceStats::default()),
        }
    }

    /// Records how the copy was committed.
    pub(crate) fn copied_in(&self, stats: crate::PieceStats) {
        *self.copy.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    /// Names the SQLite database the migration writes, whose write-ahead
    /// log is synced before each cutover so its commit is short.
    pub fn with_sqlite_file(mut self, file: &std::path::Path) -> Online {
        let mut wal = file.as_os_str().to_owned();
        wal.push("-wal");
        self.wal = Some(wal.into());
        self.sqlite_file = Some(file.to_path_buf());
        self
    }

    fn set(&self, state: OnlineState) {
        self.protocol.set(state);
    }

    /// Says the copy's transaction is about to commit.
    pub(crate) fn committing_copy(&self) {
        self.set(OnlineState::CommittingCopy);
    }
}

/// Progress of the copy, told to the node's observer and to the state.
struct CopyProgress<'a> {
    online: &'a Online,
    inner: Option<&'a dyn Progress>,
}

impl Progress for CopyProgress<'_> {
    fn progress(&self, e: ProgressEvent) -> Result<(), sqldb::BoxError> {
        self.online.set(OnlineState::Copying {
            store: e.store,
            done: e.done,
            total: e.total,
        });
        match self.inner {
            Some(p) => p.progress(e),
            None => Ok(()),
        }
    }
}

/// Writes the tombstone through the node's open handle (sled allows one
/// open of a database per process).
#[derive(Debug)]
struct LiveMark(KvDb);

impl MarkWriter for LiveMark {
    fn mark(&self, _path: &std::path::Path, mark: &Mark) -> Result<(), tombstone::Error> {
        self.0.mark(mark)
    }
}

/// Migrates the live key-value database `kv` into `db` while the node
/// keeps serving from it, then calls `switch` with writers still paused,
/// right after the tombstone: `switch` must route every store to SQL. The
/// journal must record writes from before this is called.
///
/// On success the stores run on SQL and the outcome is returned (and told
/// through `online.state`). On failure nothing any open serves is kept in
/// SQL (at most a staged copy, which the next migration discards), the
/// key-value database is live and untombstoned, writers are released, and
/// `switch` was not called; the failure is returned and told through the
/// state (shared, hence the `Arc`).
pub async fn migrate_online(
    kv: &KvDb,
    db: &Db,
    opts: &Options,
    online: &Online,
    progress: Option<&dyn Progress>,
    switch: impl FnOnce() + Send,
) -> Result<Outcome, Arc<Failure>> {
    let opts = Options {
        // sled allows one open of a database per process: the node's.
        marker: Arc::new(LiveMark(kv.clone())),
        dry_run: false,
        ..opts.clone()
    };
    let mode = Mode::Live {
        kv,
        online,
        switch: Box::new(switch),
    };
    match run(db, &opts, mode, progress).await {
        Ok(outcome) => {
            online.set(OnlineState::Switched {
                outcome: Box::new(outcome.clone()),
                longest_pause: online.protocol.longest_pause(),
                journal_peak: online.protocol.journal().peak(),
                copy: *online.copy.lock().unwrap_or_else(|p| p.into_inner()),
            });
            Ok(outcome)
        }
        Err(f) => {
            tracing::warn!(error = %f.error, "online migration failed; the node stays on the key-value database");
            online.protocol.stop_recording();
            let f = Arc::new(f);
            online.set(OnlineState::Failed { error: f.clone() });
            Err(f)
        }
    }
}

/// An earlier run committed: finishes it with writers paused, so nothing is
/// written to the key-value database after its data.
pub(crate) async fn finish_earlier(
    db: &Db,
    opts: &Options,
    online: &Online,
    facts: &SourceFacts,
    record: MigrationRecord,
    switch: Box<dyn FnOnce() + Send + '_>,
) -> Result<Outcome, Failure> {
    let guard = online.protocol.pause().await;
    if !online.protocol.begin_last_commit() {
        return Err(Error::Stopped.into());
    }
    let tombstone = retire(db, opts, facts, &record, false).await;
    switch();
    drop(guard);
    Ok(later_steps(
        db,
        opts,
        record,
        OutcomeKind::AlreadyMigrated,
        Vec::new(),
        tombstone,
    )
    .await)
}

/// The online data step and cutover: the copy committed as staged while
/// writers run, then the second transaction, the proof, the tombstone and
/// the switch with writers paused.
pub(crate) async fn copy_and_cut_over(
    db: &Db,
    opts: &Options,
    online: &Online,
    source: Arc<MigrationSource>,
    facts: &SourceFacts,
    progress: Option<&dyn Progress>,
    switch: Box<dyn FnOnce() + Send + '_>,
) -> Result<Outcome, Failure> {
    let observer = CopyProgress {
        online,
        inner: progress,
    };
    let step = KvToSql::live(
        source.clone(),
        facts.clone(),
        opts.clone(),
        Some(&observer),
        online,
    );
    let mut applied = Vec::new();
    let pacer = Pacer::start(
        online
            .wal
            .iter()
            .chain(&online.sqlite_file)
            .cloned()
            .collect(),
    );
    // The first transaction: the copy, the later schema steps and the
    // catch-up of the copy's backlog, committed as staged while writers run.
    let run = crate::schema::runner()
        .code_step(KV_TO_SQL_VERSION, &step)
        .lock_wait(opts.lock_wait)
        .through(KV_TO_SQL_VERSION)
        .run_into(db, &mut applied)
        .await;
    if let Err(e) = run {
        // The migration's connection had automatic checkpoints off.
        checkpoint_after_switch(db).await;
        // Pieces of the copy may have committed: an empty target again,
        // best effort (the next migration discards what is left).
        if let Err(e) = crate::staging::discard(db, facts.identity, false).await {
            tracing::warn!(error = %e, "the staged copy could not be discarded; the next migration discards it");
        }
        let (error, data) = schema_failure(e);
        return Err(Failure {
            error,
            data,
            schema_steps: applied,
        });
    }
    let Some((report, _)) = step.take_report() else {
        return Err(Error::Invalid {
            record: "the key-value step".into(),
            reason: "another runner recorded it while this one ran; open again".into(),
        }
        .into());
    };
    applied.extend(step.later_steps());
    drop(step);
    checkpoint_copy(db).await;
    drop(pacer);
    // The second transaction: the rest of the catch-up, the pause, the
    // last replay, the record; then the proof, the tombstone, the switch.
    let (record, guard, paused_at) = match finish_online(db, online, &source, facts, report).await {
        Ok(done) => done,
        Err((error, data)) => {
            if data == DataState::NotWritten {
                // Best effort: an empty target again; if this fails too the
                // next run discards the staged copy.
                if let Err(e) = crate::staging::discard(db, facts.identity, false).await {
                    tracing::warn!(error = %e, "the staged copy could not be discarded; the next migration discards it");
                }
            }
            checkpoint_after_switch(db).await;
            return Err(Failure {
                error,
                data,
                schema_steps: applied,
            });
        }
    };
    let t = Instant::now();
    crate::hooks::reached(crate::hooks::Point::Committed).await;
    let tombstone = retire(db, opts, facts, &record, false).await;
    let retire_ms = millis(t);
    crate::hooks::reached(crate::hooks::Point::Retired).await;
    switch();
    drop(guard);
    online.protocol.paused_for(paused_at.elapsed());
    tracing::info!(
        paused_ms = millis(paused_at),
        retire_ms,
        "cutover done: writers released on SQL"
    );
    checkpoint_after_switch(db).await;
    tracing::info!(
        longest_pause_ms =
            u64::try_from(online.protocol.longest_pause().as_millis()).unwrap_or(u64::MAX),
        journal_peak = online.protocol.journal().peak(),
        "switched to SQL"
    );
    Ok(later_steps(db, opts, record, OutcomeKind::Migrated, applied, tombstone).await)
}

/// The second transaction of an online migration: catches up with the
/// writes made since the copy, pauses writers, replays the last ones,
/// writes the migration record in place of the staging row and commits.
/// Returns the record and the gate, still held, with when it was taken.
/// On failure: why, and whether the record may have committed (only when
/// the commit itself failed).
async fn finish_online(
    db: &Db,
    online: &Online,
    source: &MigrationSource,
    facts: &SourceFacts,
    mut report: Report,
) -> Result<(crate::MigrationRecord, OwnedRwLockWriteGuard<()>, Instant), (Error, DataState)> {
    let started = Instant::now();
    let not_written = |e: Error| (e, DataState::NotWritten);
    let mut tx = db
        .begin(TxMode::Write)
        .await
        .map_err(|e| not_written(e.into()))?;
    let body = async {
        let mut deltas = crate::shared::Deltas::default();
        let (seq, guard, paused_at) =
            catch_up_and_pause(&mut *tx, online, source, &mut deltas).await?;
        recount(&mut report, &deltas);
        report.duration += started.elapsed();
        let record = MigrationRecord::new(facts, seq, report, Vec::new());
        crate::staging::clear(&mut *tx, facts.identity).await?;
        crate::record::insert(&mut *tx, &record).await?;
        Ok::<_, Error>((record, guard, paused_at))
    };
    let (record, guard, paused_at) = match body.await {
        Ok(done) => done,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(not_written(e));
        }
    };
    if !online.protocol.begin_last_commit() {
        let _ = tx.rollback().await;
        return Err(not_written(Error::Stopped));
    }
    crate::hooks::reached(crate::hooks::Point::Committing).await;
    let t = Instant::now();
    if let Err(e) = tx.commit().await {
        // Writers are still paused: find out whether the commit landed
        // before any of them goes anywhere (docs/design.md §7.4).
        match resolve_lost_commit(db, facts).await {
            Some(true) => tracing::warn!(
                error = %e,
                "the last commit reported an error but landed; finishing the cutover"
            ),
            Some(false) => return Err(not_written(Error::from(e))),
            None => return Err((Error::from(e), DataState::MaybeCommitted)),
        }
    }
    tracing::info!(
        commit_ms = millis(t),
        replay_ms = u64::try_from((t - paused_at).as_millis()).unwrap_or(u64::MAX),
        "the migration's last transaction committed, writers paused"
    );
    Ok((record, guard, paused_at))
}

/// How often, and how long in all, a lost last commit is looked up again.
const RESOLVE_TRIES: u32 = 12;
const RESOLVE_FIRST_WAIT: Duration = Duration::from_millis(50);
const RESOLVE_LONGEST_WAIT: Duration = Duration::from_secs(2);

/// After the last commit failed (a lost connection, say), with writers
/// still paused: reads, from a fresh connection, whether the migration
/// record of this source is there. `Some(true)`: the commit landed;
/// `Some(false)`: it did not; `None`: the database did not answer within
/// the bounded retries.
async fn resolve_lost_commit(db: &Db, facts: &SourceFacts) -> Option<bool> {
    let mut wait = RESOLVE_FIRST_WAIT;
    for attempt in 1..=RESOLVE_TRIES {
        match crate::record::records(db).await {
            Ok(records) => {
                return Some(records.iter().any(|r| r.source_identity == facts.identity));
            }
            Err(e) => {
                tracing::info!(attempt, error = %e, "the last commit is not resolved yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RESOLVE_LONGEST_WAIT);
            }
        }
    }
    None
}

/// Keeps the unwritten part of SQLite's files small while the copy is
/// written, committed and checkpointed (docs/design.md §7.3). Every write
/// of the node waits for its own fsync of the key-value database; on a
/// journaling file system an fsync can wait for other files' dirty pages,
/// and the kernel lets gigabytes of the copy pile up before it writes them
/// back, which the copy's commit and its checkpoint then flush at once:
/// measured at scale L, one write in five during those seconds took over
/// 50 ms. Syncing the files every few milliseconds from a thread of its
/// own spreads that I/O out, as PostgreSQL's `checkpoint_flush_after`
/// does. Stops when dropped.
struct Pacer {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Pacer {
    /// How often the files are synced.
    const EVERY: Duration = Duration::from_millis(20);

    fn start(files: Vec<std::path::PathBuf>) -> Pacer {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if !files.is_empty() {
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name("nodestore-pacer".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for f in &files {
                            // A file not there yet, or a failed sync, only
                            // means less pacing: the commit syncs anyway.
                            if let Ok(file) = std::fs::File::open(f) {
                                let _ = file.sync_data();
                            }
                        }
                        std::thread::sleep(Self::EVERY);
                    }
                });
            if let Err(e) = spawned {
                tracing::debug!(error = %e, "no thread for pacing the copy's writes");
            }
        }
        Pacer { stop }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// On SQLite, once the copy is committed: copies its write-ahead log (the
/// whole copy) into the database file and empties it, while the node's
/// writers still run on the key-value database, so that neither the
/// cutover's commit nor the first writes on SQL find a large log.
async fn checkpoint_copy(db: &Db) {
    #[cfg(feature = "sqlite")]
    if let Some(sqlite) = db.as_sqlite() {
        let t = Instant::now();
        match sqlite.checkpoint_truncate().await {
            Ok(_) => tracing::info!(
                duration_ms = millis(t),
                "the copy's write-ahead log checkpointed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the copy's write-ahead log could not be checkpointed")
            }
        }
    }
    let _ = db;
}

/// On SQLite, copies the migration's log into the database file without
/// blocking the writers now on SQL, then turns automatic checkpoints back
/// on (they were off for the migration's connection, so its commit stayed
/// short); also after a failed run, for the same connection. A failure
/// here only leaves the log larger for a while: logged.
async fn checkpoint_after_switch(db: &Db) {
    #[cfg(feature = "sqlite")]
    if let Some(sqlite) = db.as_sqlite()
        && let Err(e) = sqlite.checkpoint_passive().await
    {
        tracing::warn!(error = %e, "the write-ahead log could not be checkpointed after the switch");
    }
    crate::step::resume_checkpoints(db).await;
}

/// A backlog this small is cut over without waiting for a quieter moment.
const CUTOVER_KEYS: usize = 64;

/// The cutover starts when the rest looks replayable in this share of the
/// pause budget: the pause also holds the commit, the proof and the
/// tombstone, and one more round while writers run costs them nothing
/// (measured at scale L: a round of 500 keys leaves about 100 behind).
const CUTOVER_SHARE: u32 = 8;

/// Where the catch-up is: its rounds so far and the measured replay rate.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    round: u32,
    /// Keys replayed per second in the last round that replayed any.
    rate: f64,
}

/// Replays rounds of journaled keys while writers run, until what is left
/// looks quick to replay (under an eighth of the pause budget at the last
/// round's rate) or is a handful of keys (under a steady trickle of writes
/// the set never empties).
pub(crate) async fn catch_up(
    tx: &mut dyn Tx,
    online: &Online,
    deltas: &mut crate::shared::Deltas,
    at: &mut CatchUp,
) -> Result<(), Error> {
    loop {
        at.round += 1;
        let keys = online.protocol.journal().take()?;
        let n = keys.len();
        online.set(OnlineState::CatchingUp {
            round: at.round,
            keys: n,
        });
        let t = Instant::now();
        crate::replay::replay(tx, &online.live, keys, deltas).await?;
        if n > 0 {
            at.rate = n as f64 / t.elapsed().as_secs_f64().max(1e-6);
        }
        let pending = online.protocol.pending();
        let estimate = if at.rate > 0.0 {
            Duration::from_secs_f64(pending as f64 / at.rate)
        } else {
            Duration::ZERO
        };
        tracing::info!(round = at.round, replayed = n, pending, "catch-up round");
        if estimate <= online.pause_budget / CUTOVER_SHARE || pending <= CUTOVER_KEYS {
            return Ok(());
        }
    }
}

/// Cutover attempts before the migration gives up (and the node stays on
/// the key-value database with a clear state, rather than keeping the
/// second transaction open for as long as writes keep coming).
const MAX_CUTOVER_ATTEMPTS: u32 = 30;

/// The share of the pause budget that waiting for the gate may take: the
/// writes in flight finish first, and what is left of the budget is for
/// the last replay, the commit and the retirement.
const GATE_WAIT_SHARE: u32 = 2;

/// The share of the pause budget left, after the last replay, for the
/// commit, the proof, the tombstone and the switch: a pause whose replay
/// ran past `budget - budget / RETIRE_SHARE` backs off instead.
const RETIRE_SHARE: u32 = 4;

/// After the copy: catches up, then pauses writers, replays the rest and
/// returns the source's write sequence with the gate held, and the instant
/// the pause began as writers see it (when the gate was requested: from
/// then on new writes queue). An attempt whose wait for the gate or whose
/// replay runs past its share of the budget releases writers and tries
/// again after more catching up; after [`MAX_CUTOVER_ATTEMPTS`] the
/// migration gives up.
pub(crate) async fn catch_up_and_pause(
    tx: &mut dyn Tx,
    online: &Online,
    source: &MigrationSource,
    deltas: &mut crate::shared::Deltas,
) -> Result<(u64, OwnedRwLockWriteGuard<()>, Instant), Error> {
    let budget = online.pause_budget;
    let mut at = CatchUp::default();
    for attempt in 1..=MAX_CUTOVER_ATTEMPTS {
        catch_up(tx, online, deltas, &mut at).await?;
        // What the transaction wrote so far goes to disk now, while writers
        // run: the commit in the pause then has little left to sync.
        if let Some(wal) = online.wal.clone() {
            let synced = tokio::task::spawn_blocking(move || {
                std::fs::File::open(&wal).and_then(|f| f.sync_data())
            })
            .await;
            if let Ok(Err(e)) = synced {
                tracing::debug!(error = %e, "the write-ahead log could not be synced ahead of the commit");
            }
        }
        online.set(OnlineState::CuttingOver { attempt });
        let requested = Instant::now();
        let gate = online.protocol.pause();
        let Ok(guard) = tokio::time::timeout(budget / GATE_WAIT_SHARE, gate).await else {
            // Dropping the request lets the queued writers through.
            online.protocol.paused_for(requested.elapsed());
            tracing::info!(
                attempt,
                waited_ms = millis(requested),
                "writes in flight held the gate past its share of the budget; catching up again"
            );
            back_off(attempt).await;
            continue;
        };
        crate::hooks::reached(crate::hooks::Point::Paused).await;
        let keys = online.protocol.journal().take()?;
        crate::replay::replay(tx, &online.live, keys, deltas).await?;
        let seq = source.write_seq()?.unwrap_or(0);
        if requested.elapsed() > budget - budget / RETIRE_SHARE {
            online.protocol.paused_for(requested.elapsed());
            drop(guard);
            tracing::info!(
                attempt,
                paused_ms = millis(requested),
                "cutover over budget; writers released, catching up again"
            );
            back_off(attempt).await;
            continue;
        }
        return Ok((seq, guard, requested));
    }
    Err(Error::CutoverGaveUp {
        attempts: MAX_CUTOVER_ATTEMPTS,
        budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
    })
}

/// A longer wait after each failed cutover attempt, for a quieter moment.
async fn back_off(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(50) * attempt.min(20)).await;
}

/// The copy's row counts with what the replays added and removed: the
/// table counts, which the migration record keeps and the proof compares.
pub(crate) fn recount(report: &mut Report, d: &crate::shared::Deltas) {
    let add = |n: &mut u64, d: i64| {
        *n = u64::try_from(i64::try_from(*n).unwrap_or(i64::MAX) + d).unwrap_or(0)
    };
    add(&mut report.accounts.accounts, d.accounts);
    add(&mut report.accounts.invoices, d.invoices);
    add(&mut report.accounts.payments, d.payments);
    add(&mut report.sessions.sessions, d.sessions);
    add(&mut report.firewall.kv_entries, d.kv_entries);
    add(&mut report.firewall.privacy_pairs, d.privacy_pairs);
    add(&mut report.actions.actions, d.actions);
}
