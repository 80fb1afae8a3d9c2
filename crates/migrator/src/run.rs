//! The run: lock, source facts, plan, discard a staged copy, data step,
//! finish (docs/design.md §5).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use sqldb::Db;
use sqldb::migrate::Migrator;
use sqldb::schema::KV_TO_SQL_VERSION;
use tombstone::{KvOptions, MigrationSource};
use tracing::Instrument;

use crate::error::schema_failure;
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
    let result = migrate_logged(kv_path, db, opts, progress)
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

async fn migrate_logged(
    kv_path: &Path,
    db: &Db,
    opts: &Options,
    progress: Option<&dyn Progress>,
) -> Result<Outcome, Failure> {
    // 1. The source, locked against other migrations, then opened.
    let _lock = {
        let (path, wait) = (kv_path.to_path_buf(), opts.lock_wait);
        blocking(move || Ok(tombstone::lock_for_migration(&path, wait)?)).await?
    };
    let source = {
        // The source is read past pages that cannot be read; what was
        // skipped joins the problems, which refuse the run unless damage is
        // accepted (docs/sled-format.md §6): one run lists all the damage.
        let kv = KvOptions {
            salvage: true,
            ..opts.kv.clone()
        };
        let path = kv_path.to_path_buf();
        Arc::new(blocking(move || Ok(MigrationSource::open(&path, &kv)?)).await?)
    };
    let facts = SourceFacts {
        path: kv_path.to_path_buf(),
        identity: source
            .identity()
            .map_err(Error::from)?
            .ok_or_else(|| Error::NoIdentity(kv_path.to_path_buf()))?,
        write_seq: source.write_seq().map_err(Error::from)?.unwrap_or(0),
        status: source.status().clone(),
    };
    // 2. The target, before anything is written.
    let target = target_facts(db).await?;
    tracing::info!(
        write_seq = facts.write_seq,
        target_migrated = target.0.migrated,
        "source and target inspected"
    );
    // 3. The decision.
    match plan(&facts, &target.0, opts.force) {
        Plan::Refuse(e) => {
            tracing::debug!(error = %e, "migration refused before any write");
            return Err(e.into());
        }
        Plan::AlreadyMigrated(record) => {
            tracing::info!("the target already holds this database's data; finishing what is left");
            drop(source);
            if opts.dry_run {
                return Ok(Outcome {
                    kind: OutcomeKind::AlreadyMigrated,
                    report: record.report.clone(),
                    applied_steps: Vec::new(),
                    tombstone: TombstoneState::NotWritten,
                    unfinished_steps: None,
                    accepted_damage: record.accepted_damage.clone(),
                });
            }
            return Ok(finish(
                kv_path,
                db,
                opts,
                &facts,
                *record,
                OutcomeKind::AlreadyMigrated,
                Vec::new(),
            )
            .await);
        }
        Plan::Migrate => {}
    }
    discard_staged(db, &target.0, &facts, opts).await?;
    // 4. The data step.
    tracing::info!("migrating every store in one transaction");
    let step = KvToSql::new(source.clone(), facts.write_seq, opts.clone(), progress);
    let mut applied = Vec::new();
    let run = if opts.dry_run {
        Migrator::new()
            .code_step(KV_TO_SQL_VERSION, &step)
            .lock_wait(opts.lock_wait)
            // The later steps run inside the code step, over its data.
            .through(KV_TO_SQL_VERSION)
            .rehearse(db)
            .await
            .map(|r| applied = r.applied.iter().map(|s| s.version).collect())
    } else {
        Migrator::new()
            .code_step(KV_TO_SQL_VERSION, &step)
            .lock_wait(opts.lock_wait)
            .through(KV_TO_SQL_VERSION)
            .run_into(db, &mut applied)
            .await
    };
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
    let report = step.take_report();
    if let Some((r, _)) = &report {
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
    let Some((report, accepted_damage)) = report else {
        // The step was recorded by a runner that raced this one (it took
        // the target's lock first): decide again, now that it is migrated.
        return match plan(&facts, &target_facts(db).await?.0, opts.force) {
            Plan::AlreadyMigrated(record) if !opts.dry_run => Ok(finish(
                kv_path,
                db,
                opts,
                &facts,
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
    let record = MigrationRecord {
        source_path: kv_path.display().to_string(),
        source_identity: facts.identity,
        source_write_seq: facts.write_seq,
        migrated_at: Utc::now(),
        nodestore_version: env!("CARGO_PKG_VERSION").to_owned(),
        tombstone_pending: true,
        report,
        accepted_damage,
    };
    Ok(finish(
        kv_path,
        db,
        opts,
        &facts,
        record,
        OutcomeKind::Migrated,
        applied,
    )
    .await)
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
