//! The one-way migration of a node's key-value (sled) data into SQL.
//!
//! # What it does
//! [`migrate`] moves every store of a key-value database into a SQL
//! database, proves it arrived, and only then retires (tombstones) the
//! key-value database. It never reports success it did not achieve, never
//! forks a node's data into two SQL databases, and never retires data it
//! did not prove it moved (docs/design.md §5).
//!
//! # The steps of a run
//! 1. **The source**: the migration lock in the key-value directory is
//!    taken (a second migration of the same database waits for the first,
//!    then finds the work done), and the database is opened read-only
//!    ([`tombstone::MigrationSource`]); one held by a running node is
//!    reported as such.
//! 2. **The target, before any write**: [`Migrator::preflight`] refuses a
//!    database holding tables nodestore did not create, or one written by a
//!    newer nodestore.
//! 3. **The decision** ([`plan`]), by identity: every SQL database has one
//!    (schema step 1), every key-value database too. A target that already
//!    holds this source's data at the same write sequence is *already
//!    migrated*; one that holds other data refuses, naming both; a source
//!    tombstoned into another SQL database refuses unless forced.
//! 4. **The data step**: schema steps up to the key-value step
//!    ([`KV_TO_SQL_VERSION`]), the data in that step's one transaction,
//!    every record read back and compared, while the whole source is proved
//!    consistent ([`check`]); then every later schema step over that data,
//!    in the same transaction. Any failure rolls everything back.
//! 5. **Proving the target**: after the commit the target is opened afresh,
//!    as a node opens it, and the migration record and per-store counts are
//!    read back.
//! 6. **The tombstone**, naming the target's identity; a mark that cannot be
//!    written stays pending in the migration record and is retried.
//! 7. **Steps a later nodestore adds** (a database migrated before they
//!    existed); one that fails leaves the data safe in SQL and is applied
//!    by the next run or open.
//!
//! An online migration ([`online`]) runs the same steps while the node
//! keeps writing, the data in two transactions: a copy committed as staged
//! ([`staging`]), then the writes made since; a staged copy left by a run
//! that died is discarded by the next run of the same source, before
//! step 4.
//!
//! The result is typed: a [`Failure`] says whether any data may have been
//! written ([`DataState`]), an [`Outcome`] what was done and what is left.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqldb::migrate::{CodeStep, MigrateError, Migrator, Preflight};
use sqldb::schema::KV_TO_SQL_VERSION;
use sqldb::{BoxError, Db, DbError, ErrorKind, Tx};
use tokio::task::JoinHandle;
use tombstone::{KvOptions, Mark, MigrationSource, Status};
use tracing::Instrument;

mod accounts;
mod actions;
pub mod check;
mod diff;
mod feed;
mod firewall;
pub mod hooks;
mod live;
pub mod online;
mod protocol;
mod record;
pub mod replay;
pub mod rules;
mod sessions;
pub mod staging;

pub use accounts::AccountsReport;
pub use actions::ActionsReport;
pub use check::Problem;
pub use firewall::FirewallReport;
pub use live::PieceStats;
pub use record::{MigrationRecord, records};
pub use sessions::SessionsReport;
pub use staging::StagedCopy;

