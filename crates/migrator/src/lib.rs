//! The one-way migration of a node's key-value (sled) data into SQL.
//!
//! # What it does
//! [`migrate`] opens the key-value database read-only
//! ([`tombstone::MigrationSource`], so a retired database can be migrated
//! again if the SQL database is lost), runs the schema steps on the SQL
//! database with [`KvToSql`] as the code step (version
//! [`sqldb::schema::KV_TO_SQL_VERSION`]), and once that transaction has
//! committed, tombstones the key-value database.
//!
//! # Contract
//! - **All or nothing.** Every store is migrated inside the code step's one
//!   transaction. Any failure (a record that does not decode, a constraint,
//!   a record that reads back different, an error from the progress
//!   callback) rolls it all back: no migrated rows, the step unrecorded, the
//!   key-value database untouched and live, so the next run starts clean.
//! - **Verified.** Records are streamed in key order in chunks; each chunk is
//!   written with multi-row statements and explicit ids (SQL ids follow key
//!   order), then read back with a few range queries and compared with the
//!   key-value originals field by field, timestamps normalised to
//!   microseconds. A difference aborts the migration with an error naming
//!   the record and listing the differing fields.
//! - **Bounded memory.** sled is read on tokio's blocking pool, which hands
//!   chunks to the SQL side through a channel of two: at most a few chunks
//!   are in memory, however large the database.
//! - **Into an empty target only.** The code step refuses SQL tables that
//!   already hold rows.
//! - **Tombstone after commit.** The key-value database is marked only after
//!   the commit; a run that applied nothing (the step was already recorded)
//!   does not mark anything.
//!
//! Order of stores: accounts, then sessions (which reference accounts),
//! then the firewall's kv-stores and privacy pairs (scoped by session
//! group), then the actions (which link to sessions and accounts).
#![warn(
    clippy::unwrap_used,
    reason = "a panic in a storage library is a bug; errors are values"
)]

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use sqldb::migrate::{CodeStep, MigrateError, Migrator};
use sqldb::schema::KV_TO_SQL_VERSION;
use sqldb::{BoxError, Db, DbError, Tx};
use tombstone::{KvOptions, Mark, MigrationSource};

mod accounts;
mod actions;
mod diff;
mod feed;
mod firewall;
mod sessions;

pub use accounts::AccountsReport;
pub use actions::ActionsReport;
pub use firewall::FirewallReport;
pub use sessions::SessionsReport;

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key-value database could not be opened or read.
    #[error("key-value database: {0}")]
    Kv(#[from] tombstone::Error),
    /// A key-value record did not decode.
    #[error("cannot decode tree {tree}, key {key}: {reason}")]
    Decode {
        /// The tree.
        tree: &'static str,
        /// The key, in hex.
        key: String,
        /// Why.
        reason: String,
    },
    /// The key-value layout has a bucket or value where none may be.
    #[error("unexpected layout in tree {tree} at {path}: {reason}")]
    Layout {
        /// The tree.
        tree: &'static str,
        /// Where: the bucket path and key.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A record is valid in the key-value store but cannot be stored in SQL.
    #[error("cannot migrate {record}: {reason}")]
    Invalid {
        /// The record.
        record: String,
        /// Why.
        reason: String,
    },
    /// A migrated record read back different from the original.
    #[error("migrated {record} does not match the key-value original:\n{diff}")]
    Mismatch {
        /// The record.
        record: String,
        /// The differing fields, one per line.
        diff: String,
    },
    /// The SQL target already holds data.
    #[error(
        "the SQL table {table} already holds rows; the migration only writes into an empty database"
    )]
    TargetNotEmpty {
        /// The table.
        table: &'static str,
    },
    /// The progress callback asked to stop.
    #[error("stopped by the progress callback: {0}")]
    Aborted(BoxError),
    /// A SQL call failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The schema runner refused or failed outside the code step.
    #[error(transparent)]
    Schema(MigrateError),
    /// The data committed but the tombstone could not be written; the SQL
    /// database is authoritative and the caller must retry the mark.
    #[error("migrated into {target}, but the key-value database could not be tombstoned: {source}")]
    TombstonePending {
        /// The SQL target.
        target: String,
        /// Why the mark failed.
        source: tombstone::Error,
    },
}

/// A progress report, sent after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressEvent {
    /// The store being migrated (`"accounts"`, …).
    pub store: &'static str,
    /// Records of that store migrated and verified so far.
    pub done: u64,
    /// Records of that store in total (an estimate from the tree size).
    pub total: u64,
}

/// Receives progress; returning `Err` stops the migration and rolls it back.
pub trait Progress: Send + Sync {
    /// Called after each verified chunk.
    fn progress(&self, event: ProgressEvent) -> Result<(), BoxError>;
}

