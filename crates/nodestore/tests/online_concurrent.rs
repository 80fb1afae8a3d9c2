//! Concurrent writers across a whole online migration (docs/design.md
//! §7.4): several tasks call every write method of every store at once,
//! some inside timeouts that drop them mid-call (as a node drops an RPC
//! handler whose client went away), some linking sessions and accounts
//! created a moment before, through the copy, the catch-up, the cutover and
//! past the switch. Afterwards SQL holds exactly what the key-value
//! database held at the switch (the migration's rules applied): every
//! acknowledged write and every dropped write that landed, no matter which
//! store it touched. Only the records touched by calls made while a cutover
//! was under way (or just before it) may differ, as those calls may have
//! gone to SQL after the switch.
//!
//! Seeded: every failure prints its seed; `NODESTORE_ONLINE_SEED=N` runs
//! that case alone, `NODESTORE_ONLINE_CASES=N` runs N cases per backend
//! (16 by default; CI's `cargo xtask ci` sets 64).
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]
#![allow(
    clippy::print_stderr,
    reason = "a random test prints its seed, to repeat a failure"
)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodestore::dump::{as_migrated, dump_kv, dump_sql};
use nodestore::generate::{Scale, generate};
use nodestore::{Config, MigrationPolicy, OnlineState, Stores};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store_actions::AddAction;
use store_firewall::{Mode, Namespace, Scope};
use store_sessions::{NewSession, SessionState, SessionType};
use testkit::sql::{SqlFixture, postgres, sqlite};

const SEED_ENV: &str = "NODESTORE_ONLINE_SEED";
const CASES_ENV: &str = "NODESTORE_ONLINE_CASES";
const DEFAULT_CASES: u64 = 16;
/// Writer tasks per case.
const WRITERS: u64 = 4;
/// Calls a case makes at most before it stops writing and lets the
/// migration finish (a loaded machine may back off its cutover for long).
const MAX_CALLS: usize = 4000;
/// A dropped call issued this long before the first cutover may still be
/// queued at the gate when it closes.
const GRACE: Duration = Duration::from_millis(250);

mod common;
use common::backend;

fn online_config(fx: &SqlFixture, kv: &Path) -> Config {
    Config {
        kv_dir: Some(kv.to_path_buf()),
        migration: MigrationPolicy::Online,
        ..Config::new(backend(fx))
    }
}

/// What the writes made so far, to pick targets from.
#[derive(Default)]
struct World {
    accounts: Vec<store_accounts::AccountId>,
    sessions: Vec<store_sessions::Session>,
    actions: Vec<store_actions::ActionLocator>,
    n: u64,
}

fn pick<T: Clone>(v: &[T], rng: &mut StdRng) -> Option<T> {
    (!v.is_empty()).then(|| v[rng.random_range(0..v.len())].clone())
}

/// Fails on a backend error (what an online migration must never cause);
/// a domain error is what an offline store answers to the same call.
fn domain<T, E: std::fmt::Display>(what: &str, r: &Result<T, E>) {
    if let Err(e) = r {
        let text = e.to_string();
        assert!(
            !text.contains(" backend: "),
            "{what}: a backend error: {text}"
        );
    }
}

