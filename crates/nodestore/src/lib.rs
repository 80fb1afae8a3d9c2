//! nodestore for node binaries and their operators.
//!
//! # What it is
//! [`Stores::open`] gives a node its four stores (accounts, sessions,
//! firewall, actions) behind their traits, on the backend its [`Config`]
//! names, and moves a legacy key-value database into SQL on the way. The
//! `nodestore` command (`src/main.rs`) is built on the same functions:
//! [`dump`], [`import`](dump::import), [`verify`], [`status`], [`generate`].
//!
//! # The contract of [`Stores::open`]
//! With the **kv** backend it opens the key-value database, and refuses a
//! tombstoned one, naming when and into which SQL target it was migrated.
//!
//! With a **SQL** backend it connects, retries any tombstone the SQL side
//! records as pending, and applies the schema steps. Then, when the
//! configuration names a key-value database:
//! - **live, SQL not yet migrated**: with `migration = "auto"` the code step
//!   migrates all four stores in one transaction and the key-value database
//!   is tombstoned after the commit (a failed mark is recorded as pending in
//!   that same transaction and retried on the next open). With `"defer"`
//!   the stores open on the key-value database and nothing is recorded.
//!   A migration that fails leaves SQL untouched and names the failing
//!   record; the error says how to keep running with `defer`.
//! - **retired (tombstoned), SQL not migrated**: the SQL database was lost;
//!   the migration runs again from the retired database, but only into the
//!   target its tombstone names, unless `force_migration` is set: data must
//!   not fork into two SQL databases.
//! - **live, SQL already migrated**: refused (with `auto`): the key-value
//!   database is not the one the SQL data came from, or it was written to
//!   after the migration; with `defer` the stores open on it.
//!
//! With `migration = "online"` and a live key-value database that SQL
//! does not hold yet, `open` returns at once with stores serving from the
//! key-value database and migrates in the background, switching them to
//! SQL when done; `Stores::online` is the handle to that migration
//! (docs/design.md §7).
//!
//! Without a key-value database the code step records that there was none.
//!
//! [`Stores::start`] does the start-up chores: it wipes the temporary
//! kv-stores and the reserved sessions.
//!
//! # Features
//! `sqlite` and `postgres`, both on by default, choose the SQL backends
//! compiled in; the key-value backend is always there, since the
//! migration reads it. A configuration naming a backend left out of the
//! build is refused as [`Error::Config`] (docs/design.md §4.4).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

pub use error::{Error, ImportRefusal, json_text};

use decide::{OpenPlan, Refusal};
use migrator::{Retry, TombstoneMark};
use sqldb::Db;
use sqldb::migrate::NoLegacyData;
use sqldb::schema::KV_TO_SQL_VERSION;
use tombstone::{KvDb, KvOptions};
use tracing::Instrument;

pub mod config;
pub mod decide;
pub mod dump;
mod error;
pub mod generate;
pub mod online;
pub mod status;
pub mod verify;

/// The README's code, compiled as doc tests so it cannot rot.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use config::{BackendConfig, Config, MigrationPolicy};
pub use migrator::online::OnlineState;
pub use migrator::{Progress, ProgressEvent};
pub use online::OnlineMigration;
/// The stores' traits and types, so a node needs only this crate.
pub use store_accounts as accounts;
pub use store_actions as actions;
pub use store_firewall as firewall;
pub use store_sessions as sessions;

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A database named on the command line: `kv:DIR`, `sqlite:PATH`, or a
/// PostgreSQL URL (`postgres://…` or `postgresql://…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A key-value database directory.
    Kv(PathBuf),
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl FromStr for Location {
    type Err = Error;

    fn from_str(s: &str) -> Result<Location> {
        let scheme = s.split_once(':').map(|(k, _)| k.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("kv") => Ok(Location::Kv(PathBuf::from(&s[3..]))),
            Some("sqlite") => Ok(Location::Sqlite(PathBuf::from(&s[7..]))),
            Some("postgres" | "postgresql") if s.contains("://") => {
                Ok(Location::Postgres(s.to_owned()))
            }
            _ => Err(Error::Config(format!(
                "{}: expected kv:DIR, sqlite:PATH or postgres://…",
                sqldb::redact::target(s)
            ))),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Kv(p) => write!(f, "kv:{}", p.display()),
            Location::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Location::Postgres(url) => f.write_str(&sqldb::redact::target(url)),
        }
    }
}

