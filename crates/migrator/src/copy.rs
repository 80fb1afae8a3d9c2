//! The one copy loop every store's part of the migration runs
//! (docs/design.md §5.1): a tree read on the blocking pool ([`Feed`]), each
//! chunk handed to the store's [`WriteChunk`] (which writes and proves
//! it), then, between chunks, a piece boundary of an online
//! copy and a progress event. The stores differ only in how they read a
//! tree and write a chunk; the loop, the check that the target is empty,
//! exist here once (and the sequences past the ids a copy wrote,
//! [`crate::shared::sequence_past`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sea_query::{DynIden, Expr, Query};
use sqldb::{Tx, TxExt};
use tombstone::MigrationSource;

use crate::feed::{Damage, Feed, Sink};
use crate::live::Live;
use crate::{Error, Progress, ProgressEvent};

/// What every copy of a tree shares: the run's settings and observers.
#[derive(Clone, Copy)]
pub(crate) struct CopyCtx<'a> {
    /// The key-value database read.
    pub(crate) source: &'a MigrationSource,
    /// Records per chunk.
    pub(crate) chunk_size: usize,
    /// Told after each chunk.
    pub(crate) progress: Option<&'a dyn Progress>,
    /// The run's damage bookkeeping, shared with the readers.
    pub(crate) damage: &'a Arc<Damage>,
    /// An online copy's piece boundaries and journal.
    pub(crate) live: Option<&'a Live>,
}

impl<'a> CopyCtx<'a> {
    /// The context of a second read of the source that diagnoses a failed
    /// proof (`crate::digest::Proof::Diagnose`): no progress is told, and
    /// `damage` is its own, made by [`Damage::second_read`], so the damaged
    /// records the first read skipped are skipped again without being
    /// recorded twice.
    pub(crate) fn second_read<'b>(&self, damage: &'b Arc<Damage>) -> CopyCtx<'b>
    where
        'a: 'b,
    {
        CopyCtx {
            damage,
            progress: None,
            ..*self
        }
    }
}

/// A store's writer of one tree's chunks.
#[async_trait]
pub(crate) trait WriteChunk<T>: Send {
    /// Writes `chunk` and proves it: read back compared, or added to the
    /// digest a whole table is proved by (`crate::digest::Proof`); a
    /// second read that diagnoses a failed proof only compares. Returns
    /// the records of this tree done so far, or `None` for an item that
    /// holds no records (no progress is told, no piece boundary taken
    /// after it).
    async fn write(&mut self, tx: &mut dyn Tx, chunk: T) -> Result<Option<u64>, Error>;
}

/// One tree to copy: its name, the store name progress reports it under,
/// and about how many records it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TreeCopy {
    /// The key-value tree (named in errors).
    pub(crate) tree: &'static str,
    /// The name progress events carry.
    pub(crate) store: &'static str,
    /// About how many records (an estimate; a bar ends at the count).
    pub(crate) total: u64,
}

/// Copies one tree: `read` runs on the blocking pool and sends chunks,
/// `writer` writes each; the reader is stopped and waited for whatever
/// happens, and an error of either side ends the copy.
pub(crate) async fn copy_tree<T: Send + 'static>(
    tx: &mut dyn Tx,
    ctx: CopyCtx<'_>,
    what: TreeCopy,
    read: impl FnOnce(Sink<T>) + Send + 'static,
    writer: &mut dyn WriteChunk<T>,
) -> Result<(), Error> {
    let mut feed = Feed::spawn(what.tree, ctx.damage, read);
    // Where the copy's time goes, for its log line: waiting for the
    // reader's next chunk (a copy bound by its reader) or in the writer
    // (one bound by the database, or by the CPU the writer needs).
    let (mut waited, mut writing) = (Duration::ZERO, Duration::ZERO);
    let result = async {
        loop {
            let asked = Instant::now();
            let Some(chunk) = feed.next().await else {
                waited += asked.elapsed();
                break;
            };
            let got = Instant::now();
            waited += got - asked;
            let written = writer.write(tx, chunk?).await;
            writing += got.elapsed();
            let Some(done) = written? else {
                continue;
            };
            if let Some(live) = ctx.live {
                live.boundary(tx).await?;
            }
            if let Some(p) = ctx.progress {
                p.progress(ProgressEvent {
                    store: what.store,
                    done,
                    total: Ord::max(what.total, done),
                })
                .map_err(Error::Aborted)?;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    feed.finish().await;
    tracing::debug!(
        tree = what.tree,
        waited_for_reader_ms = waited.as_millis() as u64,
        writing_ms = writing.as_millis() as u64,
        copied = result.is_ok(),
        "copy of a tree ended"
    );
    result
}

/// Refuses a target whose tables already hold rows: the migration only
/// writes into an empty database.
pub(crate) async fn ensure_empty(tx: &mut dyn Tx, tables: &[DynIden]) -> Result<(), Error> {
    for table in tables {
        let any = tx
            .query_opt(
                &Query::select()
                    .expr(Expr::cust("1"))
                    .from(table.clone())
                    .limit(1)
                    .to_owned(),
            )
            .await?;
        if any.is_some() {
            return Err(Error::TargetNotEmpty {
                table: table.to_string(),
            });
        }
    }
    Ok(())
}