/// Why a migration failed or was refused.
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
    /// A record breaks the data contract every backend enforces
    /// (docs/design.md §4.1): refused on every target alike.
    #[error("cannot migrate it (the same on every SQL backend): {0}")]
    Contract(String),
    /// A migrated record read back different from the original.
    #[error("migrated {record} does not match the key-value original:\n{diff}")]
    Mismatch {
        /// The record.
        record: String,
        /// The differing fields, one per line.
        diff: String,
    },
    /// The SQL target already holds data in a table the migration fills.
    #[error(
        "the SQL table {table} already holds rows; the migration only writes into an empty database"
    )]
    TargetNotEmpty {
        /// The table.
        table: &'static str,
    },
    /// The source is damaged or inconsistent; nothing was written.
    #[error(
        "the key-value database {path} is damaged or inconsistent, so it was not migrated:\n{}\n\
         `nodestore dump --from kv:{path}` writes out what is readable; \
         `nodestore migrate --accept-damaged` migrates what is readable and records what is missing",
        summarise(.problems),
        path = .path.display()
    )]
    DamagedSource {
        /// The key-value database.
        path: PathBuf,
        /// What is wrong with it.
        problems: Vec<Problem>,
    },
    /// The source has no identity (it was never opened by a nodestore that
    /// writes one).
    #[error("the key-value database {0} has no identity; open it once with this nodestore first")]
    NoIdentity(PathBuf),
    /// The SQL database holds the staged copy of an online migration that
    /// did not finish (docs/design.md §7.3): not data anyone may serve, the
    /// key-value database is still the truth. A migration of that database
    /// discards the copy and starts again; a dry run, which writes nothing,
    /// cannot.
    #[error(
        "{target} holds the staged copy of an online migration of {source_path} that did not finish \
         (the key-value database is still the truth); {what}"
    )]
    UnfinishedOnlineMigration {
        /// The SQL database.
        target: String,
        /// The key-value database the copy is of.
        source_path: String,
        /// What to do, in words.
        what: &'static str,
    },
    /// The SQL database already holds the data of another key-value
    /// database (or of a node that started without one).
    #[error(
        "{target} already holds migrated data from {others}; {path} (identity {identity}) \
         is a different key-value database, so it was not migrated (migrate it into an empty database)",
        path = .path.display(),
        identity = hex::encode(.identity),
        others = if .others.is_empty() {
            "a node that started without a key-value database".to_owned()
        } else {
            .others.iter().map(|(p, i)| format!("{p} (identity {})", hex::encode(i))).collect::<Vec<_>>().join(", ")
        }
    )]
    TargetHoldsOtherData {
        /// The SQL database.
        target: String,
        /// The key-value database this run was asked to migrate.
        path: PathBuf,
        /// Its identity.
        identity: [u8; 16],
        /// The sources the target holds data from: path and identity.
        others: Vec<(String, [u8; 16])>,
    },
    /// The target was made by Lightning Terminal (litd) and holds its data:
    /// a key-value database is migrated only into an empty database or
    /// one nodestore made (docs/design.md §3.6).
    #[error(
        "{target} was made by Lightning Terminal (litd) at schema version {version} and holds \
         litd's data; {path} was not migrated into it (migrate it into an empty database; \
         a node opens litd's database as it is, adopting it)",
        path = .path.display()
    )]
    TargetMadeByLitd {
        /// The SQL database.
        target: String,
        /// litd's schema version there.
        version: i64,
        /// The key-value database this run was asked to migrate.
        path: PathBuf,
    },
    /// The source was migrated into this SQL database, and written to
    /// afterwards: those writes are not in SQL.
    #[error(
        "{path} was migrated into {target} at its write {migrated}, but it is now at write {now}: \
         it was written to after the migration (or is a copy that was), and those writes are not in SQL"
    )]
    SourceChangedSinceMigration {
        /// The key-value database.
        path: PathBuf,
        /// The SQL database.
        target: String,
        /// Its write sequence when migrated.
        migrated: u64,
        /// Its write sequence now.
        now: u64,
    },
    /// The progress callback asked to stop.
    #[error("stopped by the progress callback: {0}")]
    Aborted(BoxError),
    /// A reader of the source stopped without finishing (sled panicked on a
    /// damaged file, say).
    #[error("reading tree {tree} stopped unexpectedly: {reason}")]
    ReaderStopped {
        /// The tree.
        tree: &'static str,
        /// Why, as far as known.
        reason: String,
    },
    /// An online migration: a write of the node's failed in a way that may
    /// have left it applied, and nothing names the record to replay, so the
    /// migration cannot prove SQL holds it (docs/design.md §7.4). The node
    /// stays on the key-value database; the next open migrates again.
    #[error(
        "a write of {what} failed during the online migration and may have been applied;          the migration cannot account for it and stops (the next open migrates again)"
    )]
    UncertainWrite {
        /// The record, as far as known.
        what: String,
    },
    /// An online migration: no cutover attempt fit the pause budget.
    #[error(
        "the online migration gave up its cutover after {attempts} attempts: writes kept          coming faster than they could be replayed within the pause budget of {budget_ms} ms          (a larger online_pause_budget_ms, or a quieter moment, lets it finish)"
    )]
    CutoverGaveUp {
        /// Attempts made.
        attempts: u32,
        /// The budget each had.
        budget_ms: u64,
    },
    /// An online migration was stopped (the stores were closed) before its
    /// last commit: rolled back, nothing served from SQL.
    #[error("the online migration was stopped before its last commit (the stores were closed)")]
    Stopped,
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
        path = .path.display(),
        target = .mark.target,
        when = .mark.marked_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )]
    MigratedElsewhere {
        /// The key-value database.
        path: PathBuf,
        /// Its tombstone.
        mark: Box<Mark>,
        /// The SQL database this run was asked to fill.
        here: String,
    },
}

impl Error {
    /// True for errors that say the source is damaged (and that
    /// [`Options::accept_damaged`] may skip).
    fn is_damage(&self) -> bool {
        matches!(self, Error::Decode { .. } | Error::Layout { .. })
    }

    fn as_problem(&self) -> Problem {
        let tree = match self {
            Error::Decode { tree, .. } | Error::Layout { tree, .. } => (*tree).to_owned(),
            _ => String::new(),
        };
        Problem {
            tree,
            what: self.to_string(),
        }
    }
}

/// Whether a failed migration may have written data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataState {
    /// No key-value data was written: the transaction rolled back (or never
    /// began). Schema steps before the data step may have been applied;
    /// they hold no data.
    NotWritten,
    /// The connection was lost while committing the data step: the data
    /// may or may not be in SQL. The key-value database is untouched and
    /// live; the next run finds out which and finishes.
    MaybeCommitted,
}

/// A migration that did not happen: why, and what it left behind.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    /// Why.
    #[source]
    pub error: Error,
    /// Whether data may have been written.
    pub data: DataState,
    /// Schema steps this run applied before it stopped (none hold data).
    pub schema_steps: Vec<i64>,
}