impl Location {
    /// The backend configuration of a SQL location.
    pub fn backend(&self) -> BackendConfig {
        match self {
            Location::Kv(dir) => BackendConfig::Kv { dir: dir.clone() },
            Location::Sqlite(file) => BackendConfig::Sqlite { file: file.clone() },
            Location::Postgres(url) => BackendConfig::Postgres {
                url: url.clone(),
                pool_size: 8,
            },
        }
    }
}

/// Connects to a SQL backend (without applying anything). A SQLite file is
/// created (mode 0600) when missing, but never its directory: a directory
/// that does not exist is a mistyped path, reported as such.
pub async fn connect(backend: &BackendConfig) -> Result<Option<Db>> {
    Ok(match backend {
        BackendConfig::Kv { .. } => None,
        BackendConfig::Sqlite { file } => {
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty())
                && !parent.is_dir()
            {
                return Err(Error::Io {
                    path: parent.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such directory (it is not created: check the path)",
                    ),
                });
            }
            Some(open_sqlite(file).await?)
        }
        BackendConfig::Postgres { url, pool_size } => {
            Some(connect_postgres(url, *pool_size).await?)
        }
    })
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(file: &std::path::Path) -> Result<Db> {
    Ok(sqldb::SqliteDb::open(file, sqldb::SqliteOptions::default())
        .await?
        .into())
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, pool_size: usize) -> Result<Db> {
    Ok(
        sqldb::PostgresDb::connect(url, sqldb::PostgresOptions { pool_size })
            .await?
            .into(),
    )
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_file: &std::path::Path) -> Result<Db> {
    Err(not_built_in("sqlite"))
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(_url: &str, _pool_size: usize) -> Result<Db> {
    Err(not_built_in("postgres"))
}

/// The refusal of a backend this build leaves out (docs/design.md §4.4).
#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn not_built_in(backend: &'static str) -> Error {
    Error::Config(format!(
        "this nodestore was built without the {backend} backend (cargo feature `{backend}`)"
    ))
}

/// Connects to a SQL backend for reading only: a SQLite database is opened
/// read-only and nothing is created (a missing file is an error naming it).
pub async fn connect_read_only(backend: &BackendConfig) -> Result<Option<Db>> {
    Ok(match backend {
        #[cfg(feature = "sqlite")]
        BackendConfig::Sqlite { file } => Some(sqldb::SqliteDb::open_read_only(file).await?.into()),
        other => connect(other).await?,
    })
}

/// Which database the stores run on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The key-value database.
    Kv(KvDb),
    /// A SQL database.
    Sql(Db),
}

impl Backend {
    /// `kv:DIR`, `sqlite:PATH` or the PostgreSQL URL without password.
    pub fn describe(&self) -> String {
        match self {
            Backend::Kv(kv) => format!("kv:{}", kv.path().display()),
            Backend::Sql(db) => db.describe(),
        }
    }
}

/// What [`Stores::open`] did on the way.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// The schema steps applied.
    pub applied_steps: Vec<i64>,
    /// The key-value migration, if one ran.
    pub migration: Option<migrator::Outcome>,
    /// Pending tombstones retried.
    pub retried_tombstones: Vec<Retry>,
    /// Things the operator should know (a deferred migration, a tombstone
    /// still pending).
    pub notes: Vec<String>,
}

/// The four stores of a node.
#[derive(Clone)]
pub struct Stores {
    /// Accounts.
    pub accounts: Arc<dyn store_accounts::Store>,
    /// Sessions.
    pub sessions: Arc<dyn store_sessions::Store>,
    /// Rule kv-stores and the privacy mapper.
    pub firewall: Arc<dyn store_firewall::Store>,
    /// The action log.
    pub actions: Arc<dyn store_actions::Store>,
    /// Where they run.
    pub backend: Backend,
    /// What opening did.
    pub report: OpenReport,
    /// An online migration running in the background, when opening
    /// started one (`migration = "online"`): its state and its end. The
    /// stores switch to SQL by themselves when it succeeds; `backend`
    /// names the backend they were opened on.
    pub online: Option<online::OnlineMigration>,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("backend", &self.backend.describe())
            .finish()
    }
}

/// How [`Stores::open_with`] opens.
#[derive(Default, Clone, Copy)]
pub struct OpenOptions<'a> {
    /// Told of a migration's progress, chunk by chunk, when opening runs
    /// one; returning an error stops the migration and rolls it back.
    pub progress: Option<&'a dyn migrator::Progress>,
}

