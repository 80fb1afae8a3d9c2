//! The firewall conformance suite on sled, SQLite and PostgreSQL.

use std::ops::Deref;

use store_firewall::conformance::Stores;
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
        firewall: Box::new(store_firewall::KvStore::open(&db).unwrap()),
        sessions: Box::new(store_sessions::KvStore::open(&db).unwrap()),
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
        firewall: Box::new(store_firewall::SqlStore::new(db.clone())),
        sessions: Box::new(store_sessions::SqlStore::new(db)),
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

store_firewall::conformance_tests!(kv => kv_stores);
store_firewall::conformance_tests!(sqlite => sqlite_stores);
store_firewall::conformance_tests!(postgres => postgres_stores);
