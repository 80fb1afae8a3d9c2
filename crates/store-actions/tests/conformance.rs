//! The actions conformance suite on sled, SQLite and PostgreSQL.

use std::ops::Deref;
use std::sync::Arc;

use store_actions::ManualClock;
use store_actions::conformance::{Stores, start_time};
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
    let clock = Arc::new(ManualClock::new(start_time()));
    let stores = Stores {
        actions: Box::new(
            store_actions::KvStore::open(&db)
                .unwrap()
                .with_clock(clock.clone()),
        ),
        sessions: Box::new(store_sessions::KvStore::open(&db).unwrap()),
        accounts: Box::new(store_accounts::KvStore::open(&db).unwrap()),
        clock,
    };
    Some(Fixture {
        stores,
        _dir: Some(dir),
        _sql: None,
    })
}

async fn sql_stores(fx: SqlFixture) -> Option<Fixture> {
    let db = fx.open_migrated().await;
    let clock = Arc::new(ManualClock::new(start_time()));
    let stores = Stores {
        actions: Box::new(store_actions::SqlStore::new(db.clone()).with_clock(clock.clone())),
        sessions: Box::new(store_sessions::SqlStore::new(db.clone())),
        accounts: Box::new(store_accounts::SqlStore::new(db)),
        clock,
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

store_actions::conformance_tests!(kv => kv_stores);
store_actions::conformance_tests!(sqlite => sqlite_stores);
store_actions::conformance_tests!(postgres => postgres_stores);