impl fmt::Debug for OpenOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenOptions")
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// A backend for logs and messages: the path, or the URL without password.
fn describe_backend(backend: &BackendConfig) -> String {
    match backend {
        BackendConfig::Kv { dir } => format!("kv:{}", dir.display()),
        BackendConfig::Sqlite { file } => format!("sqlite:{}", file.display()),
        BackendConfig::Postgres { url, .. } => sqldb::redact::target(url),
    }
}

/// What [`Stores::start`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartReport {
    /// Reserved sessions deleted.
    pub reserved_sessions_deleted: u64,
}

impl Stores {
    /// The stores of an open key-value database.
    pub fn on_kv(kv: &KvDb, report: OpenReport) -> Result<Stores> {
        Ok(Stores {
            accounts: Arc::new(store_accounts::KvStore::open(kv)?),
            sessions: Arc::new(store_sessions::KvStore::open(kv)?),
            firewall: Arc::new(store_firewall::KvStore::open(kv)?),
            actions: Arc::new(store_actions::KvStore::open(kv)?),
            backend: Backend::Kv(kv.clone()),
            report,
            online: None,
        })
    }

    /// The stores of a SQL database whose schema is applied.
    pub fn on_sql(db: &Db, report: OpenReport) -> Stores {
        Stores {
            accounts: Arc::new(store_accounts::SqlStore::new(db.clone())),
            sessions: Arc::new(store_sessions::SqlStore::new(db.clone())),
            firewall: Arc::new(store_firewall::SqlStore::new(db.clone())),
            actions: Arc::new(store_actions::SqlStore::new(db.clone())),
            backend: Backend::Sql(db.clone()),
            report,
            online: None,
        }
    }

    /// Opens the stores `config` names; see the crate docs for what happens
    /// on the way. Logs through `tracing` in a span `open` that names the
    /// backend (never a password), and logs an error on its way out.
    pub async fn open(config: &Config) -> Result<Stores> {
        Stores::open_with(config, &OpenOptions::default()).await
    }

    /// [`Stores::open`] with a progress observer for a migration it runs.
    pub async fn open_with(config: &Config, options: &OpenOptions<'_>) -> Result<Stores> {
        let span = tracing::info_span!("open", backend = %describe_backend(&config.backend));
        let started = std::time::Instant::now();
        let result = Stores::open_inner(config, options)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match &result {
            Ok(stores) => tracing::info!(
                applied_steps = ?stores.report.applied_steps,
                migrated = stores.report.migration.is_some(),
                duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "stores open"
            ),
            // Returned to the node, which reports it: logged for the trail.
            Err(e) => tracing::debug!(error = %e, "opening the stores failed"),
        }
        for note in result.iter().flat_map(|s| &s.report.notes) {
            tracing::info!(%note, "while opening");
        }
        result
    }

