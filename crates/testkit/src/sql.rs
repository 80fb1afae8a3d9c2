//! Fixtures that hand a test an empty SQL database as a [`sqldb::Db`].

use sqldb::migrate::NoLegacyData;
use sqldb::schema::KV_TO_SQL_VERSION;
use sqldb::{Db, PostgresDb, PostgresOptions, SqliteDb, SqliteOptions};

use crate::pg::{TestDatabase, fresh_database};

/// An empty database for one test; removed when dropped.
#[derive(Debug)]
pub enum SqlFixture {
    /// A SQLite file in a temporary directory.
    Sqlite(tempfile::TempDir),
    /// A PostgreSQL database of its own.
    Postgres(TestDatabase),
}

/// The connection pool size tests use: small, so a leak shows up as a hang
/// in one test rather than a server out of connections.
const TEST_POOL_SIZE: usize = 4;

impl SqlFixture {
    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            SqlFixture::Sqlite(_) => "sqlite",
            SqlFixture::Postgres(_) => "postgres",
        }
    }

    /// A SQLite fixture.
    pub fn sqlite() -> SqlFixture {
        #[allow(
            clippy::expect_used,
            reason = "a fixture that cannot be made fails the test that asked for it"
        )]
        SqlFixture::Sqlite(tempfile::tempdir().expect("temporary directory"))
    }

    /// A new handle to the fixture's database (each call opens new
    /// connections, like a second process would).
    #[allow(
        clippy::expect_used,
        reason = "a fixture that cannot be made fails the test that asked for it"
    )]
    pub async fn open(&self) -> Db {
        match self {
            SqlFixture::Sqlite(dir) => {
                SqliteDb::open(dir.path().join("test.db"), SqliteOptions::default())
                    .await
                    .expect("open sqlite")
                    .into()
            }
            SqlFixture::Postgres(db) => PostgresDb::connect(
                db.url(),
                PostgresOptions {
                    pool_size: TEST_POOL_SIZE,
                },
            )
            .await
            .expect("connect to postgres")
            .into(),
        }
    }

    /// [`SqlFixture::open`], then every schema step applied, the key-value
    /// step with [`NoLegacyData`] (a test database has none).
    #[allow(
        clippy::expect_used,
        reason = "a fixture that cannot be made fails the test that asked for it"
    )]
    pub async fn open_migrated(&self) -> Db {
        let db = self.open().await;
        migrator::schema::runner()
            .code_step(KV_TO_SQL_VERSION, &NoLegacyData)
            .run(&db)
            .await
            .expect("apply schema");
        db
    }
}

impl SqlFixture {
    /// [`SqlFixture::open`], then the schema steps before the migration's
    /// own: the tables exist and are empty, as a migration finds a target
    /// it may write into. Tests put an obstacle in the migration's way here.
    #[allow(
        clippy::expect_used,
        reason = "a fixture that cannot be made fails the test that asked for it"
    )]
    pub async fn open_before_data(&self) -> Db {
        let db = self.open().await;
        migrator::schema::runner()
            .through(KV_TO_SQL_VERSION - 1)
            .run(&db)
            .await
            .expect("apply the schema before the data step");
        db
    }
}

/// A SQLite fixture (always available).
pub async fn sqlite(_test: &str) -> Option<SqlFixture> {
    Some(SqlFixture::sqlite())
}

/// A PostgreSQL fixture, or `None` after reporting a skip (see
/// [`fresh_database`]).
pub async fn postgres(test: &str) -> Option<SqlFixture> {
    fresh_database(test).await.map(SqlFixture::Postgres)
}

/// Waits until some session of a PostgreSQL server waits for a row lock
/// (`pg_stat_activity`), so a test can build a deadlock in a known order;
/// panics after about five seconds without one.
#[allow(clippy::panic, reason = "a test helper: a failed expectation panics")]
pub async fn until_a_session_waits_for_a_lock(db: &Db) {
    for _ in 0..500 {
        let waiting: Result<i64, sqldb::DbError> = db
            .read(|tx| {
                Box::pin(async move {
                    let rows = tx
                        .query_sql(sqldb::Sql::fixed(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                            vec![],
                        ))
                        .await?;
                    rows.first().map_or(Ok(0), |r| r.i64(0))
                })
            })
            .await;
        match waiting {
            Ok(n) if n > 0 => return,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            Err(e) => panic!("cannot ask the server who waits: {e}"),
        }
    }
    panic!("no session came to wait for a lock within five seconds");
}

/// Something under test (a store, a set of stores) and whatever keeps its
/// database alive: a temporary directory or a SQL fixture. The value is
/// dropped first, then its database. Boxed, so a `Held<dyn Store>` derefs
/// straight to the trait object a conformance suite takes.
pub struct Held<T: ?Sized> {
    value: Box<T>,
    _dir: Option<tempfile::TempDir>,
    _sql: Option<SqlFixture>,
}

impl<T: ?Sized> std::ops::Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: ?Sized> Held<T> {
    /// `make` over a fresh temporary directory, which lives as long as the
    /// value (a key-value database goes in a subdirectory of it).
    #[allow(
        clippy::expect_used,
        reason = "a fixture that cannot be made fails the test that asked for it"
    )]
    pub fn in_temp_dir(make: impl FnOnce(&std::path::Path) -> Box<T>) -> Held<T> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Held {
            value: make(dir.path()),
            _dir: Some(dir),
            _sql: None,
        }
    }

    /// `make` over `fx`'s database with every schema step applied.
    pub async fn on_sql(fx: SqlFixture, make: impl FnOnce(Db) -> Box<T>) -> Held<T> {
        let db = fx.open_migrated().await;
        Held {
            value: make(db),
            _dir: None,
            _sql: Some(fx),
        }
    }
}
