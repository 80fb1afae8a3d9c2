//! The key-value to SQL code step: every store copied, read back and
//! compared in the schema runner's transaction (docs/design.md §5).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use sqldb::migrate::CodeStep;
use sqldb::schema::KV_TO_SQL_VERSION;
use sqldb::{BoxError, Tx};
use tokio::task::JoinHandle;
use tombstone::MigrationSource;
use tracing::Instrument;

use sea_query::{DynIden, IntoIden};
use store_accounts::sql::schema::{AccountInvoices, AccountPayments, Accounts};
use store_actions::sql::schema::Actions;
use store_firewall::sql::schema::{Kvstores, PrivacyPairs, Rules};
use store_sessions::sql::schema::{
    SessionFeatureConfigs, SessionMacaroonCaveats, SessionMacaroonPermissions, SessionPrivacyFlags,
    Sessions,
};

use crate::copy::{CopyCtx, ensure_empty};
use crate::feed::Damage;
use crate::progress::EndsAtTotal;
use crate::shared::millis;
use crate::staging::{self, StagedCopy};
use crate::{
    AccountsReport, ActionsReport, Error, FirewallReport, MigrationRecord, Options, Problem,
    Progress, Report, SessionsReport, SourceFacts, accounts, actions, check, firewall, live,
    online, record, replay, sessions,
};

type CheckHandle = JoinHandle<Result<Vec<Problem>, Error>>;

/// The tables the stores fill, checked empty before the copy, in the
/// stores' order.
fn store_tables() -> [DynIden; 6] {
    [
        Accounts::Table.into_iden(),
        Sessions::Table.into_iden(),
        Kvstores::Table.into_iden(),
        PrivacyPairs::Table.into_iden(),
        Rules::Table.into_iden(),
        Actions::Table.into_iden(),
    ]
}

/// The tables whose foreign keys wait for the end of the data step; the
/// actions set aside their indexes and keys themselves (`actions.rs`).
fn linked_tables() -> Vec<String> {
    [
        AccountInvoices::Table.into_iden(),
        AccountPayments::Table.into_iden(),
        Sessions::Table.into_iden(),
        SessionMacaroonPermissions::Table.into_iden(),
        SessionMacaroonCaveats::Table.into_iden(),
        SessionFeatureConfigs::Table.into_iden(),
        SessionPrivacyFlags::Table.into_iden(),
        Kvstores::Table.into_iden(),
        PrivacyPairs::Table.into_iden(),
    ]
    .iter()
    .map(|t| t.to_string())
    .collect()
}

/// The key-value to SQL code step. Use it through [`migrate`](crate::migrate), or with
/// [`sqldb::migrate::Migrator::code_step`].
pub struct KvToSql<'a> {
    source: Arc<MigrationSource>,
    /// The source's facts, read when the run opened it.
    facts: SourceFacts,
    opts: Options,
    progress: Option<&'a dyn Progress>,
    mode: StepMode<'a>,
    damage: Arc<Damage>,
    report: Mutex<Option<(Report, Vec<Problem>)>>,
    /// Later schema steps the run applied in its transaction.
    later_steps: Mutex<Vec<i64>>,
}

/// What the step copies from, and what follows the copy.
enum StepMode<'a> {
    /// A database no process holds: proved whole by `check` beside the
    /// copy (stopped through `cancel` when the step ends first); every
    /// damaged record counted, the run refused unless damage is accepted;
    /// the later schema steps and the migration record in the same
    /// transaction (docs/design.md §5.1).
    Offline {
        check: tokio::sync::Mutex<Option<CheckHandle>>,
        cancel: Arc<AtomicBool>,
    },
    /// A running node's database: the copy staged, then caught up with
    /// the writes made meanwhile (docs/design.md §7.2).
    Live(&'a online::Online),
}

impl fmt::Debug for KvToSql<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvToSql")
            .field("source", &self.source.path())
            .finish()
    }
}