    async fn open_inner(config: &Config, options: &OpenOptions<'_>) -> Result<Stores> {
        let Some(db) = connect(&config.backend).await? else {
            let BackendConfig::Kv { dir } = &config.backend else {
                return Err(Error::Config("unreachable backend".into()));
            };
            let kv = KvDb::open(dir, &KvOptions::default())?;
            return Stores::on_kv(&kv, OpenReport::default());
        };
        let mut report = OpenReport {
            retried_tombstones: migrator::retry_pending_tombstone(&db, &TombstoneMark).await?,
            ..OpenReport::default()
        };
        for r in &report.retried_tombstones {
            if let Retry::Failed { path, reason } = r {
                report.notes.push(format!(
                    "the tombstone of {path} is still pending ({reason}); it is retried at the next open"
                ));
            }
        }
        // The facts of both sides, then the one decision (crate::decide),
        // which `nodestore status` tells in words.
        let dir = match &config.kv_dir {
            Some(dir) => tombstone::status(dir)?.map(|_| dir.clone()),
            None => None,
        };
        let source = match &dir {
            Some(dir) => Some(migrator::inspect_source(dir).await.map_err(|e| {
                if config.migration == MigrationPolicy::Auto {
                    // What `auto` migrates, it reports as a migration that
                    // did not happen (and suggests deferring it).
                    Error::Migration {
                        kv: dir.display().to_string(),
                        target: db.describe(),
                        failure: Box::new(migrator::Failure::from(e)),
                        during_open: true,
                    }
                } else {
                    Error::from(e)
                }
            })?),
            None => None,
        };
        let target = migrator::inspect_target(&db).await?;
        let plan = decide::decide(config, source.as_ref(), decide::SqlSide::Present(&target));
        tracing::debug!(%plan, "open decided");
        let (dir, target) = match (plan, dir) {
            (OpenPlan::Refuse(Refusal::StagedWithoutKv { kv }), _) => {
                return Err(Error::UnfinishedOnlineMigration {
                    target: db.describe(),
                    kv,
                });
            }
            (OpenPlan::OnSql(_), _) | (_, None) => {
                report.applied_steps = apply_schema(&db).await?;
                return Ok(Stores::on_sql(&db, report));
            }
            (OpenPlan::Refuse(Refusal::RetiredAndDeferred), Some(dir)) => {
                return Err(Error::RetiredAndDeferred {
                    kv: dir.display().to_string(),
                });
            }
            (OpenPlan::Refuse(Refusal::Migration(e)), Some(dir)) => {
                return Err(Error::Migration {
                    kv: dir.display().to_string(),
                    target: db.describe(),
                    failure: Box::new(migrator::Failure::from(*e)),
                    during_open: true,
                });
            }
            (OpenPlan::Deferred, Some(dir)) => {
                report
                    .notes
                    .push("migration deferred: running on the key-value database".into());
                return Stores::on_kv(&KvDb::open(&dir, &KvOptions::default())?, report);
            }
            (OpenPlan::MigrateOnline { .. }, Some(dir)) => {
                return Stores::online(config, &dir, db, report);
            }
            // Offline: a migration, or finishing one an earlier run committed.
            (_, Some(dir)) => (dir, db.describe()),
        };
        let opts = migrator::Options {
            force: config.force_migration,
            ..migrator::Options::default()
        };
        let outcome = migrator::migrate(&dir, &db, &opts, options.progress)
            .await
            .map_err(|failure| Error::Migration {
                kv: dir.display().to_string(),
                target: target.clone(),
                failure: Box::new(failure),
                during_open: true,
            })?;
        if let migrator::TombstoneState::Pending(reason) = &outcome.tombstone {
            report.notes.push(format!(
                "migrated, but {} could not be tombstoned yet ({reason}); it is retried at the next open",
                dir.display()
            ));
        }
        if let Some(reason) = &outcome.unfinished_steps {
            report.notes.push(format!(
                "the data is in SQL, but later schema steps failed ({reason}); they are retried at the next open"
            ));
        }
        report.applied_steps = outcome.applied_steps.clone();
        report.migration = Some(outcome);
        Ok(Stores::on_sql(&db, report))
    }

    /// Shuts the stores down cleanly: the key-value database is flushed to
    /// disk, SQLite's write-ahead log is checkpointed into the database
    /// file, PostgreSQL's pool is closed. Clones of these stores still held
    /// elsewhere fail (PostgreSQL) or keep working (sled, SQLite) afterwards.
    ///
    /// Errors: the flush or the checkpoint failed ([`Error::Kv`],
    /// [`Error::Db`]); the data committed before is safe either way.
    pub async fn close(self) -> Result<()> {
        let Stores {
            backend, online, ..
        } = self;
        if let Some(online) = online {
            // A migration still running rolls back (a copy it committed as
            // staged stays, for the next migration to discard); one that
            // switched leaves SQL to close as well.
            online.stop().await;
            if matches!(
                online.state(),
                migrator::online::OnlineState::Switched { .. }
            ) {
                online.db.close().await?;
            }
        }
        match backend {
            Backend::Kv(kv) => {
                tokio::task::spawn_blocking(move || kv.flush())
                    .await
                    .map_err(|source| Error::Interrupted {
                        what: "flushing the key-value database",
                        source,
                    })??;
                tracing::info!("key-value database flushed and closed");
            }
            Backend::Sql(db) => db.close().await?,
        }
        Ok(())
    }

