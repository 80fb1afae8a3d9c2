//! The online migration's hazards at the cutover (docs/design.md §7.4),
//! each made to happen on purpose: the stores closed after the last commit,
//! a rule transaction open while the cutover waits for the gate (beside
//! the start-up wipe), and a cutover that never fits its budget. The
//! cutover is stopped at named points through the migrator's test hooks
//! (feature `test-hooks`), which are process-wide: the tests of this file
//! run one at a time.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use migrator::hooks::{self, Point};
use nodestore::generate::{Scale, generate};
use nodestore::{BackendConfig, Config, MigrationPolicy, OnlineState, Stores};
use store_firewall::{Mode, Namespace, Scope};
use testkit::sql::{SqlFixture, postgres, sqlite};
use tokio::sync::Notify;

/// One hooked test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

mod common;
use common::backend;

fn online_config(fx: &SqlFixture, kv: &Path, budget: Duration) -> Config {
    Config {
        kv_dir: Some(kv.to_path_buf()),
        migration: MigrationPolicy::Online,
        online_pause_budget: budget,
        ..Config::new(backend(fx))
    }
}

async fn small_node(dir: &Path) -> std::path::PathBuf {
    let kv = dir.join("kv");
    let mut shape = Scale::S.shape();
    shape.actions = 300;
    generate(&kv, shape, 41, &|_, _, _| {}).await.unwrap();
    kv
}

