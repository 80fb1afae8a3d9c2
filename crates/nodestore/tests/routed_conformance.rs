//! Every store's conformance suite through the stores an online migration
//! routes (docs/design.md §7.4): the routing is a backend like the others.
//! On `kv` the routed stores serve from the key-value database, every write
//! through the gate and the journal, as during a migration; on `sqlite` and
//! `postgres` they began on a key-value database and were switched to SQL,
//! as the cutover switches them.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::Path;
use std::sync::Arc;

use nodestore::online::Routed;
use sqldb::Db;
use testkit::sql::{Held, SqlFixture};
use tombstone::{KvDb, KvOptions};

/// Routed over a new key-value database in `dir`.
fn routed_kv(dir: &Path, clock: Option<Arc<store_actions::ManualClock>>) -> Routed {
    let db = KvDb::open(dir.join("kv"), &KvOptions::default()).unwrap();
    let actions = store_actions::KvStore::open(&db).unwrap();
    let actions = match clock {
        Some(c) => actions.with_clock(c),
        None => actions,
    };
    Routed::over(
        Arc::new(store_accounts::KvStore::open(&db).unwrap()),
        Arc::new(store_sessions::KvStore::open(&db).unwrap()),
        Arc::new(store_firewall::KvStore::open(&db).unwrap()),
        Arc::new(actions),
    )
}

/// Routed over a new key-value database, then switched to `db`.
fn routed_sql(db: Db, clock: Option<Arc<store_actions::ManualClock>>) -> Routed {
    let dir = tempfile::tempdir().unwrap();
    let routed = routed_kv(dir.path(), None);
    let actions = store_actions::SqlStore::new(db.clone());
    let actions = match clock {
        Some(c) => actions.with_clock(c),
        None => actions,
    };
    routed.switch(
        Arc::new(store_accounts::SqlStore::new(db.clone())),
        Arc::new(store_sessions::SqlStore::new(db.clone())),
        Arc::new(store_firewall::SqlStore::new(db)),
        Arc::new(actions),
    );
    routed
}

async fn sqlite(test: &str) -> Option<SqlFixture> {
    testkit::sql::sqlite(test).await
}

async fn postgres(test: &str) -> Option<SqlFixture> {
    testkit::sql::postgres(test).await
}

/// The `kv`, `sqlite` and `postgres` fixtures of a suite whose stores
/// `of` takes from a [`Routed`].
macro_rules! routed_fixtures {
    ($stores:ty) => {
        async fn kv_stores(_test: &str) -> Option<Held<$stores>> {
            Some(Held::in_temp_dir(|dir| of(&routed_kv(dir, None))))
        }

        async fn sqlite_stores(test: &str) -> Option<Held<$stores>> {
            let fx = sqlite(test).await?;
            Some(Held::on_sql(fx, |db| of(&routed_sql(db, None))).await)
        }

        async fn postgres_stores(test: &str) -> Option<Held<$stores>> {
            let fx = postgres(test).await?;
            Some(Held::on_sql(fx, |db| of(&routed_sql(db, None))).await)
        }
    };
}

mod accounts {
    use super::*;
    use store_accounts::Store;

    async fn kv_store(_test: &str) -> Option<Held<dyn Store>> {
        Some(Held::<dyn Store>::in_temp_dir(|dir| {
            routed_kv(dir, None).accounts()
        }))
    }

    async fn sqlite_store(test: &str) -> Option<Held<dyn Store>> {
        let fx = sqlite(test).await?;
        Some(Held::<dyn Store>::on_sql(fx, |db| routed_sql(db, None).accounts()).await)
    }

    async fn postgres_store(test: &str) -> Option<Held<dyn Store>> {
        let fx = postgres(test).await?;
        Some(Held::<dyn Store>::on_sql(fx, |db| routed_sql(db, None).accounts()).await)
    }

    store_accounts::conformance_tests!(kv => kv_store);
    store_accounts::conformance_tests!(sqlite => sqlite_store);
    store_accounts::conformance_tests!(postgres => postgres_store);
}

mod sessions {
    use super::*;
    use store_sessions::conformance::Stores;

    fn of(r: &Routed) -> Box<Stores> {
        Box::new(Stores {
            sessions: r.sessions(),
            accounts: r.accounts(),
        })
    }

    routed_fixtures!(Stores);

    store_sessions::conformance_tests!(kv => kv_stores);
    store_sessions::conformance_tests!(sqlite => sqlite_stores);
    store_sessions::conformance_tests!(postgres => postgres_stores);
}

mod firewall {
    use super::*;
    use store_firewall::conformance::Stores;

    fn of(r: &Routed) -> Box<Stores> {
        Box::new(Stores {
            firewall: r.firewall(),
            sessions: r.sessions(),
        })
    }

    routed_fixtures!(Stores);

    store_firewall::conformance_tests!(kv => kv_stores);
    store_firewall::conformance_tests!(sqlite => sqlite_stores);
    store_firewall::conformance_tests!(postgres => postgres_stores);
}

mod actions {
    use super::*;
    use store_actions::ManualClock;
    use store_actions::conformance::{Stores, start_time};

    fn of(r: &Routed, clock: Arc<ManualClock>) -> Box<Stores> {
        Box::new(Stores {
            actions: r.actions(),
            sessions: r.sessions(),
            accounts: r.accounts(),
            clock,
        })
    }

    async fn kv_stores(_test: &str) -> Option<Held<Stores>> {
        let clock = Arc::new(ManualClock::new(start_time()));
        Some(Held::in_temp_dir(|dir| {
            of(&routed_kv(dir, Some(clock.clone())), clock)
        }))
    }

    async fn sql_stores(fx: SqlFixture) -> Held<Stores> {
        let clock = Arc::new(ManualClock::new(start_time()));
        Held::on_sql(fx, |db| of(&routed_sql(db, Some(clock.clone())), clock)).await
    }

    async fn sqlite_stores(test: &str) -> Option<Held<Stores>> {
        Some(sql_stores(sqlite(test).await?).await)
    }

    async fn postgres_stores(test: &str) -> Option<Held<Stores>> {
        Some(sql_stores(postgres(test).await?).await)
    }

    store_actions::conformance_tests!(kv => kv_stores);
    store_actions::conformance_tests!(sqlite => sqlite_stores);
    store_actions::conformance_tests!(postgres => postgres_stores);
}