impl Failure {
    fn before_any_write(error: Error) -> Failure {
        Failure {
            error,
            data: DataState::NotWritten,
            schema_steps: Vec::new(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::before_any_write(e)
    }
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

/// Passes progress on, and when a store is done tells its last count as
/// its total: a store's total is an estimate from its tree (which also
/// holds index entries), and an observer's bar must end at its total.
struct EndsAtTotal<'a> {
    inner: Option<&'a dyn Progress>,
    last: Mutex<Option<ProgressEvent>>,
}

impl<'a> EndsAtTotal<'a> {
    fn new(inner: Option<&'a dyn Progress>) -> Self {
        EndsAtTotal {
            inner,
            last: Mutex::new(None),
        }
    }

    fn observer(&self) -> Option<&dyn Progress> {
        self.inner.map(|_| self as &dyn Progress)
    }

    /// The store just migrated ended: its last event again, at its total.
    fn finish(&self) -> Result<(), Error> {
        let last = self.last.lock().ok().and_then(|mut l| l.take());
        match (self.inner, last) {
            (Some(inner), Some(e)) if e.done != e.total => inner
                .progress(ProgressEvent { total: e.done, ..e })
                .map_err(Error::Aborted),
            _ => Ok(()),
        }
    }
}

impl Progress for EndsAtTotal<'_> {
    fn progress(&self, event: ProgressEvent) -> Result<(), BoxError> {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(event);
        }
        match self.inner {
            Some(inner) => inner.progress(event),
            None => Ok(()),
        }
    }
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
    /// Migrate a damaged source: what is readable moves, and what is
    /// missing is recorded in the migration record. Off by default: see
    /// [`Error::DamagedSource`].
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

/// What a migration moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The row counts a migrated target must hold, by table.
    pub fn table_counts(&self) -> [(&'static str, u64); 7] {
        [
            ("accounts", self.accounts.accounts),
            ("account_invoices", self.accounts.invoices),
            ("account_payments", self.accounts.payments),
            ("sessions", self.sessions.sessions),
            ("kvstores", self.firewall.kv_entries),
            ("privacy_pairs", self.firewall.privacy_pairs),
            ("actions", self.actions.actions),
        ]
    }
}

/// What became of the tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TombstoneState {
    /// The key-value database is retired with this mark.
    Written(Mark),
    /// The data is committed, but the mark could not be written (why); the
    /// migration record keeps it pending and every run or open retries it.
    Pending(String),
    /// A dry run marks nothing.
    NotWritten,
}

/// What kind of success a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A dry run: everything migrated and verified, then rolled back.
    Rehearsed,
    /// This run migrated the data.
    Migrated,
    /// The target already held this source's data; this run only finished
    /// what was left (the tombstone, later schema steps).
    AlreadyMigrated,
}

/// What [`migrate`] did. Only returned when the data is in SQL and
/// verified (or, for a dry run, was verified and rolled back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What kind of run it was.
    pub kind: OutcomeKind,
    /// What was migrated (by this run, or by the run the record is of).
    pub report: Report,
    /// The schema steps this run applied; for a dry run, the steps it
    /// would apply.
    pub applied_steps: Vec<i64>,
    /// The tombstone.
    pub tombstone: TombstoneState,
    /// Schema steps after the key-value step that could not be applied
    /// (why); the data is safe in SQL and the next run or open applies them.
    pub unfinished_steps: Option<String>,
    /// With [`Options::accept_damaged`]: what the source was missing.
    pub accepted_damage: Vec<Problem>,
}

impl Outcome {
    /// True when nothing is left to do: the data is in SQL, the key-value
    /// database is tombstoned and every schema step is applied (a dry run
    /// is complete too: it was asked to keep nothing).
    pub fn is_complete(&self) -> bool {
        match self.kind {
            OutcomeKind::Rehearsed => true,
            _ => {
                matches!(self.tombstone, TombstoneState::Written(_))
                    && self.unfinished_steps.is_none()
            }
        }
    }
}

/// What the decision rule knows of the source.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    /// Its directory.
    pub path: PathBuf,
    /// Its identity.
    pub identity: [u8; 16],
    /// Its write sequence (0 for a format 1 database).
    pub write_seq: u64,
    /// Live or retired.
    pub status: Status,
}

/// What the decision rule knows of the target.
#[derive(Debug, Clone)]
pub struct TargetFacts {
    /// Its description (see [`sqldb::Db::describe`]).
    pub description: String,
    /// Its identity, once schema step 1 ran.
    pub identity: Option<[u8; 16]>,
    /// True when the key-value step is applied and no online migration's
    /// copy is staged: the target's data is the truth.
    pub migrated: bool,
    /// Its migration records.
    pub records: Vec<MigrationRecord>,
    /// The copy of an online migration that did not finish, which the
    /// next migration discards (docs/design.md §7.3).
    pub staged: Option<StagedCopy>,
    /// Made by Lightning Terminal (litd) at this schema version, and
    /// adopted by the next schema run (`sqldb::litd`).
    pub litd: Option<i64>,
    /// Neither nodestore nor litd made it: no schema at all yet.
    pub empty: bool,
}

