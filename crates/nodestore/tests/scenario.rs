//! `Stores::open` end to end, on SQLite and PostgreSQL: the migration's
//! rules and outcomes as a node meets them (docs/design.md §5).
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, Utc};
use nodestore::dump::{as_migrated, dump_kv, dump_sql};
use nodestore::{BackendConfig, Config, Error, MigrationPolicy, Stores};
use sqldb::Db;
use store_actions::{ActionQuery, AddAction};
use store_firewall::{Namespace, Scope, update_kv};
use store_sessions::{NewSession, SessionType};
use testkit::sql::{SqlFixture, postgres, sqlite};

mod common;
use common::backend;

struct Node {
    _dir: tempfile::TempDir,
    kv: PathBuf,
}

/// A node that ran on the key-value backend: an account, a session linked
/// to it, a kv-store entry, a privacy pair, and an action.
async fn node_on_kv() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    let stores = Stores::open(&Config::new(BackendConfig::Kv { dir: kv.clone() }))
        .await
        .unwrap();
    let account = stores
        .accounts
        .new_account(
            10_000,
            Some(Utc::now() + Duration::hours(1)),
            "migration-rpc-account",
        )
        .await
        .unwrap();
    let mut n = NewSession::new(
        "migration-rpc-session",
        SessionType::MacaroonAdmin,
        Utc::now() + Duration::minutes(30),
        "mailbox:443",
    );
    n.account = Some(account.id);
    let session = stores.sessions.new_session(n).await.unwrap();
    stores
        .sessions
        .shift_state(session.id, store_sessions::SessionState::Created)
        .await
        .unwrap();
    update_kv(
        &*stores.firewall,
        Namespace::new("rule", session.id, "feature"),
        |tx| Box::pin(async move { tx.set(Scope::Local, "k", b"v").await }),
    )
    .await
    .unwrap();
    store_firewall::update_privacy(&*stores.firewall, session.id, |tx| {
        Box::pin(async move { tx.new_pair("real", "pseudo").await })
    })
    .await
    .unwrap();
    stores
        .actions
        .add_action(AddAction {
            session_id: Some(session.id),
            rpc_method: "/litrpc.Autopilot/ListAutopilotFeatures".into(),
            ..AddAction::default()
        })
        .await
        .unwrap();
    drop(stores);
    Node { _dir: dir, kv }
}

fn sql_config(fx: &SqlFixture, kv: &Path) -> Config {
    Config {
        kv_dir: Some(kv.to_path_buf()),
        ..Config::new(backend(fx))
    }
}

fn sql_db(stores: &Stores) -> Db {
    match &stores.backend {
        nodestore::Backend::Sql(db) => db.clone(),
        nodestore::Backend::Kv(_) => panic!("expected SQL"),
    }
}

