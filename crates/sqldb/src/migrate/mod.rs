//! The schema runner: applies [`Step`]s in order, each in its own
//! transaction together with its tracking row.
//!
//! # Tracking
//! The table `nodestore_schema_steps` has one row per applied step: version,
//! name, checksum (see [`Step::checksum`]), when it was applied and how
//! long it took. A step and its row commit together, so a crash mid-step
//! leaves no row and the next run starts that step again from a clean
//! database: a recorded step is complete by construction. (Tracking tables
//! made before this was understood have a `complete` column, always true;
//! the next run that writes drops it.) A `note`
//! says when a step was adopted from a database Lightning Terminal made
//! rather than applied (crate::litd); tables made before notes have no
//! such column, and read as having no notes.
//!
//! # Lightning Terminal
//! The runner also keeps litd's tracking tables in the transactions of the
//! steps litd shares, and adopts a database litd made (see crate::litd and
//! [`Migrator::preflight`]).
//!
//! # Refusals
//! Before applying anything, and again inside every step's transaction, the
//! runner compares the tracking table with its own list and refuses to run
//! ([`MigrateError`]) when an applied step's checksum or name differs from
//! the binary's, when the database has a step this binary does not know (it
//! was written by a newer nodestore). A code step this caller has no
//! implementation for is also an error: a code step is never recorded as
//! done without running.
//!
//! # Concurrency
//! Runners on one database are serialised. On PostgreSQL the runner takes a
//! session-level advisory lock on a dedicated connection (not a pooled one,
//! whose recycling could release it) and holds it for the whole run, code
//! steps included. On SQLite each step's transaction starts with
//! `BEGIN IMMEDIATE`, which takes the database's write lock before the
//! tracking table is read. Either way a second runner waits (up to
//! [`Migrator::lock_wait`]), then finds the steps applied and returns `Ok`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_query::{ExprTrait, Query};

use crate::error::{BoxError, DbError, ErrorKind};
use crate::schema::{Step, StepKind, adapt};
use crate::tx::{Db, Dialect, Tx, TxExt, TxMode};

mod tracking;

pub(crate) use tracking::table_exists;
pub use tracking::{IDENTITY_TABLE, TRACKING_TABLE, drop_known_tables, read_identity};
use tracking::{
    Tracking, TrackingCol, ensure_tracking_table, has_column, insert_tracking_row, list_tables,
    read_applied, tracking_table_exists,
};

#[cfg(feature = "postgres")]
use crate::postgres::DedicatedConn;

/// Without PostgreSQL there is no dedicated connection: every
/// `Option<DedicatedConn>` the runner holds is `None`.
#[cfg(not(feature = "postgres"))]
enum DedicatedConn {}

#[cfg(not(feature = "postgres"))]
impl DedicatedConn {
    async fn begin(&self, _mode: TxMode) -> crate::DbResult<Box<dyn Tx>> {
        match *self {}
    }
}

/// The advisory lock key: the ASCII bytes of "nodestor", fixed so every
/// nodestore binary contends for the same lock. Advisory locks are scoped to
/// the current database, so runners on different databases never wait on
/// each other.
#[cfg(feature = "postgres")]
const ADVISORY_LOCK_KEY: i64 = 0x6e6f_6465_7374_6f72;

/// A Rust function that runs as a schema step, inside the step's transaction.
#[async_trait]
pub trait CodeStep: Send + Sync {
    /// Does the step's work. Returning `Err` rolls back everything the step
    /// wrote and leaves the step unrecorded.
    async fn run(&self, tx: &mut dyn Tx) -> Result<(), BoxError>;
}

/// The code step for a database that provably has no key-value data to bring
/// in (a new node, or a test): it records the key-value step as done.
///
/// Never use it when a key-value database may exist; that would record a
/// migration that did not happen.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLegacyData;