/// What to do with a source and a target.
#[derive(Debug)]
pub enum Plan {
    /// Migrate the source into the target.
    Migrate,
    /// The target holds this source's data already (this record).
    AlreadyMigrated(Box<MigrationRecord>),
    /// Refuse, for this reason.
    Refuse(Error),
}

/// The one rule deciding what a run (and `Stores::open`, and `nodestore
/// status`) does with a source and a target (docs/design.md §3.2).
pub fn plan(source: &SourceFacts, target: &TargetFacts, force: bool) -> Plan {
    if let Some(version) = target.litd {
        return Plan::Refuse(Error::TargetMadeByLitd {
            target: target.description.clone(),
            version,
            path: source.path.clone(),
        });
    }
    if target.migrated {
        return match target
            .records
            .iter()
            .rev()
            .find(|r| r.source_identity == source.identity)
        {
            Some(r) if r.source_write_seq == source.write_seq => {
                Plan::AlreadyMigrated(Box::new(r.clone()))
            }
            Some(r) => Plan::Refuse(Error::SourceChangedSinceMigration {
                path: source.path.clone(),
                target: target.description.clone(),
                migrated: r.source_write_seq,
                now: source.write_seq,
            }),
            None => Plan::Refuse(Error::TargetHoldsOtherData {
                target: target.description.clone(),
                path: source.path.clone(),
                identity: source.identity,
                others: target
                    .records
                    .iter()
                    .map(|r| (r.source_path.clone(), r.source_identity))
                    .collect(),
            }),
        };
    }
    if let Some(staged) = &target.staged {
        // Not data yet, but another node's migration on its way: only this
        // source's next migration (or a forced one) discards it.
        if staged.source_identity != source.identity && !force {
            return Plan::Refuse(Error::TargetHoldsOtherData {
                target: target.description.clone(),
                path: source.path.clone(),
                identity: source.identity,
                others: vec![(staged.source_path.clone(), staged.source_identity)],
            });
        }
    }
    if let Status::Tombstoned(mark) = &source.status {
        let same_database =
            mark.target_identity.is_some() && mark.target_identity == target.identity;
        // The database the tombstone names was lost and made again at the
        // same place: a re-run from the retired source is the way back.
        let same_place = mark.target == target.description;
        if !(same_database || same_place || force) {
            return Plan::Refuse(Error::MigratedElsewhere {
                path: source.path.clone(),
                mark: Box::new(mark.clone()),
                here: target.description.clone(),
            });
        }
    }
    Plan::Migrate
}

/// How many problems a refusal names one by one; the rest are counted per
/// tree (and all listed by `--json`).
const NAMED_PROBLEMS: usize = 5;

/// The problems of a damaged source in words: the count per tree, then the
/// first few, so a thousand damaged records are one screen, not a thousand
/// runs (each repaired to find the next).
fn summarise(problems: &[Problem]) -> String {
    let mut per_tree: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for p in problems {
        *per_tree.entry(p.tree.as_str()).or_default() += 1;
    }
    let mut out: Vec<String> = Vec::new();
    if problems.len() > NAMED_PROBLEMS {
        for (tree, n) in &per_tree {
            let tree = if tree.is_empty() {
                "(the database)"
            } else {
                tree
            };
            out.push(format!("  tree {tree}: {n} damaged or inconsistent"));
        }
    }
    out.extend(
        problems
            .iter()
            .take(NAMED_PROBLEMS)
            .map(|p| format!("  {p}")),
    );
    if problems.len() > NAMED_PROBLEMS {
        out.push(format!(
            "  … and {} more (`--json` lists them all)",
            problems.len() - NAMED_PROBLEMS
        ));
    }
    out.join("\n")
}

/// Found damage: every record that does not decode is recorded and
/// skipped, so a refusal counts them all (docs/sled-format.md §6); with
/// [`Options::accept_damaged`] the run then goes on without them.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    /// An offline run skips and records every damaged record, then refuses
    /// the run unless damage is accepted; an online run, which has no such
    /// final check, fails at the first.
    skipping: bool,
    found: Mutex<Vec<Problem>>,
}

impl Damage {
    /// Records `e` and returns true when it is damage that may be skipped.
    pub(crate) fn skip(&self, e: &Error) -> bool {
        if !(self.skipping && e.is_damage()) {
            return false;
        }
        if let Ok(mut f) = self.found.lock() {
            f.push(e.as_problem());
        }
        true
    }

    /// True once any damage was found: a record that then refers to one
    /// that is missing may be missing it because of that damage.
    pub(crate) fn found_any(&self) -> bool {
        self.found.lock().map(|f| !f.is_empty()).unwrap_or(true)
    }

    fn take(&self) -> Vec<Problem> {
        self.found
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }
}

type CheckHandle = JoinHandle<Result<Vec<Problem>, Error>>;

