//! The online migration (docs/design.md §7): the node serves every call
//! while its key-value data moves to SQL, and after the switch SQL holds
//! exactly what the key-value stores held, plus what was written after.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]
#![allow(
    clippy::print_stderr,
    reason = "a random test prints its seed, to repeat a failure"
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{Duration, Utc};
use nodestore::dump::{as_migrated, dump_kv, dump_sql};
use nodestore::generate::{Scale, generate};
use nodestore::{Config, MigrationPolicy, OnlineState, Stores};
use proptest::prelude::*;
use store_actions::AddAction;
use store_firewall::{Mode, Namespace, Scope};
use store_sessions::{NewSession, SessionState, SessionType};
use testkit::sql::{SqlFixture, postgres, sqlite};

mod common;
use common::backend;

fn online_config(fx: &SqlFixture, kv: &Path) -> Config {
    Config {
        kv_dir: Some(kv.to_path_buf()),
        migration: MigrationPolicy::Online,
        ..Config::new(backend(fx))
    }
}

async fn sql_db(fx: &SqlFixture) -> sqldb::Db {
    nodestore::connect(&backend(fx)).await.unwrap().unwrap()
}

/// Writers keep crediting one account and adding actions through the whole
/// migration, and one keeps making a debit that must fail: not one call
/// fails unless it fails offline too, and after the switch SQL holds every
/// credit and every action, whichever backend took it.
async fn no_write_is_lost_or_fails_across_the_cutover(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    generate(&kv, Scale::S.shape(), 21, &|_, _, _| {})
        .await
        .unwrap();
    let stores = Arc::new(Stores::open(&online_config(fx, &kv)).await.unwrap());
    let online = stores.online.clone().expect("an online migration");
    let account = stores
        .accounts
        .new_account(0, None, "online-counter")
        .await
        .unwrap();
    let before_actions = stores
        .actions
        .list_actions(&store_actions::ActionQuery {
            count_all: true,
            max: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .total_count;
    let done = Arc::new(AtomicBool::new(false));
    let credits = Arc::new(AtomicU64::new(0));
    let added = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (stores, done, credits, added) =
            (stores.clone(), done.clone(), credits.clone(), added.clone());
        writers.push(tokio::spawn(async move {
            let mut after_switch = 0;
            let started = std::time::Instant::now();
            // Past 60 s the writers stop (see MAX_CALLS), and the
            // migration finishes unhurried.
            while after_switch < 20 && started.elapsed() < std::time::Duration::from_secs(60) {
                if done.load(Ordering::Acquire) {
                    after_switch += 1;
                }
                if w == 3 {
                    // A write that fails, before, during and after the
                    // pause: it fails as it would offline, and changes
                    // nothing.
                    let r = stores
                        .accounts
                        .debit_account(account.id, u64::MAX >> 2)
                        .await;
                    assert!(
                        matches!(r, Err(store_accounts::Error::WouldGoBelowZero { .. })),
                        "{r:?}"
                    );
                } else if w % 2 == 0 {
                    stores.accounts.credit_account(account.id, 1).await.unwrap();
                    credits.fetch_add(1, Ordering::Relaxed);
                } else {
                    stores
                        .actions
                        .add_action(AddAction {
                            actor_name: format!("writer {w}"),
                            rpc_method: "/test/Write".into(),
                            ..AddAction::default()
                        })
                        .await
                        .unwrap();
                    added.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let end = online.wait().await;
    done.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    let OnlineState::Switched {
        longest_pause,
        journal_peak,
        ..
    } = end
    else {
        panic!("the migration did not switch: {end:?}");
    };
    assert!(journal_peak > 0, "writes were journaled");
    assert!(
        longest_pause < std::time::Duration::from_secs(2),
        "{longest_pause:?}"
    );
    // The stores serve from SQL now: what they read is SQL's.
    let a = stores.accounts.account(account.id).await.unwrap();
    assert_eq!(
        a.current_balance_msat as u64,
        credits.load(Ordering::Relaxed)
    );
    let db = sql_db(fx).await;
    let sql_stores = Stores::on_sql(&db, nodestore::OpenReport::default());
    let a = sql_stores.accounts.account(account.id).await.unwrap();
    assert_eq!(
        a.current_balance_msat as u64,
        credits.load(Ordering::Relaxed)
    );
    let total = sql_stores
        .actions
        .list_actions(&store_actions::ActionQuery {
            count_all: true,
            max: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .total_count;
    assert_eq!(total, before_actions + added.load(Ordering::Relaxed));
    let Ok(stores) = Arc::try_unwrap(stores) else {
        panic!("the writers still hold the stores");
    };
    stores.close().await.unwrap();
    // The key-value database is retired.
    assert!(matches!(
        tombstone::status(&kv).unwrap(),
        Some(tombstone::Status::Tombstoned(_))
    ));
}

/// One write of any store, with small numbers that pick what it writes to.
#[derive(Debug, Clone)]
enum Op {
    Credit(u8, u16),
    Debit(u8, u16),
    AddInvoice(u8, u8),
    UpsertPayment(u8, u8, u16),
    DeletePayment(u8, u8),
    NewAccount,
    RemoveAccount,
    Rename(u8),
    /// Two accounts trade labels (through a third, as labels are unique):
    /// the replay must not trip over a label still held in SQL.
    SwapLabels(u8, u8),
    StoreIndexes(u16),
    NewSession(u8),
    ShiftState(u8),
    UpdateRemoteKey(u8),
    DeleteReserved,
    DeleteAllReserved,
    KvSet(u8, u8, bool),
    KvDel(u8, u8),
    NewPair(u8),
    WipeTemp,
    AddAction(u8),
    SetActionState(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), any::<u16>()).prop_map(|(a, n)| Op::Credit(a, n)),
        (any::<u8>(), any::<u16>()).prop_map(|(a, n)| Op::Debit(a, n)),
        (any::<u8>(), any::<u8>()).prop_map(|(a, h)| Op::AddInvoice(a, h)),
        // Few payment hashes, so a payment is often written again (a new
        // amount) or deleted after it was copied or replayed.
        (any::<u8>(), 0u8..3, any::<u16>()).prop_map(|(a, h, n)| Op::UpsertPayment(a, h, n)),
        (any::<u8>(), 0u8..3).prop_map(|(a, h)| Op::DeletePayment(a, h)),
        Just(Op::NewAccount),
        Just(Op::RemoveAccount),
        any::<u8>().prop_map(Op::Rename),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::SwapLabels(a, b)),
        any::<u16>().prop_map(Op::StoreIndexes),
        any::<u8>().prop_map(Op::NewSession),
        any::<u8>().prop_map(Op::ShiftState),
        any::<u8>().prop_map(Op::UpdateRemoteKey),
        Just(Op::DeleteReserved),
        Just(Op::DeleteAllReserved),
        (any::<u8>(), 0u8..8, any::<bool>()).prop_map(|(g, k, p)| Op::KvSet(g, k, p)),
        (any::<u8>(), 0u8..8).prop_map(|(g, k)| Op::KvDel(g, k)),
        any::<u8>().prop_map(Op::NewPair),
        Just(Op::WipeTemp),
        any::<u8>().prop_map(Op::AddAction),
        any::<u8>().prop_map(Op::SetActionState),
    ]
}

/// What the writes made so far, to pick targets from.
struct World {
    accounts: Vec<store_accounts::AccountId>,
    created: Vec<store_accounts::AccountId>,
    sessions: Vec<store_sessions::Session>,
    reserved: Vec<store_sessions::SessionId>,
    actions: Vec<store_actions::ActionLocator>,
    n: u32,
}

fn pick<T: Clone>(v: &[T], i: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[usize::from(i) % v.len()].clone())
}

/// Fails on a backend error (what an online migration must never cause,
/// reported as `<backend> backend: …` by every store); a domain error is
/// what an offline store answers to the same call.
fn domain<T, E: std::fmt::Display>(r: Result<T, E>) {
    if let Err(e) = r {
        let text = e.to_string();
        assert!(!text.contains(" backend: "), "a backend error: {text}");
    }
}

/// Runs `op`; returns the names (as verify names records) of what it may
/// have touched.
async fn run(stores: &Stores, w: &mut World, op: &Op) -> Vec<String> {
    w.n += 1;
    let n = w.n;
    match op {
        Op::Credit(a, amt) | Op::Debit(a, amt) => {
            let Some(id) = pick(&w.accounts, *a) else {
                return vec![];
            };
            let r = if matches!(op, Op::Credit(..)) {
                stores.accounts.credit_account(id, u64::from(*amt)).await
            } else {
                stores.accounts.debit_account(id, u64::from(*amt)).await
            };
            domain(r);
            vec![format!("account {id}")]
        }
        Op::AddInvoice(a, h) => {
            let Some(id) = pick(&w.accounts, *a) else {
                return vec![];
            };
            let r = stores
                .accounts
                .add_account_invoice(id, store_accounts::Hash([*h; 32]))
                .await;
            domain(r);
            vec![format!("account {id}")]
        }
        Op::UpsertPayment(a, h, amt) => {
            let Some(id) = pick(&w.accounts, *a) else {
                return vec![];
            };
            let r = stores
                .accounts
                .upsert_account_payment(
                    id,
                    store_accounts::Hash([*h; 32]),
                    u64::from(*amt),
                    store_accounts::PaymentStatus::InFlight,
                    store_accounts::UpsertOptions::default(),
                )
                .await;
            domain(r);
            vec![format!("account {id}")]
        }
        Op::DeletePayment(a, h) => {
            let Some(id) = pick(&w.accounts, *a) else {
                return vec![];
            };
            let r = stores
                .accounts
                .delete_account_payment(id, store_accounts::Hash([*h; 32]))
                .await;
            domain(r);
            vec![format!("account {id}")]
        }
        Op::NewAccount => {
            let a = stores
                .accounts
                .new_account(100, None, &format!("online-{n}"))
                .await
                .unwrap();
            w.accounts.push(a.id);
            w.created.push(a.id);
            vec![format!("account {}", a.id)]
        }
        Op::RemoveAccount => {
            let Some(id) = w.created.pop() else {
                return vec![];
            };
            w.accounts.retain(|a| *a != id);
            stores.accounts.remove_account(id).await.unwrap();
            // Sessions and actions linked to it lose the link.
            vec![format!("account {id}"), "session ".into(), "action ".into()]
        }
        Op::Rename(a) => {
            let Some(id) = pick(&w.accounts, *a) else {
                return vec![];
            };
            let update = store_accounts::AccountUpdate {
                label: Some(format!("renamed-{n}")),
                ..Default::default()
            };
            stores.accounts.update_account(id, update).await.unwrap();
            vec![format!("account {id}")]
        }
        Op::SwapLabels(a, b) => {
            let (Some(x), Some(y)) = (pick(&w.accounts, *a), pick(&w.accounts, *b)) else {
                return vec![];
            };
            let lx = stores.accounts.account(x).await.unwrap().label;
            let ly = stores.accounts.account(y).await.unwrap().label;
            if x == y || lx.is_empty() || ly.is_empty() {
                return vec![];
            }
            for (id, label) in [(x, format!("swapping-{n}")), (y, lx), (x, ly)] {
                let update = store_accounts::AccountUpdate {
                    label: Some(label),
                    ..Default::default()
                };
                stores.accounts.update_account(id, update).await.unwrap();
            }
            vec![format!("account {x}"), format!("account {y}")]
        }
        Op::StoreIndexes(i) => {
            let indexes = store_accounts::LastIndexes {
                add_index: u64::from(*i),
                settle_index: u64::from(*i) + 1,
            };
            stores.accounts.store_last_indexes(indexes).await.unwrap();
            vec!["last indexes".into()]
        }
        Op::NewSession(a) => {
            let mut new = NewSession::new(
                format!("online session {n}"),
                SessionType::MacaroonAdmin,
                Utc::now() + Duration::hours(1),
                "mailbox:443",
            );
            new.account = pick(&w.accounts, *a);
            let s = stores.sessions.new_session(new).await.unwrap();
            w.reserved.push(s.id);
            let name = format!("session {}", s.id);
            w.sessions.push(s);
            vec![name]
        }
        Op::ShiftState(i) => {
            let Some(id) = pick(&w.reserved, *i) else {
                return vec![];
            };
            stores
                .sessions
                .shift_state(id, SessionState::Created)
                .await
                .unwrap();
            w.reserved.retain(|r| *r != id);
            vec![format!("session {id}")]
        }
        Op::UpdateRemoteKey(i) => {
            let (Some(s), Some(other)) =
                (pick(&w.sessions, *i), pick(&w.sessions, i.wrapping_add(1)))
            else {
                return vec![];
            };
            let r = stores
                .sessions
                .update_remote_public_key(s.id, other.local_public_key)
                .await;
            domain(r);
            vec![format!("session {}", s.id)]
        }
        Op::DeleteReserved => {
            let Some(id) = w.reserved.pop() else {
                return vec![];
            };
            stores.sessions.delete_reserved_session(id).await.unwrap();
            w.sessions.retain(|s| s.id != id);
            vec![format!("session {id}"), "action ".into()]
        }
        Op::DeleteAllReserved => {
            let gone: Vec<_> = std::mem::take(&mut w.reserved);
            stores.sessions.delete_reserved_sessions().await.unwrap();
            w.sessions.retain(|s| !gone.contains(&s.id));
            vec!["session ".into(), "action ".into()]
        }
        Op::KvSet(g, k, _) | Op::KvDel(g, k) if !w.sessions.is_empty() => {
            let group = pick(&w.sessions, *g).map(|s| s.group_id).unwrap();
            let mut tx = stores
                .firewall
                .begin_kv(Namespace::new("online-rule", group, ""), Mode::Update)
                .await
                .unwrap();
            let scope = match op {
                Op::KvSet(_, _, true) => Scope::Local,
                Op::KvSet(_, _, false) => Scope::LocalTemp,
                _ => Scope::Local,
            };
            if let Op::KvSet(..) = op {
                tx.set(scope, &format!("k{k}"), &n.to_be_bytes())
                    .await
                    .unwrap();
            } else {
                tx.del(scope, &format!("k{k}")).await.unwrap();
            }
            tx.commit().await.unwrap();
            vec!["kv entry ".into()]
        }
        Op::NewPair(g) if !w.sessions.is_empty() => {
            let group = pick(&w.sessions, *g).map(|s| s.group_id).unwrap();
            let mut p = stores
                .firewall
                .begin_privacy(group, Mode::Update)
                .await
                .unwrap();
            p.new_pair(&format!("real-{n}"), &format!("pseudo-{n}"))
                .await
                .unwrap();
            p.commit().await.unwrap();
            vec!["privacy pair ".into()]
        }
        Op::WipeTemp => {
            stores.firewall.delete_temp_kv_stores().await.unwrap();
            vec!["kv entry temp".into()]
        }
        Op::AddAction(i) => {
            let l = stores
                .actions
                .add_action(AddAction {
                    session_id: pick(&w.sessions, *i).map(|s| s.id),
                    account_id: pick(&w.accounts, i.wrapping_mul(7)),
                    actor_name: "online".into(),
                    rpc_method: "/test/Online".into(),
                    ..AddAction::default()
                })
                .await
                .unwrap();
            w.actions.push(l);
            vec![format!("action {l}")]
        }
        Op::SetActionState(i) => {
            let Some(l) = pick(&w.actions, *i) else {
                return vec![];
            };
            let r = stores
                .actions
                .set_action_state(l, store_actions::ActionState::Done, "")
                .await;
            domain(r);
            vec![format!("action {l}")]
        }
        _ => vec![],
    }
}

/// Random writes of every kind, one call at a time, through the copy, the
/// catch-up and up to the switch; afterwards SQL holds exactly what the
/// key-value stores held at the switch (the migration's rules applied), as
/// an offline migration of the same database would. The call in flight at
/// the switch may have gone to either side: only the records it may have
/// touched are allowed to differ.
async fn check_interleaving(fx: &SqlFixture, ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    generate(&kv, Scale::S.shape(), 22, &|_, _, _| {})
        .await
        .unwrap();
    let stores = Stores::open(&online_config(fx, &kv)).await.unwrap();
    let online = stores.online.clone().unwrap();
    let sessions = stores.sessions.list_sessions().await.unwrap();
    let mut world = World {
        accounts: stores
            .accounts
            .accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect(),
        created: Vec::new(),
        reserved: Vec::new(),
        sessions,
        actions: Vec::new(),
        n: 0,
    };
    let mut calls = 0;
    let last = 'writing: loop {
        for op in ops {
            let touched = run(&stores, &mut world, op).await;
            calls += 1;
            if online.switched() {
                break 'writing touched;
            }
            if let OnlineState::Failed { error } = online.state() {
                panic!("the online migration failed after {calls} calls: {error}");
            }
            // On a machine too loaded for any pause to fit the budget, the
            // cutover backs off for as long as writes come: stop writing
            // after a while and let it finish (the writes made so far are
            // still checked).
            if calls >= MAX_CALLS {
                break 'writing Vec::new();
            }
        }
    };
    let end = online.wait().await;
    assert!(matches!(end, OnlineState::Switched { .. }), "{end:?}");
    stores.close().await.unwrap();
    let want = as_migrated(&dump_kv(&kv).await.unwrap()).unwrap();
    let db = sql_db(fx).await;
    let got = dump_sql(&db).await.unwrap();
    common::assert_record_counts(&db, &want, "the interleaving").await;
    let report = nodestore::verify::compare(&want, &got);
    let unexplained: Vec<_> = report
        .differences
        .iter()
        .filter(|d| !last.iter().any(|t| d.record.starts_with(t.as_str())))
        .collect();
    assert!(
        unexplained.is_empty(),
        "{calls} calls; differences: {:#?}",
        &unexplained[..unexplained.len().min(10)]
    );
}

/// Writes one case makes at most, however long the migration takes.
const MAX_CALLS: usize = 5000;

fn interleavings(backend: &'static str) {
    // A failing case is saved beside this file (and run first from then
    // on), and every run prints its seed: `PROPTEST_RNG_SEED=N` repeats it.
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u32>)
        .into();
    eprintln!("{backend}: PROPTEST_RNG_SEED={seed}");
    let config = ProptestConfig {
        cases: 4,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 30..90))| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let name = format!("online::{backend}::interleavings");
            let fx = if backend == "sqlite" {
                sqlite(&name).await
            } else {
                postgres(&name).await
            };
            if let Some(fx) = fx {
                check_interleaving(&fx, &ops).await;
            }
        });
    });
}