#[async_trait]
impl CodeStep for NoLegacyData {
    async fn run(&self, _tx: &mut dyn Tx) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Why the runner refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database holds tables nodestore did not create; nothing was
    /// written to it.
    #[error(
        "the database holds tables nodestore did not create ({}); refusing to write into it \
         (use an empty database, or the database nodestore created)",
        .tables.join(", ")
    )]
    ForeignTables {
        /// The tables that are not nodestore's, sorted.
        tables: Vec<String>,
    },
    /// The database has nodestore's tables but no record of the steps that
    /// made them; nothing was written to it.
    #[error(
        "the database holds tables named like nodestore's ({}) but no nodestore schema record; \
         refusing to write into it",
        .tables.join(", ")
    )]
    UnrecordedTables {
        /// The tables found, sorted.
        tables: Vec<String>,
    },
    /// An applied step differs from this binary's step of the same version.
    #[error(
        "schema step {version} ({name}) was applied with a different {what} than this binary has; \
         applied steps must never be edited"
    )]
    Mismatch {
        /// The step's version.
        version: i64,
        /// The step's name in this binary.
        name: String,
        /// `"checksum"` or `"name"`.
        what: &'static str,
    },
    /// The database has a step this binary does not know.
    #[error(
        "the database has schema step {version} ({name}), which this binary does not know: \
         it was written by a newer nodestore (this binary knows steps 1..={latest})"
    )]
    NewerDatabase {
        /// The unknown step's version.
        version: i64,
        /// Its recorded name.
        name: String,
        /// The last version this binary knows.
        latest: i64,
    },
    /// A code step is pending but the caller supplied no implementation.
    #[error("schema step {version} ({name}) is a code step and no implementation was supplied")]
    MissingCodeStep {
        /// The step's version.
        version: i64,
        /// Its name.
        name: String,
    },
    /// The step list itself is malformed (a bug in the binary).
    #[error("invalid step list: {0}")]
    InvalidSteps(String),
    /// Another runner held the lock for longer than the wait allowed.
    #[error("another schema runner held the lock for more than {0:?}")]
    LockTimeout(Duration),
    /// A step failed; nothing of it was kept.
    #[error("schema step {version} ({name}) failed: {source}")]
    StepFailed {
        /// The step's version.
        version: i64,
        /// Its name.
        name: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The commit of a step failed. On PostgreSQL a lost connection leaves
    /// it unknown whether the step committed; the next run finds out.
    #[error("schema step {version} ({name}) could not be committed: {source}")]
    CommitFailed {
        /// The step's version.
        version: i64,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: DbError,
    },
    /// The database was made by Lightning Terminal (litd) and cannot be
    /// adopted (crate::litd); nothing was written to it.
    #[error("the database was made by Lightning Terminal (litd) and is not adopted: {0}")]
    Litd(#[from] crate::litd::Refusal),
    /// A database call of the runner itself failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A row of the tracking table.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedStep {
    /// The step's version.
    pub version: i64,
    /// The step's name.
    pub name: String,
    /// The checksum recorded when it was applied.
    pub checksum: Vec<u8>,
    /// When it was applied (UTC, microseconds).
    pub applied_at: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// The steps this run applied, in order (empty when the database was current).
    pub applied: Vec<AppliedStep>,
}

/// What a database holds before the runner writes anything: see
/// [`Migrator::preflight`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preflight {
    /// The steps recorded as applied, oldest first (empty for a new database).
    pub applied: Vec<AppliedStep>,
    /// The database's identity (written by step 1), once it has one.
    pub identity: Option<[u8; 16]>,
    /// Made by litd at this schema version, and adopted by the next run:
    /// step 1 applied, the steps litd's schema holds recorded as adopted
    /// (crate::litd), the later steps applied.
    pub litd: Option<i64>,
}

impl Preflight {
    /// True when step `version` is applied.
    pub fn has(&self, version: i64) -> bool {
        self.applied.iter().any(|a| a.version == version)
    }
}

/// Applies schema steps to a database. See the module docs.
pub struct Migrator<'a> {
    steps: &'a [Step],
    code: HashMap<i64, &'a dyn CodeStep>,
    lock_wait: Duration,
    through: Option<i64>,
}

impl std::fmt::Debug for Migrator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("steps", &self.steps.len())
            .field("through", &self.through)
            .field("code_steps", &self.code.keys().collect::<Vec<_>>())
            .field("lock_wait", &self.lock_wait)
            .finish()
    }
}

