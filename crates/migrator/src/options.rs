//! The settings of a run, and who writes the tombstone.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tombstone::{KvOptions, Mark};

/// Writes the tombstone after the commit. The default is
/// [`tombstone::mark`]; tests substitute one that fails.
pub trait MarkWriter: fmt::Debug + Send + Sync {
    /// Retires the key-value database at `path`.
    fn mark(&self, path: &Path, mark: &Mark) -> Result<(), tombstone::Error>;
}

/// [`tombstone::mark`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TombstoneMark;

impl MarkWriter for TombstoneMark {
    fn mark(&self, path: &Path, mark: &Mark) -> Result<(), tombstone::Error> {
        tombstone::mark(path, mark)
    }
}

/// Settings of a migration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Records per chunk (written, read back and compared together).
    pub chunk_size: usize,
    /// How sled is opened (cache size: 16 MiB by default).
    pub kv: KvOptions,
    /// Migrate and verify inside a transaction, then roll everything back
    /// and mark nothing.
    pub dry_run: bool,
    /// Migrate a key-value database whose tombstone names another SQL
    /// target (that target was lost). Off by default: see
    /// [`Error::MigratedElsewhere`](crate::Error::MigratedElsewhere).
    pub force: bool,
    /// Migrate a damaged source: what is readable moves, and what is
    /// missing is recorded in the migration record. Off by default: see
    /// [`Error::DamagedSource`](crate::Error::DamagedSource).
    pub accept_damaged: bool,
    /// How long to wait for another migration of the same source, or for
    /// another schema runner on the target.
    pub lock_wait: Duration,
    /// Who writes the tombstone.
    pub marker: Arc<dyn MarkWriter>,
    /// SQLite's page cache for the migration, in MiB (the connection's own
    /// setting is restored afterwards). SQLite's default of about 2 MiB
    /// thrashes on the random blob keys of the unique indexes during a bulk
    /// load; ignored on PostgreSQL.
    pub sqlite_cache_mib: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_size: 512,
            // One pass over each tree needs little cache: measured at scale L,
            // 64 MiB bought 10 % on the actions' lookups for 75 MiB of RSS.
            kv: KvOptions {
                cache_capacity: 16 << 20,
                ..KvOptions::default()
            },
            dry_run: false,
            force: false,
            accept_damaged: false,
            lock_wait: Duration::from_secs(600),
            marker: Arc::new(TombstoneMark),
            sqlite_cache_mib: 16,
        }
    }
}
