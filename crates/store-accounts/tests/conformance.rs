//! The accounts conformance suite on sled, SQLite and PostgreSQL.

use std::ops::Deref;

use store_accounts::{KvStore, SqlStore, Store};
use testkit::sql::SqlFixture;
use tombstone::{KvDb, KvOptions};

/// A store and whatever keeps its database alive.
struct Fixture {
    store: Box<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _sql: Option<SqlFixture>,
}

impl Deref for Fixture {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

async fn kv_store(_test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let db = KvDb::open(dir.path().join("kv"), &KvOptions::default()).unwrap();
    Some(Fixture {
        store: Box::new(KvStore::open(&db).unwrap()),
        _dir: Some(dir),
        _sql: None,
    })
}

async fn sql_store(fx: SqlFixture) -> Option<Fixture> {
    let db = fx.open_migrated().await;
    Some(Fixture {
        store: Box::new(SqlStore::new(db)),
        _dir: None,
        _sql: Some(fx),
    })
}

async fn sqlite_store(test: &str) -> Option<Fixture> {
    sql_store(testkit::sql::sqlite(test).await?).await
}

async fn postgres_store(test: &str) -> Option<Fixture> {
    sql_store(testkit::sql::postgres(test).await?).await
}

store_accounts::conformance_tests!(kv => kv_store);
store_accounts::conformance_tests!(sqlite => sqlite_store);
store_accounts::conformance_tests!(postgres => postgres_store);
