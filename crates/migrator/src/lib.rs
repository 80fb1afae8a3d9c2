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

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use sqldb::migrate::{CodeStep, MigrateError, Migrator};
use sqldb::schema::KV_TO_SQL_VERSION;
use sqldb::{BoxError, Db, DbError, Tx};
use tombstone::{KvOptions, Mark, MigrationSource, Status};

mod accounts;
mod actions;
mod diff;
mod feed;
mod firewall;
mod record;
mod sessions;

pub use accounts::AccountsReport;
pub use actions::ActionsReport;
pub use firewall::FirewallReport;
pub use record::{MigrationRecord, records};
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
    /// The key-value database was already migrated into another SQL
    /// database; migrating it again would fork the node's data.
    #[error(
        "the key-value database {path} was already migrated into {target} on {when}; \
         migrating it into {here} as well would fork the data (force it only if {target} is lost)",
        target = .mark.target,
        when = .mark.marked_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    MigratedElsewhere {
        /// The key-value database.
        path: String,
        /// Its tombstone.
        mark: Mark,
        /// The SQL database this run was asked to fill.
        here: String,
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
    /// [`Error::MigratedElsewhere`].
    pub force: bool,
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
            },
            dry_run: false,
            force: false,
            marker: Arc::new(TombstoneMark),
            sqlite_cache_mib: 16,
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

impl Report {
    /// The counts, one `store kind=count` line per store.
    pub fn summary(&self) -> String {
        let a = &self.accounts;
        let s = &self.sessions;
        let f = &self.firewall;
        let x = &self.actions;
        format!(
            "accounts accounts={} invoices={} payments={} last_indexes={}\n\
             sessions sessions={} duplicates_dropped={} account_links_dropped={}\n\
             firewall kv_entries={} kv_entries_skipped={} privacy_pairs={} privacy_pairs_skipped={}\n\
             actions actions={} session_links_dropped={} account_links_dropped={}",
            a.accounts,
            a.invoices,
            a.payments,
            u8::from(a.last_indexes.is_some()) * 2,
            s.sessions,
            s.duplicates_dropped,
            s.account_links_dropped,
            f.kv_entries,
            f.kv_entries_skipped,
            f.privacy_pairs,
            f.privacy_pairs_skipped,
            x.actions,
            x.session_links_dropped,
            x.account_links_dropped,
        )
    }
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The report, or `None` when the SQL database had the step already and
    /// nothing was migrated.
    pub report: Option<Report>,
    /// The schema steps this run applied (versions); for a dry run, the
    /// steps it would apply.
    pub applied_steps: Vec<i64>,
    /// True for a dry run: nothing was kept.
    pub dry_run: bool,
    /// The tombstone written, if any.
    pub tombstone: Option<Mark>,
    /// Why the tombstone could not be written, when it could not: the data
    /// is committed and the SQL side records the mark as pending, to be
    /// retried by [`retry_pending_tombstone`].
    pub tombstone_pending: Option<String>,
}

/// The key-value to SQL code step. Use it with
/// [`sqldb::migrate::Migrator::code_step`], or through [`migrate`].
pub struct KvToSql<'a> {
    source: Option<&'a MigrationSource>,
    opts: Options,
    progress: Option<&'a dyn Progress>,
    report: Mutex<Option<Report>>,
    error: Mutex<Option<Error>>,
}