/// Empties the fixture's database, as an operator who lost it would have.
async fn lose_sql(fx: &SqlFixture) {
    match fx {
        SqlFixture::Sqlite(dir) => {
            for f in ["node.db", "node.db-wal", "node.db-shm"] {
                let _ = std::fs::remove_file(dir.path().join(f));
            }
        }
        SqlFixture::Postgres(_) => {
            let db = nodestore::connect(&backend(fx)).await.unwrap().unwrap();
            db.write(|tx| {
                Box::pin(async move {
                    tx.execute_script("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
                        .await
                })
            })
            .await
            .unwrap();
        }
    }
}

/// Run on KV, migrate, refuse KV, lose SQL and migrate again, refuse a
/// second target without force.
async fn lits_migration_scenario(fx: &SqlFixture) {
    let node = node_on_kv().await;
    let before = dump_kv(&node.kv).await.unwrap();
    assert_eq!(
        (
            before.accounts.len(),
            before.sessions.len(),
            before.actions.len()
        ),
        (1, 1, 1)
    );

    let stores = Stores::open(&sql_config(fx, &node.kv)).await.unwrap();
    let outcome = stores.report.migration.clone().expect("migrated at open");
    assert!(matches!(
        outcome.tombstone,
        migrator::TombstoneState::Written(_)
    ));
    assert_eq!(
        dump_sql(&sql_db(&stores)).await.unwrap(),
        as_migrated(&before).unwrap()
    );
    let actions = stores
        .actions
        .list_actions(&ActionQuery {
            reversed: true,
            max: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        actions.actions[0].request.rpc_method,
        "/litrpc.Autopilot/ListAutopilotFeatures"
    );
    let target = sql_db(&stores).describe();
    drop(stores);

    // The kv backend now refuses, naming when and where the data went.
    let err = Stores::open(&Config::new(BackendConfig::Kv {
        dir: node.kv.clone(),
    }))
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Kv(tombstone::Error::Tombstoned { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&target), "{err}");

    // The SQL database is lost: opening migrates again from the tombstoned
    // KV database, without loss.
    lose_sql(fx).await;
    let stores = Stores::open(&sql_config(fx, &node.kv)).await.unwrap();
    assert!(
        stores
            .report
            .migration
            .as_ref()
            .is_some_and(|o| o.kind == migrator::OutcomeKind::Migrated),
        "migrated again"
    );
    assert_eq!(
        dump_sql(&sql_db(&stores)).await.unwrap(),
        as_migrated(&before).unwrap()
    );
    drop(stores);

    // A second SQL target is refused without force, so the data cannot fork.
    let other = match fx {
        SqlFixture::Sqlite(_) => SqlFixture::sqlite(),
        SqlFixture::Postgres(_) => testkit::sql::postgres("scenario-second-target")
            .await
            .unwrap(),
    };
    let err = Stores::open(&sql_config(&other, &node.kv))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Migration { failure, .. } if matches!(failure.error, migrator::Error::MigratedElsewhere { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&target), "{err}");
    let forced = Config {
        force_migration: true,
        ..sql_config(&other, &node.kv)
    };
    let stores = Stores::open(&forced).await.unwrap();
    assert_eq!(
        dump_sql(&sql_db(&stores)).await.unwrap(),
        as_migrated(&before).unwrap()
    );
}

#[derive(Debug)]
struct FailingMark;

impl migrator::MarkWriter for FailingMark {
    fn mark(&self, _: &Path, _: &tombstone::Mark) -> Result<(), tombstone::Error> {
        Err(tombstone::Error::Missing("/injected".into()))
    }
}

/// A tombstone that could not be written is retried by the next open.
async fn a_pending_tombstone_is_retried_at_open(fx: &SqlFixture) {
    let node = node_on_kv().await;
    let db = nodestore::connect(&backend(fx)).await.unwrap().unwrap();
    let failing = migrator::Options {
        marker: Arc::new(FailingMark),
        ..migrator::Options::default()
    };
    let outcome = migrator::migrate(&node.kv, &db, &failing, None)
        .await
        .unwrap();
    assert!(matches!(
        outcome.tombstone,
        migrator::TombstoneState::Pending(_)
    ));
    assert!(matches!(
        tombstone::status(&node.kv).unwrap(),
        Some(tombstone::Status::Live(_))
    ));
    let stores = Stores::open(&sql_config(fx, &node.kv)).await.unwrap();
    assert!(
        matches!(
            stores.report.retried_tombstones.as_slice(),
            [migrator::Retry::Marked { .. }]
        ),
        "{:?}",
        stores.report.retried_tombstones
    );
    assert!(
        stores
            .report
            .migration
            .as_ref()
            .is_none_or(|o| o.kind == migrator::OutcomeKind::AlreadyMigrated),
        "not migrated twice"
    );
    assert!(matches!(
        tombstone::status(&node.kv).unwrap(),
        Some(tombstone::Status::Tombstoned(_))
    ));
}

/// Once the data is in SQL, `defer` no longer means the key-value database:
/// a node following that advice after a migration whose tombstone is still
/// pending opens on SQL (and the tombstone gets written), so no write can
/// go to a database whose data already moved.
async fn defer_after_the_data_moved_opens_on_sql(fx: &SqlFixture) {
    let node = node_on_kv().await;
    let db = nodestore::connect(&backend(fx)).await.unwrap().unwrap();
    let failing = migrator::Options {
        marker: Arc::new(FailingMark),
        ..migrator::Options::default()
    };
    let outcome = migrator::migrate(&node.kv, &db, &failing, None)
        .await
        .unwrap();
    assert!(matches!(
        outcome.tombstone,
        migrator::TombstoneState::Pending(_)
    ));
    let config = Config {
        migration: MigrationPolicy::Defer,
        ..sql_config(fx, &node.kv)
    };
    let stores = Stores::open(&config).await.unwrap();
    assert!(matches!(stores.backend, nodestore::Backend::Sql(_)));
    assert_eq!(stores.accounts.accounts().await.unwrap().len(), 1);
    assert!(matches!(
        tombstone::status(&node.kv).unwrap(),
        Some(tombstone::Status::Tombstoned(_))
    ));
}

/// With `defer`, a node keeps running on its live KV database and nothing
/// is recorded as migrated.
async fn defer_keeps_running_on_kv_and_records_nothing(fx: &SqlFixture) {
    let node = node_on_kv().await;
    let config = Config {
        migration: MigrationPolicy::Defer,
        ..sql_config(fx, &node.kv)
    };
    let stores = Stores::open(&config).await.unwrap();
    assert!(matches!(stores.backend, nodestore::Backend::Kv(_)));
    assert!(stores.report.notes.iter().any(|n| n.contains("deferred")));
    assert_eq!(stores.accounts.accounts().await.unwrap().len(), 1);
    drop(stores);
    let db = nodestore::connect(&backend(fx)).await.unwrap().unwrap();
    let applied = migrator::schema::runner().applied(&db).await.unwrap();
    assert!(
        applied
            .iter()
            .all(|s| s.version != sqldb::schema::KV_TO_SQL_VERSION),
        "never recorded as done"
    );
    // Switching to auto later migrates.
    let stores = Stores::open(&sql_config(fx, &node.kv)).await.unwrap();
    assert!(stores.report.migration.is_some());
}

/// A record that breaks the migration names itself and says how to keep
/// running; with `defer` the node starts on KV.
async fn a_failing_migration_names_the_record_and_defer_gets_the_node_up(fx: &SqlFixture) {
    let node = node_on_kv().await;
    {
        let kv = tombstone::KvDb::open(&node.kv, &tombstone::KvOptions::default()).unwrap();
        kv.tree("accounts")
            .unwrap()
            .insert([0xab; 8], &b"\x01broken"[..])
            .unwrap();
        kv.flush().unwrap();
    }
    let err = Stores::open(&sql_config(fx, &node.kv)).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("tree accounts, key abababababababab"),
        "{text}"
    );
    assert!(text.contains("defer"), "{text}");
    // Nothing was kept: the same failure on the next open, not a half state.
    let err2 = Stores::open(&sql_config(fx, &node.kv)).await.unwrap_err();
    let first_line = |e: &Error| e.to_string().lines().next().unwrap_or("").to_owned();
    assert_eq!(first_line(&err2), first_line(&err));
    assert!(matches!(
        &err2,
        Error::Migration { failure, .. } if failure.data == migrator::DataState::NotWritten
    ));
    let config = Config {
        migration: MigrationPolicy::Defer,
        ..sql_config(fx, &node.kv)
    };
    let stores = Stores::open(&config).await.unwrap();
    assert!(matches!(stores.backend, nodestore::Backend::Kv(_)));
}

/// A live KV database beside SQL that was initialised without it is refused.
async fn a_live_kv_database_beside_migrated_sql_is_refused(fx: &SqlFixture) {
    let stores = Stores::open(&Config::new(backend(fx))).await.unwrap();
    stores.accounts.new_account(1, None, "").await.unwrap();
    drop(stores);
    let node = node_on_kv().await;
    let err = Stores::open(&sql_config(fx, &node.kv)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Migration { failure, .. } if matches!(failure.error, migrator::Error::TargetHoldsOtherData { .. })),
        "{err}"
    );
    assert!(matches!(
        tombstone::status(&node.kv).unwrap(),
        Some(tombstone::Status::Live(_))
    ));
}