/// The tables whose foreign keys wait for the end of the data step; the
/// actions set aside their indexes and keys themselves (`actions.rs`).
const LINKED_TABLES: &[&str] = &[
    "account_invoices",
    "account_payments",
    "sessions",
    "session_macaroon_permissions",
    "session_macaroon_caveats",
    "session_feature_configs",
    "session_privacy_flags",
    "kvstores",
    "privacy_pairs",
];

/// The key-value to SQL code step. Use it through [`migrate`], or with
/// [`sqldb::migrate::Migrator::code_step`].
pub struct KvToSql<'a> {
    source: Arc<MigrationSource>,
    source_seq: u64,
    opts: Options,
    progress: Option<&'a dyn Progress>,
    check: tokio::sync::Mutex<Option<CheckHandle>>,
    cancel: Arc<AtomicBool>,
    damage: Arc<Damage>,
    report: Mutex<Option<(Report, Vec<Problem>)>>,
    /// Set for an online migration: the copy is followed by catch-up and
    /// the cutover's pause (docs/design.md §7).
    online: Option<&'a online::Online>,
    /// Later schema steps the run applied in its transaction.
    later_steps: Mutex<Vec<i64>>,
}

impl fmt::Debug for KvToSql<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvToSql")
            .field("source", &self.source.path())
            .finish()
    }
}

impl<'a> KvToSql<'a> {
    /// The code step reading from `source`, proving it whole as it goes.
    pub fn new(
        source: Arc<MigrationSource>,
        source_seq: u64,
        opts: Options,
        progress: Option<&'a dyn Progress>,
    ) -> Self {
        let cancel = Arc::new(AtomicBool::new(false));
        let check = {
            let (source, cancel) = (source.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || check::check_source(&source, &cancel))
        };
        KvToSql {
            damage: Arc::new(Damage {
                skipping: true,
                found: Mutex::new(Vec::new()),
            }),
            source,
            source_seq,
            opts,
            progress,
            check: tokio::sync::Mutex::new(Some(check)),
            cancel,
            report: Mutex::new(None),
            online: None,
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
        opts: Options,
        progress: Option<&'a dyn Progress>,
        online: &'a online::Online,
    ) -> Self {
        KvToSql {
            damage: Arc::new(Damage {
                skipping: false,
                found: Mutex::new(Vec::new()),
            }),
            source,
            source_seq: 0,
            opts,
            progress,
            check: tokio::sync::Mutex::new(None),
            cancel: Arc::new(AtomicBool::new(false)),
            report: Mutex::new(None),
            online: Some(online),
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
        let source = &*self.source;
        let started = Instant::now();
        let (opts, damage) = (&self.opts, &self.damage);
        let ends = EndsAtTotal::new(self.progress);
        let progress = ends.observer();
        // Foreign keys are checked once, after the load, not row by row
        // (docs/design.md §5.7); every link they check was resolved to an
        // id loaded before it, so the check cannot fail on data.
        // An online copy starts with what makes it a staged copy, then
        // commits in pieces (docs/design.md §7.3, §7.4).
        let live = match self.online {
            Some(online) => Some(self.begin_live_copy(tx, online).await?),
            None => None,
        };
        let live = live.as_ref();
        let foreign_keys = sqldb::deferred::set_aside_foreign_keys(tx, LINKED_TABLES).await?;
        let t = Instant::now();
        let accounts = accounts::migrate(source, tx, opts, progress, damage, live)
            .instrument(store_span("accounts"))
            .await?;
        ends.finish()?;
        log_store(
            "accounts",
            accounts.accounts + accounts.invoices + accounts.payments,
            t,
        );
        // Sessions reference accounts: after them, in the same transaction.
        let t = Instant::now();
        // An online copy leaves what it read inconsistently to the replay.
        let sessions = sessions::migrate(source, tx, opts, progress, damage, live)
            .instrument(store_span("sessions"))
            .await?;
        ends.finish()?;
        log_store("sessions", sessions.sessions, t);
        // Kv-stores and privacy pairs are scoped by session group.
        let t = Instant::now();
        let firewall = firewall::migrate(source, tx, opts, progress, damage, live)
            .instrument(store_span("firewall"))
            .await?;
        ends.finish()?;
        log_store("firewall", firewall.kv_entries + firewall.privacy_pairs, t);
        // Actions link to sessions and accounts: last.
        let t = Instant::now();
        let actions = actions::migrate(source, tx, opts, progress, damage, live)
            .instrument(store_span("actions"))
            .await?;
        ends.finish()?;
        log_store("actions", actions.actions, t);
        foreign_keys.rebuild(tx).await?;
        if self.online.is_none() {
            // Every later schema step over the data just loaded, in this
            // transaction: a step the data cannot hold (an index over a
            // value too long for it) fails the run here, before anything
            // is committed or tombstoned, never at the next open of a
            // database whose source is retired (docs/design.md §5.8). An
            // online copy applies them at its start (`begin_live_copy`).
            let t = Instant::now();
            let later = Migrator::new()
                .apply_steps_after(tx, KV_TO_SQL_VERSION)
                .await
                .map_err(Error::Schema)?;
            tracing::info!(steps = ?later, duration_ms = millis(t), "later schema steps applied over the migrated data");
            if let Ok(mut l) = self.later_steps.lock() {
                *l = later;
            }
        }
        // PostgreSQL plans from table statistics, and a freshly loaded table
        // has none until autovacuum gets to it: a node's first listings
        // could then walk a whole index (docs/design.md §5.7). ANALYZE runs
        // inside the transaction. SQLite's planner needs no statistics.
        if tx.dialect() == sqldb::Dialect::Postgres {
            // Every table: the database holds only nodestore's (§3.3).
            let t = Instant::now();
            tx.execute_script("ANALYZE").await?;
            tracing::debug!(duration_ms = millis(t), "planner statistics gathered");
        }
        let mut report = Report {
            accounts,
            sessions,
            firewall,
            actions,
            duration: started.elapsed(),
        };
        let source_seq = self.source_seq;
        if let (Some(online), Some(live)) = (self.online, live) {
            // The writes made during the copy, replayed while writers run;
            // what comes after goes into the second, short transaction.
            let mut deltas = replay::Deltas::default();
            online::catch_up(tx, online, &mut deltas, &mut online::CatchUp::default()).await?;
            online::recount(&mut report, &deltas);
            report.duration = started.elapsed();
            online.copied_in(live.stats());
            online.committing_copy();
            return Ok((report, Vec::new()));
        }
        // The data is in; is the source whole?
        let handle = self.check.lock().await.take();
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
        for d in source.salvaged() {
            let p = Problem {
                tree: d.tree.clone().unwrap_or_default(),
                what: d.to_string(),
            };
            if listed.insert(p.clone()) {
                problems.push(p);
            }
        }
        if !problems.is_empty() && !self.opts.accept_damaged {
            return Err(Error::DamagedSource {
                path: source.path().to_path_buf(),
                problems,
            });
        }
        let identity = source
            .identity()?
            .ok_or_else(|| Error::NoIdentity(source.path().to_path_buf()))?;
        // In the same transaction as the data: the tombstone is pending
        // until it is written after the commit.
        record::insert(
            tx,
            &MigrationRecord {
                source_path: source.path().display().to_string(),
                source_identity: identity,
                source_write_seq: source_seq,
                migrated_at: sqldb::time::truncate_micros(Utc::now()),
                nodestore_version: env!("CARGO_PKG_VERSION").to_owned(),
                tombstone_pending: true,
                report: report.clone(),
                accepted_damage: problems.clone(),
            },
        )
        .await?;
        Ok((report, problems))
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
        let later = Migrator::new()
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
                source_identity: source
                    .identity()?
                    .ok_or_else(|| Error::NoIdentity(source.path().to_path_buf()))?,
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

impl Drop for KvToSql<'_> {
    fn drop(&mut self) {
        // A check still running has nobody to report to.
        self.cancel.store(true, Ordering::Relaxed);
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
                self.cancel.store(true, Ordering::Relaxed);
                // Boxed whole, so the caller gets the typed error back.
                Err(Box::new(e))
            }
        }
    }
}

fn outcome_name(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Rehearsed => "rehearsed",
        OutcomeKind::Migrated => "migrated",
        OutcomeKind::AlreadyMigrated => "already_migrated",
    }
}