impl std::fmt::Debug for KvToSql<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvToSql")
            .field("source", &self.source.map(MigrationSource::path))
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
            source: Some(source),
            opts,
            progress,
            report: Mutex::new(None),
            error: Mutex::new(None),
        }
    }

    /// The code step of a node that has no key-value database: it migrates
    /// nothing and records nothing but the (empty) migration record table.
    /// Never use it when a key-value database may exist.
    pub fn without_source() -> KvToSql<'static> {
        KvToSql {
            source: None,
            opts: Options::default(),
            progress: None,
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

    async fn migrate_all(&self, tx: &mut dyn Tx) -> Result<Option<Report>, Error> {
        if self.source.is_none() {
            return self.migrate_stores(tx).await;
        }
        // The cache size is the connection's, not the transaction's: set it
        // for the load and put the old value back whatever happens.
        let kib = i64::from(self.opts.sqlite_cache_mib) * 1024;
        let previous = tx.set_cache_size_kib(kib).await?;
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

    async fn migrate_stores(&self, tx: &mut dyn Tx) -> Result<Option<Report>, Error> {
        record::create(tx).await?;
        let Some(source) = self.source else {
            return Ok(None);
        };
        let started = Instant::now();
        let accounts = accounts::migrate(source, tx, &self.opts, self.progress).await?;
        // Sessions reference accounts: after them, in the same transaction.
        let sessions = sessions::migrate(source, tx, &self.opts, self.progress).await?;
        // Kv-stores and privacy pairs are scoped by session group.
        let firewall = firewall::migrate(source, tx, &self.opts, self.progress).await?;
        // Actions link to sessions and accounts: last.
        let actions = actions::migrate(source, tx, &self.opts, self.progress).await?;
        let report = Report {
            accounts,
            sessions,
            firewall,
            actions,
            duration: started.elapsed(),
        };
        // In the same transaction as the data: the tombstone is pending
        // until it is written after the commit.
        record::insert(
            tx,
            &MigrationRecord {
                source_path: source.path().display().to_string(),
                source_identity: source.identity()?,
                migrated_at: sqldb::time::truncate_micros(Utc::now()),
                nodestore_version: env!("CARGO_PKG_VERSION").to_owned(),
                tombstone_pending: true,
                summary: report.summary(),
            },
        )
        .await?;
        Ok(Some(report))
    }
}

#[async_trait]
impl CodeStep for KvToSql<'_> {
    async fn run(&self, tx: &mut dyn Tx) -> Result<(), BoxError> {
        match self.migrate_all(tx).await {
            Ok(report) => {
                if let Ok(mut r) = self.report.lock() {
                    *r = report;
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
/// migrated and nothing is marked. With [`Options::dry_run`] everything is
/// migrated and verified, then rolled back.
///
/// Errors: see [`Error`]. On any error before the commit, nothing changed
/// in SQL beyond schema steps, and the key-value database is untouched. A
/// tombstone that cannot be written after the commit is not an error: see
/// [`Outcome::tombstone_pending`].
pub async fn migrate(
    kv_path: &Path,
    db: &Db,
    opts: &Options,
    progress: Option<&dyn Progress>,
) -> Result<Outcome, Error> {
    let source = MigrationSource::open(kv_path, &opts.kv)?;
    let here = db.describe();
    if let Status::Tombstoned(mark) = source.status()
        && mark.target != here
        && !opts.force
    {
        return Err(Error::MigratedElsewhere {
            path: kv_path.display().to_string(),
            mark: mark.clone(),
            here,
        });
    }
    let step = KvToSql::new(&source, opts.clone(), progress);
    let migrator = Migrator::new().code_step(KV_TO_SQL_VERSION, &step);
    let run = if opts.dry_run {
        migrator.rehearse(db).await
    } else {
        migrator.run(db).await
    };
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
    let mut outcome = Outcome {
        report,
        applied_steps,
        dry_run: opts.dry_run,
        tombstone: None,
        tombstone_pending: None,
    };
    if outcome.report.is_some() && !opts.dry_run {
        let mark = Mark {
            marked_at: Utc::now(),
            nodestore_version: env!("CARGO_PKG_VERSION").to_owned(),
            target: here,
        };
        match opts.marker.mark(kv_path, &mark) {
            Ok(()) => {
                record::clear_pending(db, &kv_path.display().to_string()).await?;
                outcome.tombstone = Some(mark);
            }
            Err(e) => outcome.tombstone_pending = Some(e.to_string()),
        }
    }
    Ok(outcome)
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
    /// The database at that path is not the one that was migrated (or is
    /// gone); it is left alone and the record stays pending.
    NotTheSource {
        /// The path.
        path: String,
    },
}

/// Writes every tombstone the SQL side records as pending; see
/// [`Outcome::tombstone_pending`]. Idempotent.
pub async fn retry_pending_tombstone(
    db: &Db,
    marker: &dyn MarkWriter,
) -> Result<Vec<Retry>, Error> {
    let mut out = Vec::new();
    for r in records(db)
        .await?
        .into_iter()
        .filter(|r| r.tombstone_pending)
    {
        let path = Path::new(&r.source_path);
        let same = match tombstone::identity(path) {
            Ok(Some(id)) => r.source_identity == Some(id),
            Ok(None) => false,
            Err(e) => {
                out.push(Retry::Failed {
                    path: r.source_path.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        if !same {
            out.push(Retry::NotTheSource {
                path: r.source_path.clone(),
            });
            continue;
        }
        let mark = Mark {
            marked_at: r.migrated_at,
            nodestore_version: r.nodestore_version.clone(),
            target: db.describe(),
        };
        match marker.mark(path, &mark) {
            Ok(()) => {
                record::clear_pending(db, &r.source_path).await?;
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
    Ok(out)
}