/// `start` wipes temporary kv-stores and reserved sessions.
async fn start_wipes_temporary_stores_and_reserved_sessions(fx: &SqlFixture) {
    let stores = Stores::open(&Config::new(backend(fx))).await.unwrap();
    let reserved = stores
        .sessions
        .new_session(NewSession::new(
            "r",
            SessionType::Autopilot,
            Utc::now() + Duration::days(1),
            "",
        ))
        .await
        .unwrap();
    let ns = Namespace::new("rule", reserved.id, "");
    for scope in [Scope::Global, Scope::GlobalTemp] {
        update_kv(&*stores.firewall, ns.clone(), |tx| {
            Box::pin(async move { tx.set(scope, "k", b"v").await })
        })
        .await
        .unwrap();
    }
    assert_eq!(stores.start().await.unwrap().reserved_sessions_deleted, 1);
    let (perm, temp) = store_firewall::view_kv(&*stores.firewall, ns, |tx| {
        Box::pin(async move {
            Ok((
                tx.get(Scope::Global, "k").await?,
                tx.get(Scope::GlobalTemp, "k").await?,
            ))
        })
    })
    .await
    .unwrap();
    assert_eq!((perm, temp), (Some(b"v".to_vec()), None));
    assert!(stores.sessions.list_sessions().await.unwrap().is_empty());
}

testkit::backend_tests!(sqlite => sqlite;
    defer_after_the_data_moved_opens_on_sql,
    lits_migration_scenario,
    a_pending_tombstone_is_retried_at_open,
    defer_keeps_running_on_kv_and_records_nothing,
    a_failing_migration_names_the_record_and_defer_gets_the_node_up,
    a_live_kv_database_beside_migrated_sql_is_refused,
    start_wipes_temporary_stores_and_reserved_sessions,
);

testkit::backend_tests!(postgres => postgres;
    defer_after_the_data_moved_opens_on_sql,
    lits_migration_scenario,
    a_pending_tombstone_is_retried_at_open,
    defer_keeps_running_on_kv_and_records_nothing,
    a_failing_migration_names_the_record_and_defer_gets_the_node_up,
    a_live_kv_database_beside_migrated_sql_is_refused,
    start_wipes_temporary_stores_and_reserved_sessions,
);
