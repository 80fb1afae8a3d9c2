//! The firewall conformance suite on sled, SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use store_firewall::conformance::Stores;
use testkit::sql::{Held, SqlFixture};
use tombstone::{KvDb, KvOptions};

async fn kv_stores(_test: &str) -> Option<Held<Stores>> {
    Some(Held::in_temp_dir(|dir| {
        let db = KvDb::open(dir.join("kv"), &KvOptions::default()).unwrap();
        Box::new(Stores {
            firewall: Box::new(store_firewall::KvStore::open(&db).unwrap()),
            sessions: Box::new(store_sessions::KvStore::open(&db).unwrap()),
        })
    }))
}

async fn sql_stores(fx: SqlFixture) -> Held<Stores> {
    Held::on_sql(fx, |db| {
        Box::new(Stores {
            firewall: Box::new(store_firewall::SqlStore::new(db.clone())),
            sessions: Box::new(store_sessions::SqlStore::new(db)),
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

store_firewall::conformance_tests!(kv => kv_stores);
store_firewall::conformance_tests!(sqlite => sqlite_stores);
store_firewall::conformance_tests!(postgres => postgres_stores);
