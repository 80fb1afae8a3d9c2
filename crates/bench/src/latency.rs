//! Store latency: each operation timed one call at a time through the
//! `Store` traits, as a node would call them, on data of the chosen scale.
//!
//! The ids the operations use are sampled once from the key-value stores
//! (every backend holds the same data) and spread over the whole data set,
//! so no run profits from a single hot row.

use std::time::Instant;

use chrono::{Duration, Utc};
use nodestore::Stores;
use serde_json::{Value, json};
use store_accounts::{AccountId, Hash, PaymentStatus, UpsertOptions};
use store_actions::{ActionFilter, ActionQuery, ActionState, AddAction};
use store_firewall::{Mode, Namespace, Scope};
use store_sessions::{NewSession, SessionId, SessionState, SessionType};

use crate::BoxError;

/// Calls timed per operation.
pub(crate) const SAMPLES: usize = 200;

/// The offset of a deep page: page 100 of 100 actions.
const DEEP_OFFSET: u64 = 10_000;

/// Calls timed for listings that return a whole set (sessions by state).
const SET_SAMPLES: usize = 20;

/// What an operation is held to (issue 13's goals): a point read, a page
/// of actions, or nothing (writes and whole-set listings are reported only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    Point,
    Page,
    None,
}

impl Goal {
    /// The goal on `backend` as (median µs, p99 µs); `None` when unset.
    pub(crate) fn on(self, backend: &str) -> Option<(Option<f64>, f64)> {
        match (self, backend) {
            (Goal::Point, "sqlite") => Some((Some(100.0), 1_000.0)),
            (Goal::Point, "postgres") => Some((Some(300.0), 2_000.0)),
            (Goal::Page, "sqlite") => Some((None, 3_000.0)),
            (Goal::Page, "postgres") => Some((None, 5_000.0)),
            _ => None,
        }
    }
}

/// The action filters a listing is timed with, each on a first page and on
/// a deep one (the 100th page, or three quarters into the matches when
/// there are fewer).
const FILTERS: [&str; 8] = [
    "session",
    "group",
    "feature",
    "actor",
    "method",
    "state",
    "time range",
    "no filter",
];

/// The operations with their goals, in the order the table shows them.
pub(crate) fn ops() -> Vec<(String, Goal)> {
    let mut ops: Vec<(String, Goal)> = [
        ("get account", Goal::Point),
        ("list payments (100)", Goal::Point),
        ("upsert payment", Goal::None),
        ("get session", Goal::Point),
        ("sessions in group", Goal::Point),
        ("list sessions by state", Goal::None),
        ("shift state", Goal::None),
        ("kv-store get", Goal::Point),
        ("kv-store set", Goal::None),
        ("privacy real to pseudo", Goal::Point),
        ("privacy pseudo to real", Goal::Point),
        ("add action", Goal::None),
    ]
    .into_iter()
    .map(|(op, goal)| (op.to_owned(), goal))
    .collect();
    for filter in FILTERS {
        for page in ["first", "deep"] {
            ops.push((format!("actions by {filter}, {page} page"), Goal::Page));
        }
    }
    ops
}