impl<'a> KvToSql<'a> {
    /// The code step reading from `source`, whose facts are `facts`,
    /// proving it whole as it goes.
    pub fn new(
        source: Arc<MigrationSource>,
        facts: SourceFacts,
        opts: Options,
        progress: Option<&'a dyn Progress>,
    ) -> Self {
        let cancel = Arc::new(AtomicBool::new(false));
        let check = {
            let (source, cancel) = (source.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || check::check_source(&source, &cancel))
        };
        KvToSql {
            damage: Arc::new(Damage::new(true).reading(source.clone(), facts.writes_lost)),
            source,
            facts,
            opts,
            progress,
            mode: StepMode::Offline {
                check: tokio::sync::Mutex::new(Some(check)),
                cancel,
            },
            report: Mutex::new(None),
            later_steps: Mutex::new(Vec::new()),
        }
    }

    /// The code step of an online migration: it reads the live database
    /// through the node's handle, then catches up with the writes made
    /// meanwhile and pauses writers for the cutover (docs/design.md §7.2).
    /// The whole-source check of an offline run needs a still source, so it
    /// does not run; every record copied or replayed is decoded and
    /// compared instead.
    pub(crate) fn live(
        source: Arc<MigrationSource>,
        facts: SourceFacts,
        opts: Options,
        progress: Option<&'a dyn Progress>,
        online: &'a online::Online,
    ) -> Self {
        KvToSql {
            damage: Arc::new(Damage::new(false)),
            source,
            facts,
            opts,
            progress,
            mode: StepMode::Live(online),
            report: Mutex::new(None),
            later_steps: Mutex::new(Vec::new()),
        }
    }