mod interleaving {
    pub(crate) mod sqlite {
        #[test]
        fn random_writes_of_every_store_end_equal_in_sql() {
            super::super::interleavings("sqlite");
        }
    }
    pub(crate) mod postgres {
        #[test]
        fn random_writes_of_every_store_end_equal_in_sql() {
            super::super::interleavings("postgres");
        }
    }
}

/// Closing the stores during an online migration rolls it back: SQL holds
/// no data, the key-value database is live, and the next open starts over.
async fn closing_during_the_migration_rolls_it_back(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    generate(&kv, Scale::S.shape(), 23, &|_, _, _| {})
        .await
        .unwrap();
    let stores = Stores::open(&online_config(fx, &kv)).await.unwrap();
    stores.close().await.unwrap();
    assert!(matches!(
        tombstone::status(&kv).unwrap(),
        Some(tombstone::Status::Live(_))
    ));
    let stores = Stores::open(&online_config(fx, &kv)).await.unwrap();
    let end = stores.online.clone().unwrap().wait().await;
    assert!(matches!(end, OnlineState::Switched { .. }), "{end:?}");
}

/// A migration stopped after its copy committed (docs/design.md §7.3)
/// leaves a staged copy: status names it, an open without the key-value
/// database and a dry run refuse it, and a migration of the same key-value
/// database (here the offline one) discards it and migrates exactly.
async fn a_staged_copy_is_refused_then_discarded(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    generate(&kv, Scale::S.shape(), 25, &|_, _, _| {})
        .await
        .unwrap();
    let config = Config {
        // Over budget at every attempt while the writer writes: the
        // migration stays in its second transaction until closed.
        online_pause_budget: std::time::Duration::ZERO,
        ..online_config(fx, &kv)
    };
    let stores = Arc::new(Stores::open(&config).await.unwrap());
    let online = stores.online.clone().unwrap();
    let id = stores.accounts.accounts().await.unwrap()[0].id;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stores, stop) = (stores.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                stores.accounts.credit_account(id, 1).await.unwrap();
            }
        })
    };
    while !matches!(online.state(), OnlineState::CuttingOver { .. }) {
        assert!(!online.state().is_final(), "{:?}", online.state());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Release);
    writer.await.unwrap();
    let Ok(stores) = Arc::try_unwrap(stores) else {
        panic!("the writer still holds the stores");
    };
    stores.close().await.unwrap();

    let db = nodestore::connect(&backend(fx)).await.unwrap().unwrap();
    let facts = migrator::inspect_target(&db).await.unwrap();
    assert!(!facts.migrated, "a staged copy is not migrated data");
    let staged = facts.staged.clone().expect("the copy is staged");
    assert_eq!(staged.source_path, kv.display().to_string());
    let status = nodestore::status::status(&config).await.unwrap();
    let sql = status.sql.unwrap();
    assert_eq!(
        sql.staged_from.as_deref(),
        Some(staged.source_path.as_str())
    );
    assert!(sql.migrations.is_empty());
    assert!(
        status.open_would.starts_with("discard the staged copy"),
        "{}",
        status.open_would
    );

    let Err(refused) = Stores::open(&Config::new(backend(fx))).await else {
        panic!("an open without the key-value database serves no staged copy");
    };
    assert!(
        matches!(refused, nodestore::Error::UnfinishedOnlineMigration { .. }),
        "{refused}"
    );
    let dry = migrator::Options {
        dry_run: true,
        ..migrator::Options::default()
    };
    let failure = migrator::migrate(&kv, &db, &dry, None).await.unwrap_err();
    assert!(
        matches!(
            failure.error,
            migrator::Error::UnfinishedOnlineMigration { .. }
        ),
        "{failure}"
    );
    assert!(
        migrator::inspect_target(&db)
            .await
            .unwrap()
            .staged
            .is_some(),
        "a dry run writes nothing"
    );

    let outcome = migrator::migrate(&kv, &db, &migrator::Options::default(), None)
        .await
        .unwrap();
    assert!(outcome.is_complete(), "{outcome:?}");
    let facts = migrator::inspect_target(&db).await.unwrap();
    assert!(facts.migrated && facts.staged.is_none());
    assert_eq!(facts.records.len(), 1, "one migration recorded");
    let want = as_migrated(&dump_kv(&kv).await.unwrap()).unwrap();
    let report = nodestore::verify::compare(&want, &dump_sql(&db).await.unwrap());
    assert!(report.is_clean(), "{:?}", report.differences);
}