/// The ids the operations use.
pub(crate) struct Samples {
    accounts: Vec<AccountId>,
    sessions: Vec<SessionId>,
    /// (namespace, scope, key) of existing kv-store entries.
    entries: Vec<(Namespace, Scope, String)>,
    /// (group, real value, pseudo value) of existing privacy pairs.
    pairs: Vec<(SessionId, String, String)>,
    features: Vec<String>,
    /// Groups of the sampled sessions.
    groups: Vec<SessionId>,
    /// The sampled sessions themselves.
    sampled_sessions: Vec<store_sessions::Session>,
    /// Each listing's queries: (filter name, [(first page, deep page)]).
    listings: Vec<(&'static str, Vec<(ActionQuery, ActionQuery)>)>,
}

/// `n` items spread evenly over `all`.
fn spread<T: Clone>(all: &[T], n: usize) -> Vec<T> {
    if all.is_empty() {
        return Vec::new();
    }
    (0..n).map(|i| all[i * all.len() / n].clone()).collect()
}

/// Samples ids from the stores (the key-value ones: listing them is cheap).
pub(crate) async fn samples(stores: &Stores) -> Result<Samples, BoxError> {
    let accounts: Vec<AccountId> = stores
        .accounts
        .accounts()
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let sessions = stores.sessions.list_sessions().await?;
    let any_group = sessions.first().map(|s| s.group_id);
    let entries: Vec<_> = stores
        .firewall
        .kv_entries()
        .await?
        .into_iter()
        .filter_map(|e| {
            // A global entry is reached through any group's namespace.
            let group = e.group.or(any_group)?;
            let scope = match (e.group.is_some(), e.perm) {
                (false, true) => Scope::Global,
                (false, false) => Scope::GlobalTemp,
                (true, true) => Scope::Local,
                (true, false) => Scope::LocalTemp,
            };
            let feature = e.feature.unwrap_or_default();
            Some((Namespace::new(e.rule, group, feature), scope, e.key))
        })
        .collect();
    let pairs: Vec<_> = stores
        .firewall
        .privacy_pairs()
        .await?
        .into_iter()
        .map(|p| (p.group, p.real, p.pseudo))
        .collect();
    let features = ["AutoFees", "Rebalancer", "OkxChannelOpen", "Loop", "Pool"]
        .map(String::from)
        .to_vec();
    let sampled = spread(&sessions, SAMPLES);
    let groups: Vec<SessionId> = sampled.iter().map(|s| s.group_id).collect();
    Ok(Samples {
        accounts: spread(&accounts, SAMPLES),
        sessions: sampled.iter().map(|s| s.id).collect(),
        entries: spread(&entries, SAMPLES),
        pairs: spread(&pairs, SAMPLES),
        features,
        groups,
        sampled_sessions: sampled,
        listings: Vec::new(),
    })
}

/// Adds the listings to time, counted on `stores` (a SQL backend: counting
/// every filter's matches on the key-value store scans the log per filter).
pub(crate) async fn add_listings(stores: &Stores, s: &mut Samples) -> Result<(), BoxError> {
    s.listings = listings(stores, &s.sampled_sessions, &s.features).await?;
    Ok(())
}

/// The filters of every listing timed, from the data: sampled sessions and
/// their groups, the features, the actor and methods actions carry, both
/// states, and one-hour windows spread over the log's time span.
fn filters(
    sessions: &[store_sessions::Session],
    features: &[String],
    actions: &[store_actions::Action],
) -> Vec<(&'static str, Vec<ActionFilter>)> {
    let none = ActionFilter::default;
    let mut methods: Vec<String> = actions
        .iter()
        .map(|a| a.request.rpc_method.clone())
        .collect();
    methods.sort();
    methods.dedup();
    let actors = ["Autopilot".to_owned()];
    let (first, last) = match (actions.first(), actions.last()) {
        (Some(f), Some(l)) => (f.attempted_at, l.attempted_at),
        _ => (Utc::now(), Utc::now()),
    };
    let span = (last - first).max(Duration::hours(1)) - Duration::hours(1);
    let windows = (0..SAMPLES as i32).map(|i| {
        let start = first + span * i / SAMPLES as i32;
        ActionFilter {
            start_time: Some(start),
            end_time: Some(start + Duration::hours(1)),
            ..none()
        }
    });
    let cycle = |values: &[String], make: &dyn Fn(String) -> ActionFilter| {
        (0..SAMPLES)
            .filter_map(|i| values.get(i % values.len().max(1)).cloned().map(make))
            .collect::<Vec<_>>()
    };
    vec![
        (
            "session",
            sessions
                .iter()
                .map(|s| ActionFilter {
                    session_id: Some(s.id),
                    ..none()
                })
                .collect(),
        ),
        (
            "group",
            sessions
                .iter()
                .map(|s| ActionFilter {
                    group_id: Some(s.group_id),
                    ..none()
                })
                .collect(),
        ),
        (
            "feature",
            cycle(features, &|f| ActionFilter {
                feature_name: Some(f),
                ..none()
            }),
        ),
        (
            "actor",
            cycle(&actors, &|a| ActionFilter {
                actor_name: Some(a),
                ..none()
            }),
        ),
        (
            "method",
            cycle(&methods, &|m| ActionFilter {
                rpc_method: Some(m),
                ..none()
            }),
        ),
        (
            "state",
            (0..SAMPLES)
                .map(|i| ActionFilter {
                    state: Some(if i % 2 == 0 {
                        ActionState::Done
                    } else {
                        ActionState::Error
                    }),
                    ..none()
                })
                .collect(),
        ),
        ("time range", windows.collect()),
        ("no filter", (0..SAMPLES).map(|_| none()).collect()),
    ]
}

/// For every filter, its first page of 100 and its deep page: offset
/// [`DEEP_OFFSET`] (page 100, as far as a client paging by hand goes), or
/// three quarters into the matches when there are fewer. An offset is
/// skipped entry by entry on any engine, so a page at offset n costs O(n).
async fn listings(
    stores: &Stores,
    sessions: &[store_sessions::Session],
    features: &[String],
) -> Result<Vec<(&'static str, Vec<(ActionQuery, ActionQuery)>)>, BoxError> {
    let page = |filter: ActionFilter, offset: u64| ActionQuery {
        filter,
        offset,
        max: 100,
        ..ActionQuery::default()
    };
    // The log's ends and its methods, from its first and last pages.
    let mut ends = stores
        .actions
        .list_actions(&page(ActionFilter::default(), 0))
        .await?
        .actions;
    let tail = stores
        .actions
        .list_actions(&ActionQuery {
            reversed: true,
            ..page(ActionFilter::default(), 0)
        })
        .await?
        .actions;
    ends.extend(tail.into_iter().rev());
    let mut out = Vec::new();
    for (name, filters) in filters(sessions, features, &ends) {
        let mut queries = Vec::with_capacity(filters.len());
        let mut counts: std::collections::HashMap<String, u64> = Default::default();
        for filter in filters {
            let key = format!("{filter:?}");
            let n = match counts.get(&key) {
                Some(n) => *n,
                None => {
                    let n = stores
                        .actions
                        .list_actions(&ActionQuery {
                            count_all: true,
                            ..page(filter.clone(), 0)
                        })
                        .await?
                        .total_count;
                    counts.insert(key, n);
                    n
                }
            };
            let deep = (n * 3 / 4).min(DEEP_OFFSET) / 100 * 100;
            queries.push((page(filter.clone(), 0), page(filter, deep)));
        }
        out.push((name, queries));
    }
    Ok(out)
}

/// Median and 99th percentile of `times` (µs), as JSON.
fn summary(mut times: Vec<f64>) -> Value {
    if times.is_empty() {
        return json!({ "median_us": 0.0, "p99_us": 0.0, "samples": 0 });
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    json!({ "median_us": at(0.5), "p99_us": at(0.99), "samples": times.len() })
}

/// Times `op` once per item of `items`.
async fn time<T, F, Fut>(items: impl IntoIterator<Item = T>, mut op: F) -> Result<Value, BoxError>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let mut times = Vec::new();
    for item in items {
        let started = Instant::now();
        op(item).await?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(summary(times))
}

/// Measures every operation on `stores`; returns `{op: {median_us, p99_us}}`.
/// Listings are timed on the first `list_samples` of their queries (the
/// key-value store scans its log for most filters: a few calls tell).
/// It writes (payments, sessions, kv-store values, actions): run it on a copy.
pub(crate) async fn measure(
    stores: &Stores,
    s: &Samples,
    list_samples: usize,
) -> Result<Value, BoxError> {
    let mut out = serde_json::Map::new();
    let a = &stores.accounts;
    out.insert(
        "get account".into(),
        time(&s.accounts, |id| async move {
            a.account(*id).await?;
            Ok(())
        })
        .await?,
    );
    out.insert(
        "list payments (100)".into(),
        time(&s.accounts, |id| async move {
            a.list_account_payments(*id, 0, 100).await?;
            Ok(())
        })
        .await?,
    );
    out.insert(
        "upsert payment".into(),
        time(s.accounts.iter().enumerate(), |(i, id)| async move {
            let mut hash = [0xbe; 32];
            hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
            a.upsert_account_payment(
                *id,
                Hash(hash),
                1_000,
                PaymentStatus::InFlight,
                UpsertOptions::default(),
            )
            .await?;
            Ok(())
        })
        .await?,
    );

    let ss = &stores.sessions;
    out.insert(
        "get session".into(),
        time(&s.sessions, |id| async move {
            ss.session(*id).await?;
            Ok(())
        })
        .await?,
    );
    out.insert(
        "sessions in group".into(),
        time(&s.groups, |id| async move {
            ss.session_ids_in_group(*id).await?;
            Ok(())
        })
        .await?,
    );
    out.insert(
        "list sessions by state".into(),
        time(0..SET_SAMPLES, |i| async move {
            let state = [SessionState::Created, SessionState::Revoked][i % 2];
            ss.list_sessions_by_state(state).await?;
            Ok(())
        })
        .await?,
    );
    // Shift state: reserved sessions made for the purpose go to Created.
    let mut reserved = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let new = NewSession::new(
            format!("bench-{i}"),
            SessionType::MacaroonReadonly,
            Utc::now() + Duration::days(30),
            "mailbox.example:443",
        );
        reserved.push(ss.new_session(new).await?.id);
    }
    out.insert(
        "shift state".into(),
        time(reserved, |id| async move {
            ss.shift_state(id, SessionState::Created).await?;
            Ok(())
        })
        .await?,
    );

    let fw = &stores.firewall;
    out.insert(
        "kv-store get".into(),
        time(&s.entries, |(ns, scope, key)| async move {
            let mut tx = fw.begin_kv(ns.clone(), Mode::View).await?;
            tx.get(*scope, key)
                .await?
                .ok_or("a sampled entry is missing")?;
            tx.commit().await?;
            Ok(())
        })
        .await?,
    );
    out.insert(
        "kv-store set".into(),
        time(&s.entries, |(ns, scope, key)| async move {
            let mut tx = fw.begin_kv(ns.clone(), Mode::Update).await?;
            tx.set(*scope, key, b"{\"value\":42}").await?;
            tx.commit().await?;
            Ok(())
        })
        .await?,
    );
    out.insert(
        "privacy real to pseudo".into(),
        time(&s.pairs, |(group, real, _)| async move {
            let mut tx = fw.begin_privacy(*group, Mode::View).await?;
            tx.real_to_pseudo(real).await?;
            tx.commit().await?;
            Ok(())
        })
        .await?,
    );
    out.insert(
        "privacy pseudo to real".into(),
        time(&s.pairs, |(group, _, pseudo)| async move {
            let mut tx = fw.begin_privacy(*group, Mode::View).await?;
            tx.pseudo_to_real(pseudo).await?;
            tx.commit().await?;
            Ok(())
        })
        .await?,
    );

    let ac = &stores.actions;
    out.insert(
        "add action".into(),
        time(s.sessions.iter().enumerate(), |(i, id)| async move {
            let request = AddAction {
                macaroon_root_key_id: Some(id.macaroon_root_key()),
                session_id: Some(*id),
                feature_name: s.features[i % s.features.len()].clone(),
                rpc_method: "/lnrpc.Lightning/GetInfo".into(),
                rpc_params_json: b"{}".to_vec(),
                ..AddAction::default()
            };
            ac.add_action(request).await?;
            Ok(())
        })
        .await?,
    );
    for (filter, queries) in &s.listings {
        for (page, deep) in [("first", false), ("deep", true)] {
            out.insert(
                format!("actions by {filter}, {page} page"),
                time(
                    queries.iter().take(list_samples),
                    |(first, deeper)| async move {
                        let q = if deep { deeper } else { first };
                        ac.list_actions(q).await?;
                        Ok(())
                    },
                )
                .await?,
            );
        }
    }
    Ok(Value::Object(out))
}