fn store_span(store: &'static str) -> tracing::Span {
    tracing::info_span!("store", store)
}

pub(crate) fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
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

fn log_store(store: &'static str, records: u64, since: Instant) {
    tracing::info!(
        store,
        records,
        duration_ms = millis(since),
        records_per_s = rate(records, since),
        "store migrated"
    );
}

/// A read of the live key-value stores (an online migration's replay)
/// that failed.
pub(crate) fn live_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid {
        record: what.to_owned(),
        reason: format!("reading it from the live key-value store: {e}"),
    }
}

/// Runs `f` on the blocking pool (sled and file locks block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::ReaderStopped {
            tree: "(opening)",
            reason: e.to_string(),
        })?
}

/// The typed error of a failed schema run: the code step's own error when
/// it failed, the runner's otherwise; and whether the data step's commit
/// may have gone through.
fn schema_failure(e: MigrateError) -> (Error, DataState) {
    match e {
        MigrateError::StepFailed {
            version, source, ..
        } if version == KV_TO_SQL_VERSION => match source.downcast::<Error>() {
            Ok(typed) => (*typed, DataState::NotWritten),
            Err(other) => (
                Error::Schema(MigrateError::StepFailed {
                    version,
                    name: "kvdb_to_sql".into(),
                    source: other,
                }),
                DataState::NotWritten,
            ),
        },
        MigrateError::CommitFailed {
            version, source, ..
        } if version == KV_TO_SQL_VERSION && source.kind == ErrorKind::Connection => {
            (Error::Db(source), DataState::MaybeCommitted)
        }
        other => (Error::Schema(other), DataState::NotWritten),
    }
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

/// What the decision rule needs of the key-value database at `path`, read
/// without changing it.
///
/// Errors: the database is missing, in use, or unreadable.
pub async fn inspect_source(path: &Path) -> Result<SourceFacts, Error> {
    let p = path.to_path_buf();
    blocking(move || {
        let source = MigrationSource::open(&p, &KvOptions::default())?;
        Ok(SourceFacts {
            identity: source
                .identity()?
                .ok_or_else(|| Error::NoIdentity(p.clone()))?,
            write_seq: source.write_seq()?.unwrap_or(0),
            status: source.status().clone(),
            path: p,
        })
    })
    .await
}

/// What the decision rule needs of a SQL database, read without changing
/// it.
///
/// Errors: the database refuses the preflight (foreign or newer), or cannot
/// be read.
pub async fn inspect_target(db: &Db) -> Result<TargetFacts, Error> {
    target_facts(db).await.map(|(t, _)| t).map_err(|f| f.error)
}

/// What the decision needs of the target, and its preflight.
async fn target_facts(db: &Db) -> Result<(TargetFacts, Preflight), Failure> {
    let pre = Migrator::new()
        .preflight(db)
        .await
        .map_err(|e| Failure::before_any_write(Error::Schema(e)))?;
    let records = if pre.has(KV_TO_SQL_VERSION) {
        records(db).await.map_err(Failure::before_any_write)?
    } else {
        Vec::new()
    };
    // An online copy is staged from its first committed piece, before the
    // key-value step is recorded (docs/design.md §7.4).
    let staged = staging::staged(db)
        .await
        .map_err(Failure::before_any_write)?;
    Ok((
        TargetFacts {
            description: db.describe(),
            identity: pre.identity,
            migrated: pre.has(KV_TO_SQL_VERSION) && staged.is_none(),
            records,
            staged,
            litd: pre.litd,
            empty: pre.applied.is_empty() && pre.litd.is_none(),
        },
        pre,
    ))
}

/// Before a migration the plan allowed: drops the staged copy of an online
/// migration that did not finish, so the run starts from an empty database
/// (docs/design.md §7.3). A dry run writes nothing, so it refuses instead.
async fn discard_staged(
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

/// After the data is committed: prove it from a fresh connection, write the
/// tombstone, apply the later steps. Never fails: whatever happens now, the
/// data is safe in SQL, and what is left is said in the outcome.
async fn finish(
    kv_path: &Path,
    db: &Db,
    opts: &Options,
    source: &SourceFacts,
    record: MigrationRecord,
    kind: OutcomeKind,
    applied: Vec<i64>,
) -> Outcome {
    let tombstone = retire(kv_path, db, opts, source, &record, true).await;
    later_steps(db, opts, record, kind, applied, tombstone).await
}

/// Proves the committed data from a fresh connection and writes the
/// tombstone (or says why it is pending). `counts`: the proof also counts
/// every table against the record; an online migration, whose proof runs
/// while writers wait, proves the record only (its rows were read back
/// and compared inside the transaction, docs/design.md §7.2).
async fn retire(
    kv_path: &Path,
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
            Err(reason) => TombstoneState::Pending(format!(
                "the migrated data could not be confirmed from a fresh connection ({reason}); \
                 the tombstone is written once it is"
            )),
            Ok(identity) => write_tombstone(kv_path, db, opts, source, identity).await,
        },
    }
}