    /// Opens the stores on the live key-value database at `dir`, routed,
    /// and starts the online migration into `db` in the background
    /// (docs/design.md §7).
    fn online(
        config: &Config,
        dir: &std::path::Path,
        db: Db,
        mut report: OpenReport,
    ) -> Result<Stores> {
        use migrator::online::Online;
        let kv = KvDb::open(dir, &KvOptions::default())?;
        let kv_accounts: Arc<dyn store_accounts::Store> =
            Arc::new(store_accounts::KvStore::open(&kv)?);
        let kv_sessions: Arc<dyn store_sessions::Store> =
            Arc::new(store_sessions::KvStore::open(&kv)?);
        let kv_firewall: Arc<dyn store_firewall::Store> =
            Arc::new(store_firewall::KvStore::open(&kv)?);
        let kv_actions: Arc<dyn store_actions::Store> =
            Arc::new(store_actions::KvStore::open(&kv)?);
        let routed = online::Routed::over(
            kv_accounts.clone(),
            kv_sessions.clone(),
            kv_firewall.clone(),
            kv_actions.clone(),
        );
        let shared = Online::new(
            routed.protocol().clone(),
            migrator::replay::LiveStores {
                accounts: kv_accounts,
                sessions: kv_sessions,
                firewall: kv_firewall,
                actions: kv_actions,
            },
            config.online_pause_budget,
        );
        #[cfg(feature = "sqlite")]
        let shared = match db.as_sqlite() {
            Some(sqlite) => shared.with_sqlite_file(sqlite.path()),
            None => shared,
        };
        let shared = Arc::new(shared);
        let opts = migrator::Options {
            force: config.force_migration,
            ..migrator::Options::default()
        };
        let task = {
            let (kv, db) = (kv.clone(), db.clone());
            let (routed, shared) = (routed.clone(), shared.clone());
            let span = tracing::info_span!(
                "online_migration",
                kv = %kv.path().display(),
                target = %db.describe()
            );
            tokio::spawn(
                async move {
                    let switch = || {
                        routed.switch(
                            Arc::new(store_accounts::SqlStore::new(db.clone())),
                            Arc::new(store_sessions::SqlStore::new(db.clone())),
                            Arc::new(store_firewall::SqlStore::new(db.clone())),
                            Arc::new(store_actions::SqlStore::new(db.clone())),
                        );
                    };
                    // A failure stops the journaling itself and says why in
                    // the state; the stores stay on the key-value database.
                    let _ =
                        migrator::online::migrate_online(&kv, &db, &opts, &shared, None, switch)
                            .await;
                }
                .instrument(span),
            )
        };
        report.notes.push(
            "online migration: serving from the key-value database while it moves to SQL".into(),
        );
        Ok(Stores {
            accounts: Arc::from(routed.accounts()),
            sessions: Arc::from(routed.sessions()),
            firewall: Arc::from(routed.firewall()),
            actions: Arc::from(routed.actions()),
            backend: Backend::Kv(kv),
            report,
            online: Some(online::OnlineMigration::new(
                routed.protocol().clone(),
                task,
                db,
            )),
        })
    }

    /// The start-up chores: wipes temporary kv-stores and reserved sessions.
    pub async fn start(&self) -> Result<StartReport> {
        self.firewall.delete_temp_kv_stores().await?;
        Ok(StartReport {
            reserved_sessions_deleted: self.sessions.delete_reserved_sessions().await?,
        })
    }
}

/// Applies the schema steps on a node without key-value data.
async fn apply_schema(db: &Db) -> Result<Vec<i64>> {
    let report = migrator::schema::runner()
        .code_step(KV_TO_SQL_VERSION, &NoLegacyData)
        .run(db)
        .await?;
    Ok(report.applied.iter().map(|s| s.version).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_reaches_the_caller_one_way_whoever_met_it() {
        use sqldb::{DbError, ErrorKind};
        let busy = || DbError::new("postgres", ErrorKind::Retryable, "deadlock detected");
        let from_a_store = Error::from(store_sessions::Error::from(busy()));
        let from_the_migrator = Error::from(migrator::Error::Db(busy()));
        for e in [from_a_store, from_the_migrator, Error::from(busy())] {
            assert!(
                matches!(&e, Error::Db(db) if db.kind == ErrorKind::Retryable),
                "{e}"
            );
            assert!(e.is_retryable(), "{e}");
        }
        let refused = Error::from(store_accounts::Error::InvalidInput {
            record: "account 00".into(),
            field: "label",
            reason: "too long".into(),
        });
        assert!(matches!(refused, Error::Accounts(_)), "{refused}");
        assert!(!refused.is_retryable());
    }

    #[test]
    fn output_that_cannot_be_written_as_json_is_an_error() {
        // JSON object keys must be strings; a pair is not.
        let value: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let err = json_text("the report", &value, false).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Json {
                    what: "the report",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("the report could not be written as JSON")
        );
        assert_eq!(json_text("n", &[1, 2], false).unwrap(), "[1,2]");
    }
}