/// One random write of any store; returns the names (as verify names
/// records) of what it may touch.
async fn write(stores: &Stores, world: &Mutex<World>, rng: &mut StdRng) -> Vec<String> {
    let (n, account, session, action) = {
        let mut w = world.lock().unwrap();
        w.n += 1;
        (
            w.n,
            pick(&w.accounts, rng),
            pick(&w.sessions, rng),
            pick(&w.actions, rng),
        )
    };
    let kind = rng.random_range(0..20u8);
    match (kind, account, session, action) {
        (0, Some(id), ..) => {
            domain(
                "credit",
                &stores
                    .accounts
                    .credit_account(id, rng.random_range(1..1000))
                    .await,
            );
            vec![format!("account {id}")]
        }
        (1, Some(id), ..) => {
            domain(
                "debit",
                &stores
                    .accounts
                    .debit_account(id, rng.random_range(1..1000))
                    .await,
            );
            vec![format!("account {id}")]
        }
        (2, Some(id), ..) => {
            let h = store_accounts::Hash([rng.random_range(0..4u8); 32]);
            domain("invoice", &stores.accounts.add_account_invoice(id, h).await);
            vec![format!("account {id}")]
        }
        (3, Some(id), ..) => {
            let h = store_accounts::Hash([rng.random_range(0..3u8); 32]);
            let r = stores
                .accounts
                .upsert_account_payment(
                    id,
                    h,
                    rng.random_range(1..10_000),
                    store_accounts::PaymentStatus::InFlight,
                    store_accounts::UpsertOptions::default(),
                )
                .await;
            domain("payment", &r);
            vec![format!("account {id}")]
        }
        (4, Some(id), ..) => {
            let h = store_accounts::Hash([rng.random_range(0..3u8); 32]);
            domain(
                "delete payment",
                &stores.accounts.delete_account_payment(id, h).await,
            );
            vec![format!("account {id}")]
        }
        (5, ..) => {
            // An account and, at once, a session linked to it: the
            // session's key may reach the journal before the account's.
            let r = stores
                .accounts
                .new_account(100, None, &format!("conc-{n}"))
                .await;
            domain("new account", &r);
            let Ok(a) = r else { return vec![] };
            world.lock().unwrap().accounts.push(a.id);
            let mut new = NewSession::new(
                format!("linked {n}"),
                SessionType::MacaroonAdmin,
                chrono::Utc::now() + chrono::Duration::hours(1),
                "mailbox:443",
            );
            new.account = Some(a.id);
            let s = stores.sessions.new_session(new).await;
            domain("new session", &s);
            if let Ok(s) = s {
                world.lock().unwrap().sessions.push(s);
            }
            vec![format!("account {}", a.id), "session ".into()]
        }
        (6, Some(id), ..) => {
            domain("remove account", &stores.accounts.remove_account(id).await);
            world.lock().unwrap().accounts.retain(|a| *a != id);
            vec![format!("account {id}"), "session ".into(), "action ".into()]
        }
        (7, Some(id), ..) => {
            let update = store_accounts::AccountUpdate {
                label: Some(format!("renamed-{n}")),
                ..Default::default()
            };
            domain(
                "update account",
                &stores.accounts.update_account(id, update).await,
            );
            vec![format!("account {id}")]
        }
        (8, ..) => {
            let i = rng.random_range(0..100_000u64);
            let indexes = store_accounts::LastIndexes {
                add_index: i,
                settle_index: i + 1,
            };
            domain(
                "indexes",
                &stores.accounts.store_last_indexes(indexes).await,
            );
            vec!["last indexes".into()]
        }
        (9, _, founder, _) => {
            // A session, and one linked to its group right after.
            let mut new = NewSession::new(
                format!("founder {n}"),
                SessionType::MacaroonAdmin,
                chrono::Utc::now() + chrono::Duration::hours(1),
                "mailbox:443",
            );
            new.linked_group = founder.filter(|_| rng.random_bool(0.3)).map(|s| s.id);
            let s = stores.sessions.new_session(new).await;
            domain("new session", &s);
            let Ok(s) = s else {
                return vec!["session ".into()];
            };
            let mut member = NewSession::new(
                format!("member {n}"),
                SessionType::MacaroonAdmin,
                chrono::Utc::now() + chrono::Duration::hours(1),
                "mailbox:443",
            );
            member.linked_group = Some(s.id);
            let m = stores.sessions.new_session(member).await;
            domain("linked session", &m);
            let mut w = world.lock().unwrap();
            w.sessions.push(s);
            if let Ok(m) = m {
                w.sessions.push(m);
            }
            vec!["session ".into()]
        }
        (10, _, Some(s), _) => {
            domain(
                "shift",
                &stores
                    .sessions
                    .shift_state(s.id, SessionState::Created)
                    .await,
            );
            vec![format!("session {}", s.id)]
        }
        (11, _, Some(s), _) => {
            let key = pick(&world.lock().unwrap().sessions, rng).map(|o| o.local_public_key);
            if let Some(key) = key {
                domain(
                    "remote key",
                    &stores.sessions.update_remote_public_key(s.id, key).await,
                );
            }
            vec![format!("session {}", s.id)]
        }
        (12, _, Some(s), _) => {
            domain(
                "delete reserved",
                &stores.sessions.delete_reserved_session(s.id).await,
            );
            vec![
                "session ".into(),
                "action ".into(),
                "kv entry ".into(),
                "privacy pair ".into(),
            ]
        }
        (13, ..) => {
            domain(
                "delete reserved sessions",
                &stores.sessions.delete_reserved_sessions().await,
            );
            vec![
                "session ".into(),
                "action ".into(),
                "kv entry ".into(),
                "privacy pair ".into(),
            ]
        }
        (14, _, Some(s), _) => {
            // Mostly under the group's id, as LiT writes; sometimes under a
            // linked session's own id, the legacy layout whose entries join
            // the group (with keys of their own: the same key under two ids
            // of one group is refused offline and online alike).
            let legacy = s.id != s.group_id && rng.random_bool(0.3);
            let (under, prefix) = if legacy {
                (s.id, format!("m{}-", s.id))
            } else {
                (s.group_id, String::new())
            };
            let tx = stores
                .firewall
                .begin_kv(Namespace::new("conc-rule", under, ""), Mode::Update)
                .await;
            domain("begin kv", &tx);
            if let Ok(mut tx) = tx {
                let key = format!("{prefix}k{}", rng.random_range(0..6u8));
                let scope = if rng.random_bool(0.7) {
                    Scope::Local
                } else {
                    Scope::LocalTemp
                };
                if rng.random_bool(0.75) {
                    domain("kv set", &tx.set(scope, &key, &n.to_be_bytes()).await);
                } else {
                    domain("kv del", &tx.del(scope, &key).await);
                }
                domain("kv commit", &tx.commit().await);
            }
            vec!["kv entry ".into()]
        }
        (15, _, Some(s), _) => {
            // Under the group's id or, the legacy layout, a linked session's.
            let under = if rng.random_bool(0.7) {
                s.group_id
            } else {
                s.id
            };
            let p = stores.firewall.begin_privacy(under, Mode::Update).await;
            domain("begin privacy", &p);
            if let Ok(mut p) = p {
                domain(
                    "pair",
                    &p.new_pair(&format!("real-{n}"), &format!("pseudo-{n}"))
                        .await,
                );
                domain("privacy commit", &p.commit().await);
            }
            vec!["privacy pair ".into()]
        }
        (16, ..) => {
            domain("wipe temp", &stores.firewall.delete_temp_kv_stores().await);
            vec!["kv entry ".into()]
        }
        (17 | 18, account, session, _) => {
            let r = stores
                .actions
                .add_action(AddAction {
                    session_id: session.map(|s| s.id),
                    account_id: account,
                    actor_name: "concurrent".into(),
                    rpc_method: "/test/Concurrent".into(),
                    ..AddAction::default()
                })
                .await;
            domain("add action", &r);
            if let Ok(l) = r {
                world.lock().unwrap().actions.push(l);
                return vec![format!("action {l}")];
            }
            vec!["action ".into()]
        }
        (19, _, _, Some(l)) => {
            let r = stores
                .actions
                .set_action_state(l, store_actions::ActionState::Done, "")
                .await;
            domain("action state", &r);
            vec![format!("action {l}")]
        }
        _ => vec![],
    }
}

