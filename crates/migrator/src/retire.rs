//! After the commit: the proof from a fresh connection, the tombstone, the
//! later schema steps, and the retry of a pending tombstone.

use std::path::PathBuf;

use chrono::Utc;

use sqldb::{Db, DbError};
use tombstone::{KvOptions, Mark, MigrationSource, Status};

use crate::record::{self, MigrationRecord, records};
use crate::run::blocking;
use std::sync::Arc;

use crate::outcome::{PendingTombstone, ProofError};
use crate::{
    Error, MarkWriter, Options, Outcome, OutcomeKind, Report, SourceFacts, TombstoneState,
};

/// After the data is committed: prove it from a fresh connection, write the
/// tombstone, apply the later steps. Never fails: whatever happens now, the
/// data is safe in SQL, and what is left is said in the outcome.
pub(crate) async fn finish(
    db: &Db,
    opts: &Options,
    source: &SourceFacts,
    record: MigrationRecord,
    kind: OutcomeKind,
    applied: Vec<i64>,
) -> Outcome {
    let tombstone = retire(db, opts, source, &record, true).await;
    later_steps(db, opts, record, kind, applied, tombstone).await
}

/// Proves the committed data from a fresh connection and writes the
/// tombstone (or says why it is pending). `counts`: the proof also counts
/// every table against the record; an online migration, whose proof runs
/// while writers wait, proves the record only (its rows were read back
/// and compared inside the transaction, docs/design.md §7.2).
pub(crate) async fn retire(
    db: &Db,
    opts: &Options,
    source: &SourceFacts,
    record: &MigrationRecord,
    counts: bool,
) -> TombstoneState {
    let retired = match &source.status {
        // Retired and recorded so by an earlier run: nothing to write.
        Status::Tombstoned(m) if !record.tombstone_pending => Some(m.clone()),
        _ => None,
    };
    match retired {
        Some(mark) => TombstoneState::Written(mark),
        None => match prove_target(db, source, record, counts).await {
            Err(e) => TombstoneState::Pending(PendingTombstone::Unproved(Arc::new(e))),
            Ok(identity) => match &source.sled_cannot_open {
                // sled would write to the log and then panic: the source is
                // left as it is (docs/design.md §5.6).
                Some(why) => {
                    let _ = record::clear_pending(db, source.identity).await;
                    TombstoneState::SledCannotOpen(why.clone())
                }
                None => write_tombstone(db, opts, source, identity).await,
            },
        },
    }
}

/// Applies the schema steps after the data step, and says what was done.
pub(crate) async fn later_steps(
    db: &Db,
    opts: &Options,
    record: MigrationRecord,
    kind: OutcomeKind,
    mut applied: Vec<i64>,
    tombstone: TombstoneState,
) -> Outcome {
    let mut later = Vec::new();
    let unfinished = match crate::schema::runner()
        .lock_wait(opts.lock_wait)
        .run_into(db, &mut later)
        .await
    {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    };
    applied.extend(later);
    Outcome {
        kind,
        report: record.report,
        applied_steps: applied,
        tombstone,
        unfinished_steps: unfinished,
        accepted_damage: record.accepted_damage,
    }
}

/// Retires the source, naming the target, then clears the record's pending
/// flag.
async fn write_tombstone(
    db: &Db,
    opts: &Options,
    source: &SourceFacts,
    identity: [u8; 16],
) -> TombstoneState {
    let mark = Mark {
        marked_at: Utc::now(),
        nodestore_version: env!("CARGO_PKG_VERSION").to_owned(),
        target: db.describe(),
        target_identity: Some(identity),
    };
    let marker = opts.marker.clone();
    let (path, m) = (source.path.clone(), mark.clone());
    match tokio::task::spawn_blocking(move || marker.mark(&path, &m)).await {
        Ok(Ok(())) => {
            // Marked. If the record cannot be updated now, the next open's
            // retry finds the mark in place and clears it.
            let _ = record::clear_pending(db, source.identity).await;
            TombstoneState::Written(mark)
        }
        Ok(Err(e)) => TombstoneState::Pending(PendingTombstone::MarkFailed(Arc::new(e))),
        Err(e) => TombstoneState::Pending(PendingTombstone::MarkStopped(Arc::new(e))),
    }
}

