//! What a copy of a live database needs besides the source (an online
//! migration, docs/design.md §7): the journal, to leave what it read
//! inconsistently to the replay, and, on SQLite, the pieces it commits in.
//!
//! An online copy is a staged copy (§7.3): nobody serves it until the
//! cutover, so it need not be one transaction. On SQLite one transaction
//! of gigabytes is a commit that syncs gigabytes and a checkpoint that
//! copies them again, each while the node's writers wait for their own
//! fsyncs on the same disk. So the copy commits whenever its write-ahead
//! log passes [`PIECE_BYTES`], and checkpoints (truncating the log) right
//! after: no single commit or checkpoint carries more than about that,
//! whatever the database's size and the disk's speed (§7.4). The staging
//! row is written first, so a run that dies between pieces leaves a
//! staged copy that the next migration discards. PostgreSQL streams its
//! log while a transaction runs and spreads its checkpoints itself, so
//! its commit is small already: it keeps one transaction.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqldb::{Dialect, Sql, Tx};

use crate::Error;
use crate::replay::Journal;

/// The write-ahead log a piece may grow to before it is committed and
/// checkpointed.
pub(crate) const PIECE_BYTES: u64 = 64 << 20;

/// See the module docs.
pub(crate) struct Live {
    /// The online migration's journal.
    pub(crate) journal: Arc<Journal>,
    /// SQLite's write-ahead log, when the copy commits in pieces.
    wal: Option<PathBuf>,
    stats: Mutex<PieceStats>,
}

/// How the copy was committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PieceStats {
    /// Commits before the copy's last (0: one transaction).
    pub pieces: u32,
    /// The largest write-ahead log a piece committed and checkpointed.
    pub largest_bytes: u64,
}

impl Live {
    pub(crate) fn new(journal: Arc<Journal>, dialect: Dialect, wal: Option<PathBuf>) -> Live {
        Live {
            journal,
            wal: wal.filter(|_| dialect == Dialect::Sqlite),
            stats: Mutex::new(PieceStats::default()),
        }
    }

    /// Between two chunks (or two index builds) of the copy: when the log
    /// has grown past a piece, commits what `tx` wrote, checkpoints the
    /// log into the database file and truncates it, and goes on in a new
    /// transaction on the same connection.
    pub(crate) async fn boundary(&self, tx: &mut dyn Tx) -> Result<(), Error> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        let bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
        if bytes < crate::hooks::piece_bytes(PIECE_BYTES) {
            return Ok(());
        }
        let t = Instant::now();
        tx.execute_script("COMMIT").await?;
        tx.query_sql(Sql::fixed("PRAGMA wal_checkpoint(TRUNCATE)", Vec::new()))
            .await?;
        tx.execute_script("BEGIN IMMEDIATE").await?;
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        s.pieces += 1;
        s.largest_bytes = s.largest_bytes.max(bytes);
        tracing::debug!(
            piece = s.pieces,
            wal_bytes = bytes,
            duration_ms = crate::millis(t),
            "a piece of the copy committed and checkpointed"
        );
        Ok(())
    }

    /// How the copy was committed so far.
    pub(crate) fn stats(&self) -> PieceStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}