/// A call a writer made: when (since the case began), whether it was
/// dropped, and the records it may have touched.
type Call = (Duration, bool, Vec<String>);

/// One case: a small node database, writers across its online migration.
async fn case(fx: &SqlFixture, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    let mut shape = Scale::S.shape();
    shape.actions = 500;
    generate(&kv, shape, seed, &|_, _, _| {}).await.unwrap();
    let stores = Arc::new(Stores::open(&online_config(fx, &kv)).await.unwrap());
    let online = stores.online.clone().expect("an online migration");
    let world = Arc::new(Mutex::new(World {
        accounts: stores
            .accounts
            .accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect(),
        sessions: stores.sessions.list_sessions().await.unwrap(),
        ..World::default()
    }));
    // When the first cutover began, and every call issued from then on (or
    // dropped just before) with what it touched.
    let started = Instant::now();
    let cutover_at: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let (stores, online, world, calls, stop, cutover_at) = (
            stores.clone(),
            online.clone(),
            world.clone(),
            calls.clone(),
            stop.clone(),
            cutover_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(t));
            let mut made = 0;
            // Past the switch too: a few calls on SQL.
            let mut after = 0;
            while !stop.load(Ordering::Relaxed) && made < MAX_CALLS && after < 10 {
                if matches!(online.state(), OnlineState::CuttingOver { .. }) {
                    cutover_at.lock().unwrap().get_or_insert(started.elapsed());
                }
                if online.switched() {
                    after += 1;
                }
                let at = started.elapsed();
                let dropped = rng.random_bool(0.3);
                let touched = if dropped {
                    let limit = Duration::from_micros(rng.random_range(0..3000));
                    let mut own = StdRng::seed_from_u64(rng.random());
                    let w = write(&stores, &world, &mut own);
                    tokio::time::timeout(limit, w).await.unwrap_or_else(|_| {
                        // What it may touch is unknown: everything of the
                        // kinds it could have been, which only matters if
                        // it was issued near the cutover.
                        vec!["".into()]
                    })
                } else {
                    write(&stores, &world, &mut rng).await
                };
                calls.lock().unwrap().push((at, dropped, touched));
                made += 1;
            }
        }));
    }
    let end = online.wait().await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        matches!(end, OnlineState::Switched { .. }),
        "seed {seed}: {end:?}"
    );
    let Ok(stores) = Arc::try_unwrap(stores) else {
        panic!("seed {seed}: the writers still hold the stores");
    };
    stores.close().await.unwrap();
    assert!(
        matches!(
            tombstone::status(&kv).unwrap(),
            Some(tombstone::Status::Tombstoned(_))
        ),
        "seed {seed}: the key-value database is not retired"
    );
    let want = as_migrated(&dump_kv(&kv).await.unwrap()).unwrap();
    let db = nodestore::connect(&backend(fx)).await.unwrap().unwrap();
    common::assert_record_counts(&db, &want, &format!("seed {seed}")).await;
    let got = dump_sql(&db).await.unwrap();
    let window = cutover_at
        .lock()
        .unwrap()
        .map(|c| c.saturating_sub(GRACE))
        .unwrap_or(Duration::ZERO);
    let near: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _, _)| *at >= window)
        .flat_map(|(_, _, t)| t.clone())
        .collect();
    let report = nodestore::verify::compare(&want, &got);
    let unexplained: Vec<_> = report
        .differences
        .iter()
        .filter(|d| !near.iter().any(|t| d.record.starts_with(t.as_str())))
        .collect();
    let n = calls.lock().unwrap().len();
    assert!(
        unexplained.is_empty(),
        "seed {seed} ({n} calls): differences not explained by calls near the cutover: {:#?}",
        &unexplained[..unexplained.len().min(10)]
    );
    db.close().await.unwrap();
}

fn cases(backend: &'static str) {
    let seeds: Vec<u64> = match std::env::var(SEED_ENV) {
        Ok(s) => vec![s.parse().expect("NODESTORE_ONLINE_SEED is a number")],
        Err(_) => {
            let n = std::env::var(CASES_ENV)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(DEFAULT_CASES);
            let base: u64 = rand::random::<u32>().into();
            (0..n).map(|i| base * 1000 + i).collect()
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for seed in seeds {
        rt.block_on(async {
            let name = format!("online_concurrent::{backend}::{seed}");
            let fx = if backend == "sqlite" {
                sqlite(&name).await
            } else {
                postgres(&name).await
            };
            if let Some(fx) = fx {
                // The seed is printed before the case, so a hang names it too.
                eprintln!("{backend}: {SEED_ENV}={seed}");
                case(&fx, seed).await;
            }
        });
    }
}

mod sqlite {
    #[test]
    fn concurrent_dropped_and_linked_writes_all_reach_sql() {
        super::cases("sqlite");
    }
}

mod postgres {
    #[test]
    fn concurrent_dropped_and_linked_writes_all_reach_sql() {
        super::cases("postgres");
    }
}