/// Settings of a migration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Records per chunk (written, read back and compared together).
    pub chunk_size: usize,
    /// How sled is opened (cache size).
    pub kv: KvOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_size: 512,
            kv: KvOptions::default(),
        }
    }
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The accounts store.
    pub accounts: AccountsReport,
    /// The sessions store.
    pub sessions: SessionsReport,
    /// The firewall's kv-stores and privacy pairs.
    pub firewall: FirewallReport,
    /// The actions store.
    pub actions: ActionsReport,
    /// Time from the start of the code step to its end (before commit).
    pub duration: Duration,
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The report, or `None` when the SQL database had the step already and
    /// nothing was migrated.
    pub report: Option<Report>,
    /// The schema steps this run applied (versions).
    pub applied_steps: Vec<i64>,
    /// The tombstone written, if any.
    pub tombstone: Option<Mark>,
}

/// The key-value to SQL code step. Use it with
/// [`sqldb::migrate::Migrator::code_step`], or through [`migrate`].
pub struct KvToSql<'a> {
    source: &'a MigrationSource,
    opts: Options,
    progress: Option<&'a dyn Progress>,
    report: Mutex<Option<Report>>,
    error: Mutex<Option<Error>>,
}

impl std::fmt::Debug for KvToSql<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvToSql")
            .field("source", &self.source.path())
            .finish()
    }
}

impl<'a> KvToSql<'a> {
    /// The code step reading from `source`.
    pub fn new(
        source: &'a MigrationSource,
        opts: Options,
        progress: Option<&'a dyn Progress>,
    ) -> Self {
        KvToSql {
            source,
            opts,
            progress,
            report: Mutex::new(None),
            error: Mutex::new(None),
        }
    }

    /// The report of the run, if the step ran and succeeded.
    pub fn take_report(&self) -> Option<Report> {
        self.report.lock().ok().and_then(|mut r| r.take())
    }

    /// The typed error of a failed run (the runner only keeps its text).
    fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }

    async fn migrate_all(&self, tx: &mut dyn Tx) -> Result<Report, Error> {
        let started = Instant::now();
        let accounts = accounts::migrate(self.source, tx, &self.opts, self.progress).await?;
        // Sessions reference accounts: after them, in the same transaction.
        let sessions = sessions::migrate(self.source, tx, &self.opts, self.progress).await?;
        // Kv-stores and privacy pairs are scoped by session group.
        let firewall = firewall::migrate(self.source, tx, &self.opts, self.progress).await?;
        // Actions link to sessions and accounts: last.
        let actions = actions::migrate(self.source, tx, &self.opts, self.progress).await?;
        Ok(Report {
            accounts,
            sessions,
            firewall,
            actions,
            duration: started.elapsed(),
        })
    }
}

#[async_trait]
impl CodeStep for KvToSql<'_> {
    async fn run(&self, tx: &mut dyn Tx) -> Result<(), BoxError> {
        match self.migrate_all(tx).await {
            Ok(report) => {
                if let Ok(mut r) = self.report.lock() {
                    *r = Some(report);
                }
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                if let Ok(mut slot) = self.error.lock() {
                    *slot = Some(e);
                }
                Err(text.into())
            }
        }
    }
}

/// Migrates the key-value database at `kv_path` into `db` and tombstones it.
///
/// Applies every schema step; the code step migrates all stores in its one
/// transaction. When the SQL database already has the step, nothing is
/// migrated and nothing is marked.
///
/// Errors: see [`Error`]. On any error before the commit, nothing changed
/// in SQL beyond schema steps, and the key-value database is untouched.
pub async fn migrate(
    kv_path: &Path,
    db: &Db,
    opts: &Options,
    progress: Option<&dyn Progress>,
) -> Result<Outcome, Error> {
    let source = MigrationSource::open(kv_path, &opts.kv)?;
    let step = KvToSql::new(&source, opts.clone(), progress);
    let run = Migrator::new()
        .code_step(KV_TO_SQL_VERSION, &step)
        .run(db)
        .await;
    let applied_steps = match run {
        Ok(r) => r.applied.iter().map(|s| s.version).collect(),
        Err(e) => {
            // The code step's own typed error, rather than the runner's text.
            if matches!(e, MigrateError::StepFailed { version, .. } if version == KV_TO_SQL_VERSION)
                && let Some(typed) = step.take_error()
            {
                return Err(typed);
            }
            return Err(Error::Schema(e));
        }
    };
    let report = step.take_report();
    // sled holds its lock until every handle is gone.
    drop(step);
    drop(source);
    let mut tombstone = None;
    if report.is_some() {
        let target = db.describe();
        let mark = Mark {
            marked_at: Utc::now(),
            nodestore_version: env!("CARGO_PKG_VERSION").to_owned(),
            target: target.clone(),
        };
        tombstone::mark(kv_path, &mark)
            .map_err(|source| Error::TombstonePending { target, source })?;
        tombstone = Some(mark);
    }
    Ok(Outcome {
        report,
        applied_steps,
        tombstone,
    })
}
