//! The online migration under load (docs/design.md §7): a fixed rate of
//! mixed writes and reads across the four stores before (on the key-value
//! stores alone), during the whole migration, and after the switch (on
//! SQL); the time to switch, the longest write pause, call latency per
//! phase, failed calls, the journal's peak, and verify at the end.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodestore::{BackendConfig, Config, MigrationPolicy, OnlineState, Stores};
use serde_json::{Value, json};
use store_actions::{ActionFilter, ActionQuery, AddAction};
use store_firewall::{Mode, Namespace, Scope};

use crate::BoxError;

/// Writes and reads per second, across the four stores.
pub(crate) const WRITES_PER_S: u32 = 200;
/// Reads per second.
pub(crate) const READS_PER_S: u32 = 1000;
/// How long the load runs before the migration and after the switch.
const WINDOW: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    During,
    After,
}

struct Call {
    /// When it started, since the run began.
    at: Duration,
    phase: Phase,
    /// The migration's state when the call started (`kv` before it).
    state: &'static str,
    write: bool,
    micros: u64,
    ok: bool,
    /// A write that finished after the switch: the record it wrote, as
    /// verify names it (it may have gone to SQL, which verify then finds
    /// different from the retired key-value database, as it should).
    after_switch: Option<String>,
}

/// What the load calls pick from.
#[derive(Clone)]
struct Targets {
    accounts: Vec<store_accounts::AccountId>,
    sessions: Vec<store_sessions::SessionId>,
    groups: Vec<store_sessions::SessionId>,
}

async fn targets(stores: &Stores) -> Result<Targets, BoxError> {
    let sessions = stores.sessions.list_sessions().await?;
    Ok(Targets {
        accounts: stores
            .accounts
            .accounts()
            .await?
            .into_iter()
            .map(|a| a.id)
            .collect(),
        groups: sessions.iter().map(|s| s.group_id).collect(),
        sessions: sessions.into_iter().map(|s| s.id).collect(),
    })
}

/// One call of the mix; `i` picks the kind and the record. Returns whether
/// it succeeded and, for a write, the record it wrote as verify names it
/// (a kv-store entry by the end of its name).
async fn call(stores: &Stores, t: &Targets, i: usize, write: bool) -> (bool, Option<String>) {
    let account = t.accounts[i % t.accounts.len()];
    let session = t.sessions[i % t.sessions.len()];
    let group = t.groups[i % t.groups.len()];
    let ns = Namespace::new("bench-online", group, "");
    if write {
        return match i % 3 {
            0 => (
                stores.accounts.credit_account(account, 1).await.is_ok(),
                Some(format!("account {account}")),
            ),
            1 => match stores
                .actions
                .add_action(AddAction {
                    session_id: Some(session),
                    actor_name: "bench".into(),
                    rpc_method: "/bench/Online".into(),
                    ..AddAction::default()
                })
                .await
            {
                Ok(l) => (true, Some(format!("action {l}"))),
                Err(_) => (false, None),
            },
            _ => {
                let key = format!("k{}", i % 64);
                let ok = match stores.firewall.begin_kv(ns, Mode::Update).await {
                    Ok(mut tx) => {
                        tx.set(Scope::Local, &key, &i.to_be_bytes()).await.is_ok()
                            && tx.commit().await.is_ok()
                    }
                    Err(_) => false,
                };
                (ok, Some(format!("/{key}")))
            }
        };
    }
    let ok = {
        match i % 4 {
            0 => stores.accounts.account(account).await.is_ok(),
            1 => stores.sessions.session(session).await.is_ok(),
            2 => stores
                .actions
                .list_actions(&ActionQuery {
                    filter: ActionFilter {
                        session_id: Some(session),
                        ..ActionFilter::default()
                    },
                    max: 100,
                    ..ActionQuery::default()
                })
                .await
                .is_ok(),
            _ => match stores.firewall.begin_kv(ns, Mode::View).await {
                Ok(mut tx) => {
                    tx.get(Scope::Local, &format!("k{}", i % 64)).await.is_ok()
                        && tx.commit().await.is_ok()
                }
                Err(_) => false,
            },
        }
    };
    (ok, None)
}