/// Applies the schema steps after the data step, and says what was done.
async fn later_steps(
    db: &Db,
    opts: &Options,
    record: MigrationRecord,
    kind: OutcomeKind,
    mut applied: Vec<i64>,
    tombstone: TombstoneState,
) -> Outcome {
    let mut later = Vec::new();
    let unfinished = match Migrator::new()
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
    kv_path: &Path,
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
    let (path, m) = (kv_path.to_path_buf(), mark.clone());
    match tokio::task::spawn_blocking(move || marker.mark(&path, &m)).await {
        Ok(Ok(())) => {
            // Marked. If the record cannot be updated now, the next open's
            // retry finds the mark in place and clears it.
            let _ = record::clear_pending(db, source.identity).await;
            TombstoneState::Written(mark)
        }
        Ok(Err(e)) => TombstoneState::Pending(e.to_string()),
        Err(e) => TombstoneState::Pending(e.to_string()),
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
) -> Result<[u8; 16], String> {
    let fresh = db.reopen().await.map_err(|e| e.to_string())?;
    let pre = Migrator::new()
        .preflight(&fresh)
        .await
        .map_err(|e| e.to_string())?;
    let identity = pre
        .identity
        .ok_or("the target has no identity (schema step 1 is missing)")?;
    let found = records(&fresh)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .rev()
        .find(|r| r.source_identity == source.identity)
        .ok_or("the target holds no migration record of this key-value database")?;
    if found.source_write_seq != record.source_write_seq {
        return Err(format!(
            "the target's record is of write {}, not {}",
            found.source_write_seq, record.source_write_seq
        ));
    }
    if !counts {
        return Ok(identity);
    }
    let counts = fresh
        .read(|tx| {
            Box::pin(async move {
                let mut out = Vec::new();
                for (table, _) in Report::default().table_counts() {
                    out.push((table, count_rows(tx, table).await?));
                }
                Ok::<_, DbError>(out)
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    for ((table, got), (_, want)) in counts.iter().zip(found.report.table_counts()) {
        if *got != want {
            return Err(format!(
                "table {table} holds {got} rows, the migration wrote {want}"
            ));
        }
    }
    Ok(identity)
}

async fn count_rows(tx: &mut dyn Tx, table: &'static str) -> Result<u64, DbError> {
    use sea_query::{Alias, Expr, Query};
    use sqldb::TxExt as _;
    let n = tx
        .query_one(
            &Query::select()
                .expr(Expr::cust("COUNT(*)"))
                .from(Alias::new(table))
                .to_owned(),
        )
        .await?
        .i64(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
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
    let identity = Migrator::new()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source(status: Status) -> SourceFacts {
        SourceFacts {
            path: PathBuf::from("/kv"),
            identity: [1; 16],
            write_seq: 40,
            status,
        }
    }

    fn mark(target: &str, identity: Option<[u8; 16]>) -> Status {
        Status::Tombstoned(Mark {
            marked_at: Utc::now(),
            nodestore_version: "0".into(),
            target: target.into(),
            target_identity: identity,
        })
    }

    fn target(description: &str, identity: [u8; 16], records: Vec<MigrationRecord>) -> TargetFacts {
        TargetFacts {
            description: description.into(),
            identity: Some(identity),
            migrated: !records.is_empty(),
            records,
            staged: None,
            litd: None,
            empty: false,
        }
    }

    fn record(identity: [u8; 16], seq: u64) -> MigrationRecord {
        MigrationRecord {
            source_path: "/kv".into(),
            source_identity: identity,
            source_write_seq: seq,
            migrated_at: Utc::now(),
            nodestore_version: "0".into(),
            tombstone_pending: false,
            report: Report::default(),
            accepted_damage: Vec::new(),
        }
    }

    const HERE: &str = "postgres://u@/db?host=/run/pg&port=5433";
    const ELSEWHERE: &str = "postgres://u@localhost:5432/db";

    #[test]
    fn a_live_source_into_an_empty_target_migrates() {
        let p = plan(
            &source(Status::Live(2)),
            &target(HERE, [9; 16], vec![]),
            false,
        );
        assert!(matches!(p, Plan::Migrate), "{p:?}");
    }

    #[test]
    fn already_migrated_needs_the_same_identity_and_write_sequence() {
        let t = target(HERE, [9; 16], vec![record([1; 16], 40)]);
        assert!(matches!(
            plan(&source(Status::Live(2)), &t, false),
            Plan::AlreadyMigrated(_)
        ));
        let later = SourceFacts {
            write_seq: 41,
            ..source(Status::Live(2))
        };
        assert!(matches!(
            plan(&later, &t, false),
            Plan::Refuse(Error::SourceChangedSinceMigration {
                migrated: 40,
                now: 41,
                ..
            })
        ));
        let other = target(HERE, [9; 16], vec![record([2; 16], 40)]);
        assert!(
            matches!(
                plan(&source(Status::Live(2)), &other, true),
                Plan::Refuse(Error::TargetHoldsOtherData { .. })
            ),
            "force never mixes two sources"
        );
    }

    #[test]
    fn a_staged_copy_is_discarded_only_for_its_own_source_unless_forced() {
        let staged = TargetFacts {
            migrated: false,
            staged: Some(StagedCopy {
                source_path: "/node/kv".into(),
                source_identity: [1; 16],
                staged_at: Utc::now(),
            }),
            ..target(HERE, [9; 16], vec![])
        };
        assert!(matches!(
            plan(&source(Status::Live(2)), &staged, false),
            Plan::Migrate
        ));
        let other = SourceFacts {
            identity: [2; 16],
            ..source(Status::Live(2))
        };
        assert!(matches!(
            plan(&other, &staged, false),
            Plan::Refuse(Error::TargetHoldsOtherData { .. })
        ));
        assert!(matches!(plan(&other, &staged, true), Plan::Migrate));
    }

    #[test]
    fn a_retired_source_goes_back_only_to_its_own_target_unless_forced() {
        let empty_here = TargetFacts {
            migrated: false,
            ..target(HERE, [9; 16], vec![])
        };
        // The same database (by identity), whatever its address now.
        let moved = TargetFacts {
            description: ELSEWHERE.into(),
            ..empty_here.clone()
        };
        assert!(matches!(
            plan(&source(mark(HERE, Some([9; 16]))), &moved, false),
            Plan::Migrate
        ));
        // A new database at the address the tombstone names: the old one was lost.
        assert!(matches!(
            plan(&source(mark(HERE, Some([8; 16]))), &empty_here, false),
            Plan::Migrate
        ));
        // Another database at another address (another socket and port): a fork.
        let elsewhere = TargetFacts {
            identity: Some([7; 16]),
            ..moved.clone()
        };
        assert!(matches!(
            plan(&source(mark(HERE, Some([8; 16]))), &elsewhere, false),
            Plan::Refuse(Error::MigratedElsewhere { .. })
        ));
        assert!(matches!(
            plan(&source(mark(HERE, Some([8; 16]))), &elsewhere, true),
            Plan::Migrate
        ));
    }
}
