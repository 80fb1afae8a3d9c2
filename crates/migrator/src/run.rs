//! The run: lock, source facts, plan, discard a staged copy, data step,
//! finish (docs/design.md §5).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sqldb::Db;

use sqldb::schema::KV_TO_SQL_VERSION;
use tombstone::{KvDb, KvOptions, MigrationSource};
use tracing::Instrument;

use crate::error::schema_failure;
use crate::online::{self, Online};
use crate::outcome::outcome_name;
use crate::plan::target_facts;
use crate::retire::finish;
use crate::shared::millis;
use crate::staging;
use crate::{
    DataState, Error, Failure, KvToSql, MigrationRecord, Options, Outcome, OutcomeKind, Plan,
    Progress, SourceFacts, TargetFacts, TombstoneState, plan,
};

/// Runs `f` on the blocking pool (sled and file locks block).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::ReaderStopped {
            tree: "(opening)",
            reason: e.to_string(),
        })?
}

/// Migrates the key-value database at `kv_path` into `db` and tombstones
/// it; see the crate docs for the steps.
///
/// Idempotent: run again after any failure or interruption, it finishes
/// what is left (a pending tombstone, later schema steps) or starts over
/// when no data was kept.
///
/// Errors: a [`Failure`] says why and whether data may have been written.
/// An [`Outcome`] is returned only when the data is in SQL and verified.
pub async fn migrate(
    kv_path: &Path,
    db: &Db,
    opts: &Options,
    progress: Option<&dyn Progress>,
) -> Result<Outcome, Failure> {
    let span = tracing::info_span!(
        "migration",
        kv = %kv_path.display(),
        target = %db.describe(),
        dry_run = opts.dry_run
    );
    let started = Instant::now();
    let result = run(db, opts, Mode::Offline { path: kv_path }, progress)
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match &result {
        Ok(outcome) => {
            let rows: u64 = outcome.report.table_counts().iter().map(|(_, n)| n).sum();
            tracing::info!(
                outcome = outcome_name(outcome.kind),
                rows,
                duration_ms = millis(started),
                "migration finished"
            );
            match &outcome.tombstone {
                TombstoneState::Written(_) => {
                    tracing::info!("the key-value database is tombstoned")
                }
                TombstoneState::Pending(reason) => tracing::info!(
                    %reason,
                    "the data is in SQL but the tombstone is pending; it is retried at the next run or open"
                ),
                TombstoneState::NotWritten => {}
                TombstoneState::SledCannotOpen(reason) => tracing::info!(
                    %reason,
                    "the key-value database is left as it was: sled cannot open it, so no node can run on it"
                ),
            }
            if let Some(reason) = &outcome.unfinished_steps {
                tracing::info!(%reason, "later schema steps failed; they are retried at the next open");
            }
        }
        // Returned to the caller, who reports it: logged for the trail.
        Err(f) => tracing::debug!(
            error = %f.error,
            data_written = match f.data {
                DataState::NotWritten => "no",
                DataState::MaybeCommitted => "maybe",
            },
            "migration did not happen"
        ),
    }
    result
}

/// How a run reads its source and finishes (docs/design.md §5, §7): the
/// steps before the data step are the same for both.
pub(crate) enum Mode<'a> {
    /// No process holds the key-value database: the migration reads it
    /// itself, the data in one transaction; it may be a dry run.
    Offline {
        /// The key-value database.
        path: &'a Path,
    },
    /// A running node's database, read through its handle while it keeps
    /// writing: the copy staged, then the writes made since, then the
    /// switch with writers paused.
    Live {
        /// The node's handle.
        kv: &'a KvDb,
        /// The protocol shared with the node's routed stores.
        online: &'a Online,
        /// Routes the node's stores to SQL; called with writers paused,
        /// right after the tombstone.
        switch: Box<dyn FnOnce() + Send + 'a>,
    },
}

impl<'a> Mode<'a> {
    fn path(&self) -> &'a Path {
        match self {
            Mode::Offline { path } => path,
            Mode::Live { kv, .. } => kv.path(),
        }
    }

    /// The node's handle, for a live run.
    fn live_handle(&self) -> Option<&'a KvDb> {
        match self {
            Mode::Offline { .. } => None,
            Mode::Live { kv, .. } => Some(kv),
        }
    }
}