impl<'a> Migrator<'a> {
    /// A runner for `steps`: nodestore's schema (`migrator::schema::STEPS`,
    /// composed from the steps each crate declares), or another list (tests
    /// of the runner itself). The list must be ordered, 1-based and
    /// without gaps ([`MigrateError::InvalidSteps`] otherwise).
    pub fn with_steps(steps: &'a [Step]) -> Migrator<'a> {
        Migrator {
            steps,
            code: HashMap::new(),
            lock_wait: Duration::from_secs(600),
            through: None,
        }
    }

    /// Applies steps only up to and including `version` (the key-value step,
    /// say, so its data can be proved and the source retired before the
    /// steps after it run).
    pub fn through(mut self, version: i64) -> Self {
        self.through = Some(version);
        self
    }

    /// The steps this runner applies, in order.
    fn planned(&self) -> impl Iterator<Item = &Step> {
        let through = self.through;
        self.steps
            .iter()
            .filter(move |s| through.is_none_or(|t| s.version <= t))
    }

    /// Reads what the database holds, writing nothing, and refuses a
    /// database the runner must not write into: one holding tables
    /// nodestore did not create ([`MigrateError::ForeignTables`]), one with
    /// nodestore's tables but no schema record
    /// ([`MigrateError::UnrecordedTables`]), one written by a newer
    /// nodestore or with an edited step. [`Migrator::run`] calls it before
    /// its first write.
    pub async fn preflight(&self, db: &Db) -> Result<Preflight, MigrateError> {
        let dialect = db.dialect();
        let (tables, applied, identity, litd) = db
            .read(|tx| {
                Box::pin(async move {
                    let tables = list_tables(tx, dialect).await?;
                    let tracked = tables.iter().any(|t| t == TRACKING_TABLE);
                    let applied = if tracked {
                        read_applied(tx).await?
                    } else {
                        Vec::new()
                    };
                    let identity = if tables.iter().any(|t| t == IDENTITY_TABLE) {
                        read_identity(tx).await?
                    } else {
                        None
                    };
                    let litd = if !tracked {
                        crate::litd::read(tx).await?
                    } else {
                        None
                    };
                    Ok::<_, MigrateError>((tables, applied, identity, litd))
                })
            })
            .await?;
        let known = crate::schema::known_tables_of(self.steps);
        let mut foreign: Vec<String> = tables
            .iter()
            .filter(|t| !known.contains(t))
            .cloned()
            .collect();
        foreign.sort();
        if !foreign.is_empty() {
            return Err(MigrateError::ForeignTables { tables: foreign });
        }
        if let Some((version, dirty)) = litd {
            // Made by litd: adopted when it is litd's schema at the version
            // nodestore shares, clean, and nothing else.
            if dirty {
                return Err(crate::litd::Refusal::Dirty { version }.into());
            }
            if version != crate::litd::LATEST {
                return Err(crate::litd::Refusal::Version { version }.into());
            }
            crate::litd::check_shape(&crate::introspect::describe(db).await?, self.steps)?;
            return Ok(Preflight {
                applied,
                identity,
                litd: Some(version),
            });
        }
        if !tables.iter().any(|t| t == TRACKING_TABLE) && !tables.is_empty() {
            let mut tables = tables;
            tables.sort();
            return Err(MigrateError::UnrecordedTables { tables });
        }
        self.validate(&applied)?;
        Ok(Preflight {
            applied,
            identity,
            litd: None,
        })
    }

    /// Adopts a database litd made (its preflight said so), in `tx`: step
    /// 1 applied (nodestore's bookkeeping, which litd's schema lacks), and
    /// the steps litd's schema already holds recorded as adopted, with a
    /// note saying so; litd's data and tracking tables are left as they
    /// are. Returns the records written, oldest first.
    async fn adopt(
        &self,
        tx: &mut dyn Tx,
        dialect: Dialect,
        litd_version: i64,
    ) -> Result<Vec<AppliedStep>, MigrateError> {
        let mut out = Vec::new();
        let last = crate::litd::step_of_version(litd_version).unwrap_or(0);
        for step in self.planned() {
            if step.version == 1 {
                out.push(self.apply_step(tx, step, dialect).await?);
                continue;
            }
            if step.version > last {
                break;
            }
            let record = AppliedStep {
                version: step.version,
                name: step.name.to_owned(),
                checksum: step.checksum(),
                applied_at: crate::time::truncate_micros(Utc::now()),
                duration: Duration::ZERO,
            };
            let note = format!(
                "adopted: made by Lightning Terminal (litd), whose schema version {litd_version} \
                 holds this step; not applied by nodestore"
            );
            insert_tracking_row(tx, &record, Some(note)).await?;
            out.push(record);
        }
        tracing::info!(
            litd_version,
            steps = ?out.iter().map(|s| s.version).collect::<Vec<_>>(),
            "adopted a database Lightning Terminal made"
        );
        Ok(out)
    }

    /// Supplies the implementation of the code step `version`.
    pub fn code_step(mut self, version: i64, step: &'a dyn CodeStep) -> Self {
        self.code.insert(version, step);
        self
    }

    /// How long to wait for another runner before giving up (10 minutes by default).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    fn check_steps(&self) -> Result<(), MigrateError> {
        for (i, s) in self.steps.iter().enumerate() {
            if s.version != i as i64 + 1 {
                return Err(MigrateError::InvalidSteps(format!(
                    "step {} ({}) should have version {}",
                    s.version,
                    s.name,
                    i + 1
                )));
            }
        }
        Ok(())
    }

