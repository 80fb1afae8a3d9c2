//! The accounts conformance suite on sled, SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use store_accounts::{KvStore, SqlStore, Store};
use testkit::sql::Held;
use tombstone::{KvDb, KvOptions};

async fn kv_store(_test: &str) -> Option<Held<dyn Store>> {
    Some(Held::<dyn Store>::in_temp_dir(|dir| {
        let db = KvDb::open(dir.join("kv"), &KvOptions::default()).unwrap();
        Box::new(KvStore::open(&db).unwrap())
    }))
}

async fn sqlite_store(test: &str) -> Option<Held<dyn Store>> {
    let fx = testkit::sql::sqlite(test).await?;
    Some(Held::<dyn Store>::on_sql(fx, |db| Box::new(SqlStore::new(db))).await)
}

async fn postgres_store(test: &str) -> Option<Held<dyn Store>> {
    let fx = testkit::sql::postgres(test).await?;
    Some(Held::<dyn Store>::on_sql(fx, |db| Box::new(SqlStore::new(db))).await)
}

store_accounts::conformance_tests!(kv => kv_store);
store_accounts::conformance_tests!(sqlite => sqlite_store);
store_accounts::conformance_tests!(postgres => postgres_store);
