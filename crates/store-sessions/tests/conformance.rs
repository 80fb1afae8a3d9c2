//! The sessions conformance suite on sled, SQLite and PostgreSQL.

use std::ops::Deref;

use store_sessions::conformance::Stores;
use testkit::sql::SqlFixture;
use tombstone::{KvDb, KvOptions};

/// The stores and whatever keeps their database alive.
struct Fixture {
    stores: Stores,
    _dir: Option<tempfile::TempDir>,
    _sql: Option<SqlFixture>,
}

impl Deref for Fixture {
    type Target = Stores;
    fn deref(&self) -> &Stores {
        &self.stores
    }
}

async fn kv_stores(_test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let db = KvDb::open(dir.path().join("kv"), &KvOptions::default()).unwrap();
    let stores = Stores {
        sessions: Box::new(store_sessions::KvStore::open(&db).unwrap()),
        accounts: Box::new(store_accounts::KvStore::open(&db).unwrap()),
    };
    Some(Fixture {
        stores,
        _dir: Some(dir),
        _sql: None,
    })
}

async fn sql_stores(fx: SqlFixture) -> Option<Fixture> {
    let db = fx.open_migrated().await;
    let stores = Stores {
        sessions: Box::new(store_sessions::SqlStore::new(db.clone())),
        accounts: Box::new(store_accounts::SqlStore::new(db)),
    };
    Some(Fixture {
        stores,
        _dir: None,
        _sql: Some(fx),
    })
}

async fn sqlite_stores(test: &str) -> Option<Fixture> {
    sql_stores(testkit::sql::sqlite(test).await?).await
}

async fn postgres_stores(test: &str) -> Option<Fixture> {
    sql_stores(testkit::sql::postgres(test).await?).await
}

store_sessions::conformance_tests!(kv => kv_stores);
store_sessions::conformance_tests!(sqlite => sqlite_stores);
store_sessions::conformance_tests!(postgres => postgres_stores);