/// Opens the target afresh, as a node would, and checks that it holds this
/// source's migration record and as many rows per store as were migrated.
/// Returns the target's identity.
async fn prove_target(
    db: &Db,
    source: &SourceFacts,
    record: &MigrationRecord,
    counts: bool,
) -> Result<[u8; 16], ProofError> {
    let fresh = db.reopen().await.map_err(ProofError::Connect)?;
    let pre = crate::schema::runner()
        .preflight(&fresh)
        .await
        .map_err(ProofError::Preflight)?;
    let identity = pre.identity.ok_or(ProofError::NoIdentity)?;
    let found = records(&fresh)
        .await
        .map_err(|e| ProofError::Records(Box::new(e)))?
        .into_iter()
        .rev()
        .find(|r| r.source_identity == source.identity)
        .ok_or(ProofError::NoRecord)?;
    if found.source_write_seq != record.source_write_seq {
        return Err(ProofError::OtherWrite {
            found: found.source_write_seq,
            expected: record.source_write_seq,
        });
    }
    if !counts {
        return Ok(identity);
    }
    let counts = fresh
        .read(|tx| {
            Box::pin(async move {
                let mut out = Vec::new();
                for (table, _) in Report::default().table_counts() {
                    out.push((
                        table,
                        crate::shared::count_rows(tx, sea_query::Alias::new(table)).await?,
                    ));
                }
                Ok::<_, DbError>(out)
            })
        })
        .await
        .map_err(ProofError::Count)?;
    for ((table, got), (_, want)) in counts.into_iter().zip(found.report.table_counts()) {
        if got != want {
            return Err(ProofError::RowCount { table, got, want });
        }
    }
    Ok(identity)
}

/// What [`retry_pending_tombstone`] did for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// The key-value database is now tombstoned.
    Marked {
        /// The database.
        path: String,
    },
    /// It still could not be marked; the record stays pending.
    Failed {
        /// The database.
        path: String,
        /// Why.
        reason: String,
    },
    /// The database at that path is not the one that was migrated (another
    /// identity, or a later write sequence), or is gone; it is left alone
    /// and the record stays pending.
    NotTheSource {
        /// The path.
        path: String,
    },
}

/// Writes every tombstone the SQL side records as pending, for sources
/// still at the path, identity and write sequence they were migrated with.
/// Idempotent.
pub async fn retry_pending_tombstone(
    db: &Db,
    marker: &dyn MarkWriter,
) -> Result<Vec<Retry>, Error> {
    let mut out = Vec::new();
    let pending: Vec<MigrationRecord> = records(db)
        .await?
        .into_iter()
        .filter(|r| r.tombstone_pending)
        .collect();
    if pending.is_empty() {
        return Ok(out);
    }
    let identity = crate::schema::runner()
        .preflight(db)
        .await
        .map_err(Error::Schema)?
        .identity;
    for r in pending {
        let path = PathBuf::from(&r.source_path);
        let here = {
            let p = path.clone();
            blocking(move || {
                let id = tombstone::identity(&p)?;
                let status = tombstone::status(&p)?;
                let seq = match status {
                    Some(Status::Live(_)) => MigrationSource::open(&p, &KvOptions::default())?
                        .write_seq()?
                        .unwrap_or(0),
                    _ => 0,
                };
                Ok((id, status, seq))
            })
            .await
        };
        match here {
            Err(e) => out.push(Retry::Failed {
                path: r.source_path.clone(),
                reason: e.to_string(),
            }),
            // Marked by an earlier run whose record update did not land.
            Ok((Some(id), Some(Status::Tombstoned(m)), _))
                if id == r.source_identity
                    && m.target_identity.is_some()
                    && m.target_identity == identity =>
            {
                record::clear_pending(db, r.source_identity).await?;
                out.push(Retry::Marked {
                    path: r.source_path.clone(),
                });
            }
            Ok((Some(id), Some(Status::Live(_)), seq))
                if id == r.source_identity && seq == r.source_write_seq =>
            {
                let mark = Mark {
                    marked_at: r.migrated_at,
                    nodestore_version: r.nodestore_version.clone(),
                    target: db.describe(),
                    target_identity: identity,
                };
                match marker.mark(&path, &mark) {
                    Ok(()) => {
                        record::clear_pending(db, r.source_identity).await?;
                        out.push(Retry::Marked {
                            path: r.source_path.clone(),
                        });
                    }
                    Err(e) => out.push(Retry::Failed {
                        path: r.source_path.clone(),
                        reason: e.to_string(),
                    }),
                }
            }
            Ok(_) => out.push(Retry::NotTheSource {
                path: r.source_path.clone(),
            }),
        }
    }
    for r in &out {
        match r {
            Retry::Marked { path } => tracing::info!(kv = %path, "pending tombstone written"),
            Retry::Failed { path, reason } => {
                tracing::info!(kv = %path, %reason, "pending tombstone still cannot be written")
            }
            Retry::NotTheSource { path } => tracing::info!(
                kv = %path,
                "pending tombstone not written: the database there is not the one migrated"
            ),
        }
    }
    Ok(out)
}