    /// The later schema steps this online step applied in its transaction.
    pub(crate) fn later_steps(&self) -> Vec<i64> {
        self.later_steps
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// The report of the run and the damage it accepted, if the step ran
    /// and succeeded.
    pub fn take_report(&self) -> Option<(Report, Vec<Problem>)> {
        self.report.lock().ok().and_then(|mut r| r.take())
    }

    async fn migrate_all(&self, tx: &mut dyn Tx) -> Result<(Report, Vec<Problem>), Error> {
        // The cache size is the connection's, not the transaction's: set it
        // for the load and put the old value back whatever happens.
        let kib = i64::from(self.opts.sqlite_cache_mib) * 1024;
        let previous = tx.set_cache_size_kib(kib).await?;
        if matches!(self.mode, StepMode::Offline { .. }) && tx.dialect() == sqldb::Dialect::Sqlite {
            // Connection-wide too; turned back on after the runner returns,
            // whatever it returned (`resume_checkpoints`).
            tx.execute_script("PRAGMA wal_autocheckpoint = 0").await?;
        }
        let result = self.migrate_stores(tx).await;
        if let Some(previous) = previous {
            // After a failure the migration's error is the one to report.
            let restored = tx.restore_cache_size(previous).await;
            if result.is_ok() {
                restored?;
            }
        }
        result
    }

    async fn migrate_stores(&self, tx: &mut dyn Tx) -> Result<(Report, Vec<Problem>), Error> {
        let started = Instant::now();
        match &self.mode {
            StepMode::Live(online) => {
                // An online copy starts with what makes it a staged copy,
                // then commits in pieces (docs/design.md §7.3, §7.4).
                let live = self.begin_live_copy(tx, online).await?;
                let mut report = self.copy_stores(tx, Some(&live), started).await?;
                analyze(tx).await?;
                // The writes made during the copy, replayed while writers
                // run; what comes after goes into the second, short
                // transaction.
                let mut deltas = replay::Deltas::default();
                online::catch_up(tx, online, &mut deltas, &mut online::CatchUp::default()).await?;
                online::recount(&mut report, &deltas);
                report.duration = started.elapsed();
                online.copied_in(live.stats());
                online.committing_copy();
                Ok((report, Vec::new()))
            }
            StepMode::Offline { check, .. } => {
                let report = self.copy_stores(tx, None, started).await?;
                // Every later schema step over the data just loaded, in this
                // transaction: a step the data cannot hold (an index over a
                // value too long for it) fails the run here, before anything
                // is committed or tombstoned, never at the next open of a
                // database whose source is retired (docs/design.md §5.8). An
                // online copy applies them at its start (`begin_live_copy`).
                let t = Instant::now();
                let later = crate::schema::runner()
                    .apply_steps_after(tx, KV_TO_SQL_VERSION)
                    .await
                    .map_err(Error::Schema)?;
                tracing::info!(steps = ?later, duration_ms = millis(t), "later schema steps applied over the migrated data");
                if let Ok(mut l) = self.later_steps.lock() {
                    *l = later;
                }
                // Planner statistics are gathered after the commit, beside
                // the tombstone (`gather_statistics`).
                let problems = self.weigh_damage(check).await?;
                // In the same transaction as the data: the tombstone is
                // pending until it is written after the commit.
                let facts = &self.facts;
                let record =
                    MigrationRecord::new(facts, facts.write_seq, report.clone(), problems.clone());
                record::insert(tx, &record).await?;
                Ok((report, problems))
            }
        }
    }

    /// Every store, in the order their links need, each read, written,
    /// read back and compared; foreign keys are checked once, after the
    /// load, not row by row (docs/design.md §5.7): every link they check
    /// was resolved to an id loaded before it, so the check cannot fail on
    /// data.
    async fn copy_stores(
        &self,
        tx: &mut dyn Tx,
        live: Option<&live::Live>,
        started: Instant,
    ) -> Result<Report, Error> {
        let ends = EndsAtTotal::new(self.progress);
        // The migration writes only into an empty database.
        ensure_empty(tx, &store_tables()).await?;
        let linked = linked_tables();
        let linked: Vec<&str> = linked.iter().map(String::as_str).collect();
        let foreign_keys = sqldb::deferred::set_aside_foreign_keys(tx, &linked).await?;
        let ctx = CopyCtx {
            source: &self.source,
            chunk_size: self.opts.chunk_size.max(1),
            progress: ends.observer(),
            damage: &self.damage,
            live,
        };
        let accounts = store(&ends, "accounts", accounts::migrate(tx, ctx)).await?;
        // Sessions reference accounts: after them, in the same transaction.
        // An online copy leaves what it read inconsistently to the replay.
        let sessions = store(&ends, "sessions", sessions::migrate(tx, ctx)).await?;
        // Kv-stores and privacy pairs are scoped by session group.
        let firewall = store(&ends, "firewall", firewall::migrate(tx, ctx)).await?;
        // Actions link to sessions and accounts: last.
        let actions = store(&ends, "actions", actions::migrate(tx, ctx)).await?;
        foreign_keys.rebuild(tx).await?;
        Ok(Report {
            accounts,
            sessions,
            firewall,
            actions,
            duration: started.elapsed(),
        })
    }

    /// After an offline copy: is the source whole? Every damaged record
    /// the copy skipped, every problem the whole-source check found, and
    /// every page a salvaging read passed over; an error unless damage is
    /// accepted, the accepted damage otherwise.
    async fn weigh_damage(
        &self,
        check: &tokio::sync::Mutex<Option<CheckHandle>>,
    ) -> Result<Vec<Problem>, Error> {
        let handle = check.lock().await.take();
        let checked = match handle {
            Some(h) => h.await.map_err(|e| Error::ReaderStopped {
                tree: "(whole database)",
                reason: e.to_string(),
            })??,
            None => Vec::new(),
        };
        // Damaged records first: a refusal names the first few of them.
        let mut problems = self.damage.take();
        problems.extend(checked);
        // Pages a salvaging read skipped (the check and the copy read the
        // same trees, so each is listed once).
        let mut listed: std::collections::HashSet<Problem> = problems.iter().cloned().collect();
        for d in self.source.salvaged() {
            let p = Problem {
                tree: d.tree.clone().unwrap_or_default(),
                what: d.what(),
            };
            if listed.insert(p.clone()) {
                problems.push(p);
            }
        }
        if !problems.is_empty() && !self.opts.accept_damaged {
            return Err(Error::DamagedSource {
                path: self.source.path().to_path_buf(),
                problems,
            });
        }
        Ok(problems)
    }
}

/// PostgreSQL plans from table statistics, and a freshly loaded table has
/// none until autovacuum gets to it: a node's first listings could then
/// walk a whole index (docs/design.md §5.7). An online copy runs ANALYZE
/// inside its first transaction, over every table (the database holds
/// only nodestore's, §3.3). SQLite's planner needs no statistics.
async fn analyze(tx: &mut dyn Tx) -> Result<(), Error> {
    if tx.dialect() == sqldb::Dialect::Postgres {
        let t = Instant::now();
        tx.execute_script("ANALYZE").await?;
        tracing::debug!(duration_ms = millis(t), "planner statistics gathered");
    }
    Ok(())
}

/// SQLite: an offline run writes the whole database into the write-ahead
/// log in one transaction, and SQLite's automatic checkpoint would then
/// copy all of it into the database file inside the committing call (the
/// commit took 1.6 s at L with it, 0.8 without). The step turns automatic checkpoints off
/// for its connection (`KvToSql::migrate_all`), as an online copy does
/// for its pieces; this turns them back on once the runner has returned,
/// whatever it returned (and after an online switch), so the node's
/// writes checkpoint as usual. A failure is logged: the log then only
/// grows until the next open.
pub(crate) async fn resume_checkpoints(db: &sqldb::Db) {
    if db.dialect() != sqldb::Dialect::Sqlite {
        return;
    }
    let resumed = db
        .write(|tx| {
            Box::pin(async move { tx.execute_script("PRAGMA wal_autocheckpoint = 1000").await })
        })
        .await;
    if let Err(e) = resumed {
        tracing::warn!(error = %e, "SQLite's automatic checkpoints could not be turned back on");
    }
}

/// After an offline copy's commit on SQLite: the log the commit left is
/// copied into the database file by a `PASSIVE` checkpoint on a connection
/// of its own, beside the target's proof and the tombstone, as
/// [`gather_statistics`] is on PostgreSQL (docs/design.md §5.7). The data
/// is durable in the log already; a failure is logged.
pub(crate) async fn checkpoint_committed(db: &sqldb::Db) {
    #[cfg(feature = "sqlite")]
    if let Some(sqlite) = db.as_sqlite() {
        let t = Instant::now();
        match sqlite.checkpoint_passive().await {
            Ok((log, moved)) => tracing::debug!(
                duration_ms = millis(t),
                log_pages = log,
                checkpointed = moved,
                "the migration's write-ahead log checkpointed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the migration's write-ahead log could not be checkpointed")
            }
        }
    }
    let _ = db;
}