/// Runs the load at its fixed rates until `until` says stop; every call is
/// its own task, so a call that waits does not hold back the next.
async fn load(
    origin: Instant,
    stores: Arc<Stores>,
    t: Targets,
    calls: Arc<Mutex<Vec<Call>>>,
    phase: impl Fn() -> Phase + Send + Sync + 'static,
    until: impl Fn() -> bool + Send + Sync + 'static,
) {
    let switched = {
        let online = stores.online.clone();
        move || online.as_ref().is_some_and(|o| o.switched())
    };
    let switched = Arc::new(switched);
    let state = {
        let online = stores.online.clone();
        move || online.as_ref().map_or("kv", |o| state_name(&o.state()))
    };
    let state = Arc::new(state);
    let phase = Arc::new(phase);
    let mut ticks = tokio::time::interval(Duration::from_micros(
        1_000_000 / u64::from(WRITES_PER_S + READS_PER_S),
    ));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_write = (WRITES_PER_S + READS_PER_S) / WRITES_PER_S;
    let mut i = 0usize;
    let mut tasks = Vec::new();
    while !until() {
        ticks.tick().await;
        i += 1;
        let write = i.is_multiple_of(per_write as usize);
        let (stores, t, calls, phase, switched, state) = (
            stores.clone(),
            t.clone(),
            calls.clone(),
            phase.clone(),
            switched.clone(),
            state.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let p = phase();
            let state = state();
            let started = Instant::now();
            let at = started - origin;
            // Writes are every `per_write`th tick: numbered on their own,
            // so the mix cycles through every kind and record (numbered by
            // tick, every write was a credit).
            let n = if write { i / per_write as usize } else { i };
            let (ok, record) = call(&stores, &t, n, write).await;
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let after_switch = record.filter(|_| switched());
            if let Ok(mut c) = calls.lock() {
                c.push(Call {
                    at,
                    phase: p,
                    state,
                    write,
                    micros,
                    ok,
                    after_switch,
                });
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// A state's name, as the report groups calls by it.
fn state_name(s: &OnlineState) -> &'static str {
    match s {
        OnlineState::Starting => "starting",
        OnlineState::Copying { .. } => "copying",
        OnlineState::CatchingUp { .. } => "catching_up",
        OnlineState::CommittingCopy => "committing_copy",
        OnlineState::CuttingOver { .. } => "cutting_over",
        OnlineState::Switched { .. } => "switched",
        OnlineState::Failed { .. } => "failed",
    }
}

/// A write slower than this counts as slow in the report by state.
const SLOW_WRITE_US: u64 = 50_000;

fn percentiles(mut v: Vec<u64>) -> Value {
    if v.is_empty() {
        return json!({ "calls": 0 });
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({ "calls": v.len(), "p50_us": at(0.5), "p99_us": at(0.99), "max_us": v[v.len() - 1] })
}

/// The online run: before, during and after, then verify.
/// The online run: before, during and after, then verify; the calls drawn
/// into `chart` (SVG) under `title`.
pub(crate) async fn run(
    kv: &Path,
    backend: BackendConfig,
    chart: &Path,
    title: &str,
) -> Result<Value, BoxError> {
    let origin = Instant::now();
    let calls = Arc::new(Mutex::new(Vec::new()));
    // Before: the key-value stores alone.
    let stores = Arc::new(
        Stores::open(&Config::new(BackendConfig::Kv {
            dir: kv.to_path_buf(),
        }))
        .await?,
    );
    let t = targets(&stores).await?;
    let started = Instant::now();
    load(
        origin,
        stores.clone(),
        t.clone(),
        calls.clone(),
        || Phase::Before,
        move || started.elapsed() >= WINDOW,
    )
    .await;
    Arc::try_unwrap(stores)
        .map_err(|_| "the load still holds the stores")?
        .close()
        .await?;

    // During, then after the switch.
    let config = Config {
        kv_dir: Some(kv.to_path_buf()),
        migration: MigrationPolicy::Online,
        ..Config::new(backend.clone())
    };
    let opened = Instant::now();
    let stores = Arc::new(Stores::open(&config).await?);
    let online = stores
        .online
        .clone()
        .ok_or("the migration did not start online")?;
    let switched_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let watcher = {
        let (online, switched_at) = (online.clone(), switched_at.clone());
        tokio::spawn(async move {
            let end = online.wait().await;
            if let Ok(mut s) = switched_at.lock() {
                *s = Some(Instant::now());
            }
            end
        })
    };
    let (o1, s1) = (online.clone(), switched_at.clone());
    load(
        origin,
        stores.clone(),
        t,
        calls.clone(),
        move || {
            if o1.switched() {
                Phase::After
            } else {
                Phase::During
            }
        },
        move || {
            s1.lock()
                .ok()
                .and_then(|s| *s)
                .is_some_and(|at| at.elapsed() >= WINDOW)
        },
    )
    .await;
    let end = watcher.await?;
    let to_switch = switched_at
        .lock()
        .ok()
        .and_then(|s| *s)
        .map_or(0.0, |at| (at - opened).as_secs_f64());
    let (longest_pause, journal_peak, outcome, copy) = match &end {
        OnlineState::Switched {
            longest_pause,
            journal_peak,
            outcome,
            copy,
        } => (*longest_pause, *journal_peak, Some(outcome.clone()), *copy),
        other => return Err(format!("the online migration did not switch: {other:?}").into()),
    };
    Arc::try_unwrap(stores)
        .map_err(|_| "the load still holds the stores")?
        .close()
        .await?;
    let db = nodestore::connect(&backend)
        .await?
        .ok_or("no SQL database")?;
    let verified = nodestore::verify::verify(kv, &db).await?;

    let calls = std::mem::take(&mut *calls.lock().map_err(|_| "poisoned")?);
    // Records written after the switch went to SQL only: verify finds them
    // different from the retired key-value database, as it should. Any
    // other difference is a migration's error.
    let written_after: std::collections::HashSet<&str> = calls
        .iter()
        .filter_map(|c| c.after_switch.as_deref())
        .collect();
    let unexplained = verified
        .differences
        .iter()
        .filter(|d| {
            let later_entry = d.record.starts_with("kv entry ")
                && written_after
                    .iter()
                    .any(|k| k.starts_with('/') && d.record.ends_with(k));
            !written_after.contains(d.record.as_str()) && !later_entry
        })
        .count();
    let mut phases = serde_json::Map::new();
    for (name, phase) in [
        ("before", Phase::Before),
        ("during", Phase::During),
        ("after", Phase::After),
    ] {
        let of = |write: bool| {
            percentiles(
                calls
                    .iter()
                    .filter(|c| c.phase == phase && c.write == write)
                    .map(|c| c.micros)
                    .collect(),
            )
        };
        phases.insert(
            name.into(),
            json!({ "writes": of(true), "reads": of(false) }),
        );
    }
    // Where slow writes come from: the writes started in each state of the
    // migration, and how many of them took longer than the goal's p99.
    let mut by_state = serde_json::Map::new();
    for c in calls.iter().filter(|c| c.write && c.phase != Phase::Before) {
        let e = by_state
            .entry(c.state)
            .or_insert_with(|| json!({ "writes": 0, "slow": 0 }));
        e["writes"] = json!(e["writes"].as_u64().unwrap_or(0) + 1);
        if c.micros > SLOW_WRITE_US {
            e["slow"] = json!(e["slow"].as_u64().unwrap_or(0) + 1);
        }
    }
    let failed = calls.iter().filter(|c| !c.ok).count();
    let points: Vec<crate::chart::Point> = calls
        .iter()
        .map(|c| crate::chart::Point {
            at_s: c.at.as_secs_f64(),
            ms: c.micros as f64 / 1000.0,
            write: c.write,
            state: c.state,
        })
        .collect();
    std::fs::write(
        chart,
        crate::chart::svg(title, &points, SLOW_WRITE_US as f64 / 1000.0),
    )?;
    Ok(json!({
        "writes_per_s": WRITES_PER_S,
        "reads_per_s": READS_PER_S,
        "seconds_to_switch": to_switch,
        "migration_seconds": outcome.map(|o| o.report.duration.as_secs_f64()),
        "longest_pause_ms": longest_pause.as_secs_f64() * 1000.0,
        "journal_peak_keys": journal_peak,
        "copy_pieces": copy.pieces,
        "largest_piece_mib": copy.largest_bytes as f64 / f64::from(1u32 << 20),
        "failed_calls": failed,
        "calls": calls.len(),
        "verify_differences": unexplained,
        "verify_differences_from_later_writes": verified.differences.len() - unexplained,
        "phases": phases,
        "writes_by_state": by_state,
        "chart": chart.display().to_string(),
    }))
}