    /// Applies every pending step, in order.
    ///
    /// Idempotent: a run on a current database applies nothing and returns
    /// an empty report. On error, every step before the failing one stays
    /// applied and the failing one left nothing behind.
    pub async fn run(&self, db: &Db) -> Result<RunReport, MigrateError> {
        let mut versions = Vec::new();
        let mut report = RunReport::default();
        self.run_reporting(db, &mut versions, &mut report.applied)
            .await?;
        Ok(report)
    }

    /// [`Migrator::run`], collecting the versions this run applied in
    /// `applied` as it goes, so a caller knows what committed before a
    /// failure.
    pub async fn run_into(&self, db: &Db, applied: &mut Vec<i64>) -> Result<(), MigrateError> {
        let mut steps = Vec::new();
        self.run_reporting(db, applied, &mut steps).await
    }

    async fn run_reporting(
        &self,
        db: &Db,
        versions: &mut Vec<i64>,
        steps: &mut Vec<AppliedStep>,
    ) -> Result<(), MigrateError> {
        self.check_steps()?;
        let litd = self.preflight(db).await?.litd;
        match db.dialect() {
            Dialect::Sqlite => self.run_with(db, None, litd, versions, steps).await,
            #[cfg(not(feature = "postgres"))]
            Dialect::Postgres => Err(MigrateError::InvalidSteps(
                "postgres dialect without the postgres feature".into(),
            )),
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let pg = db.as_postgres().ok_or_else(|| {
                    MigrateError::InvalidSteps("postgres dialect without a postgres db".into())
                })?;
                let conn = pg.dedicated().await?;
                self.advisory_lock(&conn).await?;
                let result = self.run_with(db, Some(&conn), litd, versions, steps).await;
                // Closing the dedicated connection would release the lock
                // too; unlocking first hands it over without waiting for
                // the server to notice.
                let unlock = conn
                    .query_sql(crate::tx::Sql::fixed(
                        "SELECT pg_advisory_unlock($1)",
                        vec![ADVISORY_LOCK_KEY.into()],
                    ))
                    .await;
                result?;
                unlock?;
                Ok(())
            }
        }
    }

    /// On PostgreSQL, a connection of its own holding the advisory lock;
    /// `None` on SQLite, whose write transactions are the lock.
    async fn locked_connection(&self, db: &Db) -> Result<Option<DedicatedConn>, MigrateError> {
        #[cfg(feature = "postgres")]
        if let Some(pg) = db.as_postgres() {
            let conn = pg.dedicated().await?;
            self.advisory_lock(&conn).await?;
            return Ok(Some(conn));
        }
        let _ = db;
        Ok(None)
    }

    #[cfg(feature = "postgres")]
    async fn advisory_lock(&self, conn: &DedicatedConn) -> Result<(), MigrateError> {
        let deadline = Instant::now() + self.lock_wait;
        loop {
            let rows = conn
                .query_sql(crate::tx::Sql::fixed(
                    "SELECT pg_try_advisory_lock($1)",
                    vec![ADVISORY_LOCK_KEY.into()],
                ))
                .await?;
            if rows
                .first()
                .map(|r| r.bool(0))
                .transpose()?
                .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MigrateError::LockTimeout(self.lock_wait));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens a write transaction: on the dedicated connection for
    /// PostgreSQL; on SQLite with `BEGIN IMMEDIATE`, retried while another
    /// process holds the write lock.
    async fn begin(
        &self,
        db: &Db,
        conn: Option<&DedicatedConn>,
    ) -> Result<Box<dyn Tx>, MigrateError> {
        if let Some(conn) = conn {
            return Ok(conn.begin(TxMode::Write).await?);
        }
        let deadline = Instant::now() + self.lock_wait;
        loop {
            match db.begin(TxMode::Write).await {
                Ok(tx) => return Ok(tx),
                Err(e) if e.kind == ErrorKind::Retryable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) if e.kind == ErrorKind::Retryable => {
                    return Err(MigrateError::LockTimeout(self.lock_wait));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn run_with(
        &self,
        db: &Db,
        conn: Option<&DedicatedConn>,
        litd: Option<i64>,
        versions: &mut Vec<i64>,
        steps: &mut Vec<AppliedStep>,
    ) -> Result<(), MigrateError> {
        let dialect = db.dialect();
        {
            let mut tx = self.begin(db, conn).await?;
            ensure_tracking_table(&mut *tx, dialect).await?;
            let applied = read_applied(&mut *tx).await?;
            self.validate(&applied)?;
            if let Some(version) = litd
                && applied.is_empty()
            {
                let adopted = self.adopt(&mut *tx, dialect, version).await?;
                tx.commit().await?;
                versions.extend(adopted.iter().map(|s| s.version));
                steps.extend(adopted);
                return self.run_steps(db, conn, versions, steps).await;
            }
            // A database whose steps were applied before the runner kept
            // litd's tracking tables gets them now (crate::litd).
            let litd = applied
                .iter()
                .filter_map(|a| crate::litd::version_of_step(a.version))
                .max();
            if let Some(version) = litd
                && !table_exists(&mut *tx, dialect, crate::litd::SCHEMA_MIGRATIONS).await?
            {
                crate::litd::record(&mut *tx, version).await?;
            }
            tx.commit().await?;
        }
        self.run_steps(db, conn, versions, steps).await
    }

    /// Applies every planned step not applied yet, each in its own
    /// transaction.
    async fn run_steps(
        &self,
        db: &Db,
        conn: Option<&DedicatedConn>,
        versions: &mut Vec<i64>,
        steps: &mut Vec<AppliedStep>,
    ) -> Result<(), MigrateError> {
        let dialect = db.dialect();
        for step in self.planned() {
            let mut tx = self.begin(db, conn).await?;
            // Re-read under the lock: another runner may have moved on.
            let applied = read_applied(&mut *tx).await?;
            self.validate(&applied)?;
            if applied.iter().any(|a| a.version == step.version) {
                tx.rollback().await?;
                continue;
            }
            let record = match self.apply_step(&mut *tx, step, dialect).await {
                Ok(record) => record,
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            };
            tx.commit()
                .await
                .map_err(|source| MigrateError::CommitFailed {
                    version: step.version,
                    name: step.name.to_owned(),
                    source,
                })?;
            versions.push(record.version);
            steps.push(record);
        }
        Ok(())
    }

    /// Runs one step and writes its tracking row, in `tx`.
    async fn apply_step(
        &self,
        tx: &mut dyn Tx,
        step: &Step,
        dialect: Dialect,
    ) -> Result<AppliedStep, MigrateError> {
        let started = Instant::now();
        let applied_at = Utc::now();
        let outcome: Result<(), BoxError> = match step.kind {
            StepKind::Sql(sql) => tx
                .execute_script(&adapt(sql, dialect))
                .await
                .map_err(BoxError::from),
            StepKind::Builtin(builtin) => builtin.run(tx).await,
            StepKind::Code => match self.code.get(&step.version) {
                Some(code) => code.run(tx).await,
                None => {
                    return Err(MigrateError::MissingCodeStep {
                        version: step.version,
                        name: step.name.to_owned(),
                    });
                }
            },
        };
        if let Err(source) = outcome {
            tracing::debug!(version = step.version, name = step.name, error = %source, "schema step failed");
            return Err(MigrateError::StepFailed {
                version: step.version,
                name: step.name.to_owned(),
                source,
            });
        }
        tracing::info!(
            version = step.version,
            name = step.name,
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "schema step applied"
        );
        let record = AppliedStep {
            version: step.version,
            name: step.name.to_owned(),
            checksum: step.checksum(),
            applied_at: crate::time::truncate_micros(applied_at),
            // Recorded in whole microseconds; the report says the same.
            duration: Duration::from_micros(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ),
        };
        insert_tracking_row(tx, &record, None).await?;
        // litd's tracking tables, in the same transaction (crate::litd).
        if let Some(litd) = crate::litd::version_of_step(step.version) {
            crate::litd::record(tx, litd).await?;
        }
        Ok(record)
    }

    /// Runs every pending step in one transaction and rolls it back: what
    /// [`Migrator::run`] would apply, with every step (code steps included)
    /// executed and checked, and nothing kept. For dry runs.
    ///
    /// On PostgreSQL it takes the same advisory lock as `run`.
    pub async fn rehearse(&self, db: &Db) -> Result<RunReport, MigrateError> {
        self.check_steps()?;
        let litd = self.preflight(db).await?.litd;
        let dialect = db.dialect();
        let conn = self.locked_connection(db).await?;
        let mut tx = self.begin(db, conn.as_ref()).await?;
        let result = async {
            ensure_tracking_table(&mut *tx, dialect).await?;
            let mut applied = read_applied(&mut *tx).await?;
            self.validate(&applied)?;
            let mut report = RunReport::default();
            if let Some(version) = litd
                && applied.is_empty()
            {
                report.applied = self.adopt(&mut *tx, dialect, version).await?;
                applied.clone_from(&report.applied);
            }
            for step in self.planned() {
                if !applied.iter().any(|a| a.version == step.version) {
                    report
                        .applied
                        .push(self.apply_step(&mut *tx, step, dialect).await?);
                }
            }
            Ok::<_, MigrateError>(report)
        }
        .await;
        tx.rollback().await?;
        result
    }

    fn validate(&self, applied: &[AppliedStep]) -> Result<(), MigrateError> {
        let latest = self.steps.last().map_or(0, |s| s.version);
        for a in applied {
            let Some(step) = self.steps.iter().find(|s| s.version == a.version) else {
                return Err(MigrateError::NewerDatabase {
                    version: a.version,
                    name: a.name.clone(),
                    latest,
                });
            };
            let what = if a.name != step.name {
                Some("name")
            } else if !step.accepts(&a.checksum) {
                Some("checksum")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(MigrateError::Mismatch {
                    version: a.version,
                    name: step.name.to_owned(),
                    what,
                });
            }
        }
        Ok(())
    }

    /// Applies, inside `tx`, every step after `version` not applied yet
    /// but the caller's code steps (SQL and builtin ones), recording each
    /// as the runner does. For a code step that holds
    /// its transaction open for long (an online migration): the later
    /// steps then build while its writers still run, rather than after it
    /// commits. Returns the versions applied.
    ///
    /// Errors: a step that fails ([`MigrateError::StepFailed`]); `tx` is
    /// then the caller's to roll back.
    pub async fn apply_steps_after(
        &self,
        tx: &mut dyn Tx,
        version: i64,
    ) -> Result<Vec<i64>, MigrateError> {
        let dialect = tx.dialect();
        let applied = read_applied(tx).await?;
        let mut done = Vec::new();
        for step in self.planned() {
            if step.version <= version
                || matches!(step.kind, StepKind::Code)
                || applied.iter().any(|a| a.version == step.version)
            {
                continue;
            }
            self.apply_step(tx, step, dialect).await?;
            done.push(step.version);
        }
        Ok(done)
    }

    /// The notes of the tracking table, by version (a step adopted from a
    /// database litd made says so). Empty for a database whose tracking
    /// table was made before it had notes.
    pub async fn notes(
        &self,
        db: &Db,
    ) -> Result<std::collections::BTreeMap<i64, String>, MigrateError> {
        let dialect = db.dialect();
        Ok(db
            .read(|tx| {
                Box::pin(async move {
                    if !tracking_table_exists(tx, dialect).await? {
                        return Ok(Default::default());
                    }
                    if !has_column(tx, dialect, "note").await? {
                        return Ok(Default::default());
                    }
                    let rows = tx
                        .query(
                            &Query::select()
                                .columns([TrackingCol::Version, TrackingCol::Note])
                                .from(Tracking)
                                .and_where(sea_query::Expr::col(TrackingCol::Note).is_not_null())
                                .to_owned(),
                        )
                        .await?;
                    rows.iter()
                        .map(|r| Ok((r.i64(0)?, r.text(1)?)))
                        .collect::<Result<_, DbError>>()
                })
            })
            .await?)
    }

    /// The tracking table's rows, oldest first (empty for a new database).
    pub async fn applied(&self, db: &Db) -> Result<Vec<AppliedStep>, MigrateError> {
        let dialect = db.dialect();
        Ok(db
            .read(|tx| {
                Box::pin(async move {
                    if !tracking_table_exists(tx, dialect).await? {
                        return Ok(Vec::new());
                    }
                    read_applied(tx).await
                })
            })
            .await?)
    }
}