/// After an offline copy's commit: ANALYZE of every table, on a
/// connection of its own, while the same run proves the target and opens
/// the key-value database for the tombstone (docs/design.md §5.7), so the
/// server's pass over the tables costs the run no time of its own. The
/// run returns only after it, so a node that opens afterwards plans with
/// statistics. Statistics are not data: a failure is logged, never the
/// run's, and autovacuum gathers them later.
pub(crate) async fn gather_statistics(db: &sqldb::Db) {
    if db.dialect() != sqldb::Dialect::Postgres {
        return;
    }
    let t = Instant::now();
    let gathered = db
        .write(|tx| Box::pin(async move { tx.execute_script("ANALYZE").await }))
        .await;
    match gathered {
        Ok(()) => tracing::debug!(duration_ms = millis(t), "planner statistics gathered"),
        Err(e) => tracing::warn!(
            error = %e,
            "planner statistics were not gathered after the commit; autovacuum gathers them later"
        ),
    }
}

impl KvToSql<'_> {
    /// The start of an online copy, in its first piece: the later schema
    /// steps (the list indexes, built while the node's writers still run,
    /// not after the switch, when SQL writes would wait for them; the
    /// staging table), and the row that marks the copy as staged, so that
    /// every piece committed after it is a staged copy, which no open
    /// serves and the next migration discards (docs/design.md §7.3).
    async fn begin_live_copy(
        &self,
        tx: &mut dyn Tx,
        online: &online::Online,
    ) -> Result<live::Live, Error> {
        let later = crate::schema::runner()
            .apply_steps_after(tx, KV_TO_SQL_VERSION)
            .await
            .map_err(Error::Schema)?;
        tracing::info!(steps = ?later, "later schema steps applied in the migration's transaction");
        if let Ok(mut l) = self.later_steps.lock() {
            *l = later;
        }
        if tx.dialect() == sqldb::Dialect::Sqlite {
            // The copy checkpoints its pieces itself, and the last commit
            // is in the pause: no automatic checkpoint in a committing call
            // (the log is checkpointed after the switch, online.rs).
            tx.execute_script("PRAGMA wal_autocheckpoint = 0").await?;
        }
        let source = &*self.source;
        staging::insert(
            tx,
            &StagedCopy {
                source_path: source.path().display().to_string(),
                source_identity: self.facts.identity,
                staged_at: sqldb::time::truncate_micros(Utc::now()),
            },
        )
        .await?;
        Ok(live::Live::new(
            online.protocol.journal().clone(),
            tx.dialect(),
        ))
    }
}

