//! SQL databases for nodestore: SQLite and PostgreSQL behind one executor
//! interface, schema steps, and the runner that applies a list of them.
//!
//! # What this crate is
//! The layer every SQL store backend is written on. Store crates build
//! statements with sea-query in backend-neutral functions and run them
//! through a [`Tx`]; the SQLite and PostgreSQL executors are the only code
//! that differs between the two backends.
//!
//! - [`Db`]: a handle to either database, with [`Db::write`] and
//!   [`Db::read`] transactions that commit exactly when the closure returns
//!   `Ok`.
//! - [`SqliteDb`]: connections on worker threads (rusqlite never runs on the
//!   async executor), one writer taking `BEGIN IMMEDIATE`, WAL readers.
//! - [`PostgresDb`]: a deadpool-postgres pool built from a connection URL.
//! - [`schema`]: what a step is, written once in a portable dialect and
//!   adapted per backend by a documented rule; step 1 and this crate's own
//!   steps. Each store declares its tables' steps, and the migrator
//!   composes nodestore's list (`migrator::schema::STEPS`).
//! - [`migrate`]: the runner with checksums, refusals and locking.
//! - [`time`]: timestamps in UTC with microsecond precision on both backends.
//!
//! # Contract
//! - Every statement with values is built by sea-query and bound as
//!   parameters; the only literal SQL is the schema files and fixed catalog
//!   queries ([`Sql::fixed`]).
//! - Driver errors are classified in one function per backend into
//!   [`ErrorKind`]s (unique violation, foreign key violation, retryable,
//!   other), so callers never look at driver codes.
//! - A transaction dropped without commit is rolled back.
//! - A [`Db::write`] or [`Db::read`] transaction that PostgreSQL ends for
//!   its timing (a deadlock, a serialization failure) is run again, whole,
//!   up to [`TX_ATTEMPTS`] times, so its closure may run more than once;
//!   [`Db::write_once`] never runs again (docs/design.md §4.5).
//!
//! # Features
//! `sqlite` ([`SqliteDb`], rusqlite with SQLite compiled in) and `postgres`
//! ([`PostgresDb`]: tokio-postgres, deadpool and rustls), both on by
//! default; at least one is required (docs/design.md §4.4).
//!
//! # Example
#![cfg_attr(feature = "sqlite", doc = "```")]
#![cfg_attr(not(feature = "sqlite"), doc = "```ignore")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use sqldb::migrate::Migrator;
//! use sqldb::schema::{Step, StepKind};
//! use sqldb::{Db, SqliteDb, SqliteOptions};
//!
//! static STEPS: &[Step] = &[Step {
//!     version: 1,
//!     name: "notes",
//!     kind: StepKind::Sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"),
//! }];
//! let dir = tempfile::tempdir().unwrap();
//! let db: Db = SqliteDb::open(dir.path().join("node.db"), SqliteOptions::default())
//!     .await
//!     .unwrap()
//!     .into();
//! let report = Migrator::with_steps(STEPS).run(&db).await.unwrap();
//! assert_eq!(report.applied.len(), 1);
//! # });
//! ```

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("sqldb needs a backend: enable the `sqlite` or the `postgres` feature (or both)");

pub mod deferred;
pub mod error;
pub mod introspect;
pub mod litd;
pub mod migrate;
pub mod ordered;
#[cfg(feature = "postgres")]
pub mod pg_tls;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod redact;
pub mod row;
pub mod scan;
pub mod schema;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod time;
pub mod tx;

pub use error::{BoxError, DbError, DbResult, ErrorKind};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresDb, PostgresOptions};
pub use row::{Cell, Row};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteDb, SqliteOptions, Synchronous};
pub use tx::{Db, Dialect, Sql, TX_ATTEMPTS, Tx, TxExt, TxMode, append, retry_pause, run_again};

/// Re-exported so store crates build statements with the same version.
pub use sea_query;