/// Stops the migration at `at` until `go` is notified; `reached` is
/// notified when it gets there.
fn hold_at(at: Point) -> (Arc<Notify>, Arc<Notify>) {
    let (reached, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (r, g) = (reached.clone(), go.clone());
    hooks::set(Some(Arc::new(move |p| {
        let (r, g) = (r.clone(), g.clone());
        Box::pin(async move {
            if p == at {
                r.notify_one();
                g.notified().await;
            }
        })
    })));
    (reached, go)
}

/// Waits until the migration says it is cutting over (and a moment more,
/// for it to ask for the gate).
async fn until_cutting_over(stores: &Stores) {
    let online = stores.online.clone().unwrap();
    while !matches!(online.state(), OnlineState::CuttingOver { .. }) {
        assert!(!online.state().is_final(), "{:?}", online.state());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// An online copy on SQLite commits in pieces (docs/design.md §7.4): with
/// pieces of 32 KiB a small database is committed and checkpointed in
/// pieces while a writer runs (a piece is what the log holds past the
/// bound, plus what the page cache spills at its commit), and SQL ends
/// equal to the key-value database with every acknowledged write. (On
/// PostgreSQL the copy is one transaction, and says so.)
async fn a_copy_in_pieces_ends_equal(fx: &SqlFixture) {
    let _serial = SERIAL.lock().await;
    hooks::set(None);
    hooks::set_piece_bytes(32 << 10);
    let dir = tempfile::tempdir().unwrap();
    let kv = small_node(dir.path()).await;
    let stores = Arc::new(
        Stores::open(&online_config(fx, &kv, Duration::from_secs(1)))
            .await
            .unwrap(),
    );
    let online = stores.online.clone().unwrap();
    let id = stores.accounts.accounts().await.unwrap()[0].id;
    let writer = {
        let (stores, online) = (stores.clone(), online.clone());
        tokio::spawn(async move {
            let mut acked = 0i64;
            while !online.switched() {
                stores.accounts.credit_account(id, 1).await.unwrap();
                acked += 1;
            }
            acked
        })
    };
    let end = online.wait().await;
    let acked = writer.await.unwrap();
    hooks::set_piece_bytes(0);
    let OnlineState::Switched { copy, .. } = end else {
        panic!("{end:?}");
    };
    match fx {
        SqlFixture::Sqlite(_) => assert!(copy.pieces >= 1, "{copy:?}"),
        SqlFixture::Postgres(_) => assert_eq!(copy.pieces, 0, "{copy:?}"),
    }
    assert!(
        stores
            .accounts
            .account(id)
            .await
            .unwrap()
            .current_balance_msat
            >= acked
    );
    let Ok(stores) = Arc::try_unwrap(stores) else {
        panic!("the stores are still shared");
    };
    stores.close().await.unwrap();
    let want = nodestore::dump::as_migrated(&nodestore::dump::dump_kv(&kv).await.unwrap()).unwrap();
    let db = nodestore::connect(&backend(fx)).await.unwrap().unwrap();
    let report = nodestore::verify::compare(&want, &nodestore::dump::dump_sql(&db).await.unwrap());
    // The writer's last credit may have gone to SQL after the switch.
    let written_after = format!("account {id}");
    let unexplained: Vec<_> = report
        .differences
        .iter()
        .filter(|d| d.record != written_after)
        .collect();
    assert!(unexplained.is_empty(), "{unexplained:?}");
    db.close().await.unwrap();
}

/// Closing the stores after the last commit and before the switch waits
/// for the cutover to end: the key-value database is retired, SQL holds the
/// migration, and no writer was released onto the key-value database.
async fn closing_after_the_last_commit_finishes_the_cutover(fx: &SqlFixture) {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let kv = small_node(dir.path()).await;
    let (reached, go) = hold_at(Point::Committed);
    let stores = Stores::open(&online_config(fx, &kv, Duration::from_secs(1)))
        .await
        .unwrap();
    reached.notified().await;
    let closing = tokio::spawn(stores.close());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !closing.is_finished(),
        "close returned in the middle of a committed cutover"
    );
    go.notify_one();
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .expect("close waits for the cutover, then returns")
        .unwrap()
        .unwrap();
    hooks::set(None);
    assert!(matches!(
        tombstone::status(&kv).unwrap(),
        Some(tombstone::Status::Tombstoned(_))
    ));
    let db = nodestore::connect(&backend(fx)).await.unwrap().unwrap();
    assert_eq!(migrator::records(&db).await.unwrap().len(), 1);
    db.close().await.unwrap();
    // The next open serves SQL.
    let stores = Stores::open(&online_config(fx, &kv, Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(stores.online.is_none());
    stores.close().await.unwrap();
}

/// A rule transaction that writes holds the gate from `begin`: while it is
/// open the cutover waits (the pause, as writers see it, counts that wait),
/// the start-up wipe called beside it neither deadlocks nor is lost, and
/// the increment it read on the key-value database commits there before
/// the switch and is in SQL after it (no stale read committed across the
/// switch).
async fn a_rule_transaction_across_the_cutover_request_keeps_its_write(fx: &SqlFixture) {
    let _serial = SERIAL.lock().await;
    hooks::set(None);
    let dir = tempfile::tempdir().unwrap();
    let kv = small_node(dir.path()).await;
    let stores = Arc::new(
        Stores::open(&online_config(fx, &kv, Duration::from_secs(10)))
            .await
            .unwrap(),
    );
    let online = stores.online.clone().unwrap();
    let group = stores.sessions.list_sessions().await.unwrap()[0].group_id;
    let ns = Namespace::new("hazard-rule", group, "");
    let mut tx = stores
        .firewall
        .begin_kv(ns.clone(), Mode::Update)
        .await
        .unwrap();
    tx.set(Scope::Local, "counter", &1u64.to_be_bytes())
        .await
        .unwrap();
    until_cutting_over(&stores).await;
    let wipe = {
        let stores = stores.clone();
        tokio::spawn(async move { stores.firewall.delete_temp_kv_stores().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !online.switched(),
        "the switch went ahead of an open transaction"
    );
    let v = tx.get(Scope::Local, "counter").await.unwrap().unwrap();
    let v = u64::from_be_bytes(v.as_slice().try_into().unwrap()) + 1;
    tx.set(Scope::Local, "counter", &v.to_be_bytes())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), tx.commit())
        .await
        .expect("the commit is not stuck behind the cutover")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), wipe)
        .await
        .expect("the wipe beside the transaction is not stuck")
        .unwrap()
        .unwrap();
    let end = online.wait().await;
    let OnlineState::Switched { longest_pause, .. } = end else {
        panic!("{end:?}");
    };
    assert!(
        longest_pause >= Duration::from_millis(300),
        "the pause counts the wait for the open transaction: {longest_pause:?}"
    );
    let mut read = stores.firewall.begin_kv(ns, Mode::View).await.unwrap();
    assert_eq!(
        read.get(Scope::Local, "counter").await.unwrap(),
        Some(2u64.to_be_bytes().to_vec()),
        "the transaction's write, on SQL after the switch"
    );
    read.commit().await.unwrap();
    let Ok(stores) = Arc::try_unwrap(stores) else {
        panic!("the stores are still shared");
    };
    stores.close().await.unwrap();
}

/// A cutover that can never fit its budget (a transaction holds the gate
/// throughout) gives up after a bounded number of attempts with a clear
/// state; the node stays on the live key-value database and keeps working.
async fn a_cutover_that_never_fits_gives_up(fx: &SqlFixture) {
    let _serial = SERIAL.lock().await;
    hooks::set(None);
    let dir = tempfile::tempdir().unwrap();
    let kv = small_node(dir.path()).await;
    let stores = Stores::open(&online_config(fx, &kv, Duration::from_millis(100)))
        .await
        .unwrap();
    let online = stores.online.clone().unwrap();
    let group = stores.sessions.list_sessions().await.unwrap()[0].group_id;
    let mut tx = stores
        .firewall
        .begin_kv(Namespace::new("hazard-rule", group, ""), Mode::Update)
        .await
        .unwrap();
    tx.set(Scope::Local, "held", b"1").await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(120), online.wait())
        .await
        .expect("the migration ends");
    let OnlineState::Failed { error } = end else {
        panic!("{end:?}");
    };
    assert!(
        matches!(error.error, migrator::Error::CutoverGaveUp { .. }),
        "{error}"
    );
    tx.commit().await.unwrap();
    assert!(matches!(
        tombstone::status(&kv),
        Err(_) | Ok(Some(tombstone::Status::Live(_)))
    ));
    let a = stores
        .accounts
        .new_account(5, None, "after-giving-up")
        .await
        .unwrap();
    stores.accounts.credit_account(a.id, 5).await.unwrap();
    stores.close().await.unwrap();
    assert!(matches!(
        tombstone::status(&kv).unwrap(),
        Some(tombstone::Status::Live(_))
    ));
}

/// The PostgreSQL server stopped right before the last commit is sent and
/// started again a moment later: the commit fails with the connection, the
/// migration finds out from a fresh connection (writers still paused) that
/// it did not land, releases writers on the key-value database, which stays
/// live and holds every acknowledged write, and the next open finishes.
mod server_lost {
    pub(crate) mod postgres {
        use super::super::*;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use testkit::cluster::LocalCluster;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn inside_the_last_commit_is_resolved_before_writers_go_on() {
            let _serial = SERIAL.lock().await;
            let Some(_) = testkit::cluster::find_server_bin() else {
                assert!(
                    std::env::var_os("NODESTORE_REQUIRE_POSTGRES").is_none(),
                    "PostgreSQL server binaries are required but missing"
                );
                return;
            };
            let cluster =
                Arc::new(LocalCluster::start_with(Some(std::process::id()), true).unwrap());
            let dir = tempfile::tempdir().unwrap();
            let kv = small_node(dir.path()).await;
            let backend = BackendConfig::Postgres {
                url: cluster.url("postgres"),
                pool_size: 4,
            };
            // The first time the last commit is about to go: the server stops
            // now, and starts again after a second.
            let fired = Arc::new(AtomicBool::new(false));
            {
                let (cluster, fired) = (cluster.clone(), fired.clone());
                hooks::set(Some(Arc::new(move |p| {
                    let (cluster, fired) = (cluster.clone(), fired.clone());
                    Box::pin(async move {
                        if p == Point::Committing && !fired.swap(true, Ordering::AcqRel) {
                            let c = cluster.clone();
                            tokio::task::spawn_blocking(move || c.stop_now().unwrap())
                                .await
                                .unwrap();
                            std::thread::spawn(move || {
                                std::thread::sleep(Duration::from_secs(1));
                                cluster.start_again().unwrap();
                            });
                        }
                    })
                })));
            }
            let config = Config {
                kv_dir: Some(kv.clone()),
                migration: MigrationPolicy::Online,
                online_pause_budget: Duration::from_secs(1),
                ..Config::new(backend.clone())
            };
            let stores = Arc::new(Stores::open(&config).await.unwrap());
            let online = stores.online.clone().unwrap();
            let id = stores.accounts.accounts().await.unwrap()[0].id;
            let before = stores
                .accounts
                .account(id)
                .await
                .unwrap()
                .current_balance_msat;
            let stop = Arc::new(AtomicBool::new(false));
            let acked = Arc::new(AtomicU64::new(0));
            let writer = {
                let (stores, stop, acked) = (stores.clone(), stop.clone(), acked.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) {
                        stores.accounts.credit_account(id, 1).await.unwrap();
                        acked.fetch_add(1, Ordering::AcqRel);
                    }
                })
            };
            let end = tokio::time::timeout(Duration::from_secs(120), online.wait())
                .await
                .expect("the migration ends");
            stop.store(true, Ordering::Release);
            writer.await.unwrap();
            hooks::set(None);
            assert!(fired.load(Ordering::Acquire), "the hook never ran: {end:?}");
            let OnlineState::Failed { error } = &end else {
                panic!("the commit never reached the server: {end:?}");
            };
            assert!(!error.to_string().is_empty());
            // Writers went on on the key-value database, which is live.
            let after = stores
                .accounts
                .account(id)
                .await
                .unwrap()
                .current_balance_msat;
            assert_eq!(after - before, acked.load(Ordering::Acquire) as i64);
            let Ok(stores) = Arc::try_unwrap(stores) else {
                panic!("the stores are still shared");
            };
            stores.close().await.unwrap();
            assert!(matches!(
                tombstone::status(&kv).unwrap(),
                Some(tombstone::Status::Live(_))
            ));
            let db = nodestore::connect(&backend).await.unwrap().unwrap();
            assert!(migrator::records(&db).await.unwrap().is_empty());
            db.close().await.unwrap();
            // The next open migrates again, to the end.
            let stores = Stores::open(&config).await.unwrap();
            let end = stores.online.clone().unwrap().wait().await;
            assert!(matches!(end, OnlineState::Switched { .. }), "{end:?}");
            assert_eq!(
                stores
                    .accounts
                    .account(id)
                    .await
                    .unwrap()
                    .current_balance_msat,
                after
            );
            stores.close().await.unwrap();
            Arc::try_unwrap(cluster).ok().unwrap().stop().unwrap();
        }
    }
}

testkit::backend_tests!(sqlite => sqlite;
    a_copy_in_pieces_ends_equal,
    closing_after_the_last_commit_finishes_the_cutover,
    a_rule_transaction_across_the_cutover_request_keeps_its_write,
    a_cutover_that_never_fits_gives_up,
);
testkit::backend_tests!(postgres => postgres;
    a_copy_in_pieces_ends_equal,
    closing_after_the_last_commit_finishes_the_cutover,
    a_rule_transaction_across_the_cutover_request_keeps_its_write,
    a_cutover_that_never_fits_gives_up,
);