testkit::backend_tests!(sqlite => sqlite;
    no_write_is_lost_or_fails_across_the_cutover,
    closing_during_the_migration_rolls_it_back,
    status_sees_a_running_online_migration,
    a_staged_copy_is_refused_then_discarded,
);
testkit::backend_tests!(postgres => postgres;
    no_write_is_lost_or_fails_across_the_cutover,
    closing_during_the_migration_rolls_it_back,
    status_sees_a_running_online_migration,
    a_staged_copy_is_refused_then_discarded,
);

/// `nodestore status`, another process, sees that a migration is running
/// while a node migrates online.
async fn status_sees_a_running_online_migration(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    generate(&kv, Scale::S.shape(), 24, &|_, _, _| {})
        .await
        .unwrap();
    let config = Config {
        // No pause is short enough: the migration catches up for as long
        // as the writer below writes.
        online_pause_budget: std::time::Duration::ZERO,
        ..online_config(fx, &kv)
    };
    let file = dir.path().join("node.toml");
    let backend = match fx {
        SqlFixture::Sqlite(d) => format!(
            "type = \"sqlite\"\nfile = \"{}\"",
            d.path().join("node.db").display()
        ),
        SqlFixture::Postgres(db) => format!("type = \"postgres\"\nurl = \"{}\"", db.url()),
    };
    std::fs::write(
        &file,
        format!(
            "kv_dir = \"{}\"\nmigration = \"online\"\n[backend]\n{backend}\n",
            kv.display()
        ),
    )
    .unwrap();
    let stores = Arc::new(Stores::open(&config).await.unwrap());
    let online = stores.online.clone().unwrap();
    let id = stores.accounts.accounts().await.unwrap()[0].id;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stores, stop) = (stores.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                stores.accounts.credit_account(id, 1).await.unwrap();
            }
        })
    };
    while !matches!(
        online.state(),
        OnlineState::CatchingUp { .. } | OnlineState::CuttingOver { .. }
    ) {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodestore"))
        .args(["status", "--json", "--config"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["kv"]["migration_running"], true, "{json}");
    stop.store(true, Ordering::Release);
    writer.await.unwrap();
    let Ok(stores) = Arc::try_unwrap(stores) else {
        panic!("the writer still holds the stores");
    };
    stores.close().await.unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodestore"))
        .args(["status", "--json", "--config"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["kv"]["migration_running"], false, "{json}");
    // What opening with `migration = "online"` does, as `Stores::open` does it.
    let would = json["open_would"].as_str().unwrap_or_default();
    assert!(
        would.contains("in the background") && would.contains("online migration"),
        "{json}"
    );
}
