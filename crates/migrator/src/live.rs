//! What a copy of a live database needs besides the source (an online
//! migration, docs/design.md §7): the journal, to leave what it read
//! inconsistently to the replay, and, on SQLite, the pieces it commits in.
//!
//! An online copy is a staged copy (§7.3): nobody serves it until the
//! cutover, so it need not be one transaction. On SQLite one transaction
//! of gigabytes is a commit that syncs gigabytes and a checkpoint that
//! copies them again, each while the node's writers wait for their own
//! fsyncs on the same disk. So the copy commits whenever it has written
//! [`PIECE_BYTES`] of new pages since its last piece, and checkpoints right
//! after, on its own connection, with nothing else reading: the checkpoint
//! is complete, so the next transaction writes the log from its start
//! again (the file is reused, not truncated and grown again). No single
//! commit or checkpoint carries more than about a piece (plus the pages the
//! cache still holds), whatever the database's size and the disk's speed
//! (§7.4). The staging
//! row is written first, so a run that dies between pieces leaves a
//! staged copy that the next migration discards. PostgreSQL streams its
//! log while a transaction runs and spreads its checkpoints itself, so
//! its commit is small already: it keeps one transaction.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqldb::{Dialect, Sql, Tx};

use crate::Error;
use crate::journal::Journal;

/// The write-ahead log a piece may grow to before it is committed and
/// checkpointed.
pub(crate) const PIECE_BYTES: u64 = 64 << 20;

/// See the module docs.
pub(crate) struct Live {
    /// The online migration's journal.
    pub(crate) journal: Arc<Journal>,
    /// True on SQLite, where the copy commits in pieces.
    pieces: bool,
    /// The database's size in pages at the last piece, and its page size.
    at_piece: Mutex<Option<(i64, i64)>>,
    stats: Mutex<PieceStats>,
}

/// How the copy was committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PieceStats {
    /// Commits before the copy's last (0: one transaction).
    pub pieces: u32,
    /// The most new pages a piece committed and checkpointed, in bytes.
    pub largest_bytes: u64,
}

impl Live {
    pub(crate) fn new(journal: Arc<Journal>, dialect: Dialect) -> Live {
        Live {
            journal,
            pieces: dialect == Dialect::Sqlite,
            at_piece: Mutex::new(None),
            stats: Mutex::new(PieceStats::default()),
        }
    }

    /// Between two chunks (or two index builds) of the copy: when it has
    /// written a piece of new pages, commits what `tx` wrote, checkpoints
    /// the log into the database file, and goes on in a new transaction on
    /// the same connection.
    pub(crate) async fn boundary(&self, tx: &mut dyn Tx) -> Result<(), Error> {
        if !self.pieces {
            return Ok(());
        }
        // The size the transaction sees, its own pages included: a bulk
        // copy appends, so its growth is what the piece will commit.
        let pages = pragma(tx, "PRAGMA page_count").await?;
        let known = *self.at_piece.lock().unwrap_or_else(|p| p.into_inner());
        let (base, page_size) = match known {
            Some(k) => k,
            None => {
                let k = (pages, pragma(tx, "PRAGMA page_size").await?);
                *self.at_piece.lock().unwrap_or_else(|p| p.into_inner()) = Some(k);
                k
            }
        };
        let bytes = u64::try_from((pages - base).max(0) * page_size).unwrap_or(0);
        if bytes < crate::hooks::piece_bytes(PIECE_BYTES) {
            return Ok(());
        }
        let t = Instant::now();
        tx.execute_script("COMMIT").await?;
        tx.query_sql(Sql::fixed("PRAGMA wal_checkpoint(PASSIVE)", Vec::new()))
            .await?;
        tx.execute_script("BEGIN IMMEDIATE").await?;
        *self.at_piece.lock().unwrap_or_else(|p| p.into_inner()) = Some((pages, page_size));
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        s.pieces += 1;
        s.largest_bytes = s.largest_bytes.max(bytes);
        tracing::debug!(
            piece = s.pieces,
            bytes,
            duration_ms = crate::shared::millis(t),
            "a piece of the copy committed and checkpointed"
        );
        Ok(())
    }

    /// How the copy was committed so far.
    pub(crate) fn stats(&self) -> PieceStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A pragma's one integer.
async fn pragma(tx: &mut dyn Tx, sql: &'static str) -> Result<i64, Error> {
    let rows = tx.query_sql(Sql::fixed(sql, Vec::new())).await?;
    match rows.first() {
        Some(r) => Ok(r.i64(0)?),
        None => Err(Error::Invalid {
            record: "the SQLite database".into(),
            reason: format!("{sql} answered nothing"),
        }),
    }
}
