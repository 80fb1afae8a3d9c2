//! The actions conformance suite on sled, SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::sync::Arc;

use store_actions::ManualClock;
use store_actions::conformance::{Stores, start_time};
use testkit::sql::{Held, SqlFixture};
use tombstone::{KvDb, KvOptions};

async fn kv_stores(_test: &str) -> Option<Held<Stores>> {
    Some(Held::in_temp_dir(|dir| {
        let db = KvDb::open(dir.join("kv"), &KvOptions::default()).unwrap();
        let clock = Arc::new(ManualClock::new(start_time()));
        Box::new(Stores {
            actions: Box::new(
                store_actions::KvStore::open(&db)
                    .unwrap()
                    .with_clock(clock.clone()),
            ),
            sessions: Box::new(store_sessions::KvStore::open(&db).unwrap()),
            accounts: Box::new(store_accounts::KvStore::open(&db).unwrap()),
            clock,
        })
    }))
}

async fn sql_stores(fx: SqlFixture) -> Held<Stores> {
    Held::on_sql(fx, |db| {
        let clock = Arc::new(ManualClock::new(start_time()));
        Box::new(Stores {
            actions: Box::new(store_actions::SqlStore::new(db.clone()).with_clock(clock.clone())),
            sessions: Box::new(store_sessions::SqlStore::new(db.clone())),
            accounts: Box::new(store_accounts::SqlStore::new(db)),
            clock,
        })
    })
    .await
}

async fn sqlite_stores(test: &str) -> Option<Held<Stores>> {
    Some(sql_stores(testkit::sql::sqlite(test).await?).await)
}

async fn postgres_stores(test: &str) -> Option<Held<Stores>> {
    Some(sql_stores(testkit::sql::postgres(test).await?).await)
}

store_actions::conformance_tests!(kv => kv_stores);
store_actions::conformance_tests!(sqlite => sqlite_stores);
store_actions::conformance_tests!(postgres => postgres_stores);