/// Opens the source: through the node's handle when it runs (`live`), or
/// read by the migration itself, past pages that cannot be read; what was
/// skipped joins the problems, which refuse the run unless damage is
/// accepted (docs/sled-format.md §6), so one run lists all the damage.
async fn open_source(
    path: &Path,
    live: Option<&KvDb>,
    opts: &Options,
) -> Result<Arc<MigrationSource>, Error> {
    if let Some(kv) = live {
        return Ok(Arc::new(kv.as_source()?));
    }
    let kv = KvOptions {
        salvage: true,
        ..opts.kv.clone()
    };
    let path = path.to_path_buf();
    Ok(Arc::new(
        blocking(move || Ok(MigrationSource::open(&path, &kv)?)).await?,
    ))
}

/// The one run of both modes: the source locked and opened, the facts of
/// both sides, the decision, a staged copy discarded, then the mode's data
/// step and finish.
pub(crate) async fn run(
    db: &Db,
    opts: &Options,
    mode: Mode<'_>,
    progress: Option<&dyn Progress>,
) -> Result<Outcome, Failure> {
    // 1. The source, locked against other migrations, then opened.
    // (`mode` is not borrowed across an await: its switch need not be Sync.)
    let (path, live) = (mode.path(), mode.live_handle());
    let _lock = {
        let (path, wait) = (path.to_path_buf(), opts.lock_wait);
        blocking(move || Ok(tombstone::lock_for_migration(&path, wait)?)).await?
    };
    let source = open_source(path, live, opts).await?;
    let facts = SourceFacts::of(&source)?;
    // 2. The target, before anything is written.
    let (target, _) = target_facts(db).await?;
    tracing::info!(
        write_seq = facts.write_seq,
        target_migrated = target.migrated,
        "source and target inspected"
    );
    // 3. The decision.
    let earlier = match plan(&facts, &target, opts.force) {
        Plan::Refuse(e) => {
            tracing::debug!(error = %e, "migration refused before any write");
            return Err(e.into());
        }
        Plan::AlreadyMigrated(record) => Some(record),
        Plan::Migrate => None,
    };
    match (mode, earlier) {
        (Mode::Offline { .. }, Some(record)) => {
            tracing::info!("the target already holds this database's data; finishing what is left");
            // sled holds its lock until every handle is gone.
            drop(source);
            Ok(finish_earlier(db, opts, &facts, *record).await)
        }
        (Mode::Live { online, switch, .. }, Some(record)) => {
            online::finish_earlier(db, opts, online, &facts, *record, switch).await
        }
        (Mode::Offline { .. }, None) => {
            discard_staged(db, &target, &facts, opts).await?;
            copy_offline(db, opts, source, &facts, progress).await
        }
        (Mode::Live { online, switch, .. }, None) => {
            discard_staged(db, &target, &facts, opts).await?;
            online::copy_and_cut_over(db, opts, online, source, &facts, progress, switch).await
        }
    }
}

/// The target already holds the source's data (an earlier run committed
/// it): finishes what that run left, or for a dry run says so.
async fn finish_earlier(
    db: &Db,
    opts: &Options,
    facts: &SourceFacts,
    record: MigrationRecord,
) -> Outcome {
    if opts.dry_run {
        return Outcome {
            kind: OutcomeKind::AlreadyMigrated,
            report: record.report,
            applied_steps: Vec::new(),
            tombstone: TombstoneState::NotWritten,
            unfinished_steps: None,
            accepted_damage: record.accepted_damage,
        };
    }
    finish(
        db,
        opts,
        facts,
        record,
        OutcomeKind::AlreadyMigrated,
        Vec::new(),
    )
    .await
}