impl KvToSql<'_> {
    /// Stops the whole-source check of an offline step, if it still runs.
    fn cancel_check(&self) {
        if let StepMode::Offline { cancel, .. } = &self.mode {
            cancel.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for KvToSql<'_> {
    fn drop(&mut self) {
        // A check still running has nobody to report to.
        self.cancel_check();
    }
}

#[async_trait]
impl CodeStep for KvToSql<'_> {
    async fn run(&self, tx: &mut dyn Tx) -> Result<(), BoxError> {
        match self.migrate_all(tx).await {
            Ok(done) => {
                if let Ok(mut r) = self.report.lock() {
                    *r = Some(done);
                }
                Ok(())
            }
            Err(e) => {
                self.cancel_check();
                // Boxed whole, so the caller gets the typed error back.
                Err(Box::new(e))
            }
        }
    }
}

fn store_span(store: &'static str) -> tracing::Span {
    tracing::info_span!("store", store)
}

/// Records per second as a whole number.
fn rate(records: u64, since: Instant) -> u64 {
    let secs = since.elapsed().as_secs_f64();
    if secs > 0.0 {
        (records as f64 / secs) as u64
    } else {
        records
    }
}

/// One store's part of the data step, in its span: when it ends, its
/// progress is told at its count and its rate logged.
async fn store<R: Copied>(
    ends: &EndsAtTotal<'_>,
    name: &'static str,
    copy: impl std::future::Future<Output = Result<R, Error>>,
) -> Result<R, Error> {
    let t = Instant::now();
    let report = copy.instrument(store_span(name)).await?;
    ends.finish(name)?;
    let records = report.records();
    tracing::info!(
        store = name,
        records,
        duration_ms = millis(t),
        records_per_s = rate(records, t),
        "store migrated"
    );
    Ok(report)
}

/// A store's report: how many records it moved, for the log.
trait Copied {
    fn records(&self) -> u64;
}

impl Copied for AccountsReport {
    fn records(&self) -> u64 {
        self.accounts + self.invoices + self.payments
    }
}

impl Copied for SessionsReport {
    fn records(&self) -> u64 {
        self.sessions
    }
}

impl Copied for FirewallReport {
    fn records(&self) -> u64 {
        self.kv_entries + self.privacy_pairs
    }
}

impl Copied for ActionsReport {
    fn records(&self) -> u64 {
        self.actions
    }
}