/// The offline data step (4) and what follows it: every store in one
/// transaction, checked whole, then the proof, the tombstone and the later
/// steps.
async fn copy_offline(
    db: &Db,
    opts: &Options,
    source: Arc<MigrationSource>,
    facts: &SourceFacts,
    progress: Option<&dyn Progress>,
) -> Result<Outcome, Failure> {
    tracing::info!("migrating every store in one transaction");
    let step = KvToSql::new(source.clone(), facts.clone(), opts.clone(), progress);
    let mut applied = Vec::new();
    let runner = crate::schema::runner()
        .code_step(KV_TO_SQL_VERSION, &step)
        .lock_wait(opts.lock_wait)
        // The later steps run inside the code step, over its data.
        .through(KV_TO_SQL_VERSION);
    let run = if opts.dry_run {
        runner
            .rehearse(db)
            .await
            .map(|r| applied = r.applied.iter().map(|s| s.version).collect())
    } else {
        runner.run_into(db, &mut applied).await
    };
    crate::step::resume_checkpoints(db).await;
    if let Err(e) = run {
        if applied.contains(&KV_TO_SQL_VERSION) && !opts.dry_run {
            // The data step committed and the runner failed after it (the
            // server went away as it released its lock, say): the data is
            // in SQL, and what is left is the proof and the tombstone,
            // which say themselves whether they could be done. Reporting
            // "not written" here would leave the operator believing SQL
            // holds nothing.
            tracing::warn!(error = %e, "the data step committed; the schema runner failed after it");
        } else {
            let (error, data) = schema_failure(e);
            return Err(Failure {
                error,
                data,
                schema_steps: applied,
            });
        }
    }
    applied.extend(step.later_steps());
    let copied = step.take_report();
    if let Some((r, _)) = &copied {
        let rows: u64 = r.table_counts().iter().map(|(_, n)| n).sum();
        tracing::info!(
            rows,
            duration_ms = u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
            rows_per_s = (rows as f64 / r.duration.as_secs_f64().max(1e-9)) as u64,
            "data step {}",
            if opts.dry_run {
                "rehearsed and rolled back"
            } else {
                "committed"
            }
        );
    }
    // sled holds its lock until every handle is gone.
    drop(step);
    drop(source);
    let Some((report, accepted_damage)) = copied else {
        // The step was recorded by a runner that raced this one (it took
        // the target's lock first): decide again, now that it is migrated.
        return match plan(facts, &target_facts(db).await?.0, opts.force) {
            Plan::AlreadyMigrated(record) if !opts.dry_run => Ok(finish(
                db,
                opts,
                facts,
                *record,
                OutcomeKind::AlreadyMigrated,
                applied,
            )
            .await),
            Plan::Refuse(e) => Err(e.into()),
            _ => Err(Error::Invalid {
                record: "the key-value step".into(),
                reason: "it was recorded without running".into(),
            }
            .into()),
        };
    };
    if opts.dry_run {
        return Ok(Outcome {
            kind: OutcomeKind::Rehearsed,
            report,
            applied_steps: applied,
            tombstone: TombstoneState::NotWritten,
            unfinished_steps: None,
            accepted_damage,
        });
    }
    let record = MigrationRecord::new(facts, facts.write_seq, report, accepted_damage);
    let (outcome, (), ()) = tokio::join!(
        finish(db, opts, facts, record, OutcomeKind::Migrated, applied),
        crate::step::gather_statistics(db),
        crate::step::checkpoint_committed(db),
    );
    Ok(outcome)
}

/// Before a migration the plan allowed: drops the staged copy of an online
/// migration that did not finish, so the run starts from an empty database
/// (docs/design.md §7.3). A dry run writes nothing, so it refuses instead.
pub(crate) async fn discard_staged(
    db: &Db,
    target: &TargetFacts,
    source: &SourceFacts,
    opts: &Options,
) -> Result<(), Failure> {
    let dry_run = opts.dry_run;
    let Some(staged) = &target.staged else {
        return Ok(());
    };
    if dry_run {
        return Err(Error::UnfinishedOnlineMigration {
            target: target.description.clone(),
            source_path: staged.source_path.clone(),
            what: "a migration without --dry-run discards the copy and starts again",
        }
        .into());
    }
    staging::discard(db, source.identity, opts.force).await?;
    Ok(())
}
