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
use store_actions::{ActionFilter, ActionQuery, AddAction};
use store_firewall::{Mode, Namespace, Scope};
use store_sessions::{NewSession, SessionId, SessionState, SessionType};

use crate::BoxError;

/// Calls timed per operation.
pub(crate) const SAMPLES: usize = 200;

/// The operations, in the order the table shows them.
pub(crate) const OPS: [&str; 11] = [
    "get account",
    "upsert payment",
    "get session",
    "shift state",
    "kv-store get",
    "kv-store set",
    "privacy lookup",
    "add action",
    "list actions by session (100)",
    "list actions by feature (100)",
    "list actions, no filter (100)",
];

/// The ids the operations use.
pub(crate) struct Samples {
    accounts: Vec<AccountId>,
    sessions: Vec<SessionId>,
    /// (namespace, scope, key) of existing kv-store entries.
    entries: Vec<(Namespace, Scope, String)>,
    /// (group, real value) of existing privacy pairs.
    pairs: Vec<(SessionId, String)>,
    features: Vec<String>,
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
    let session_ids: Vec<SessionId> = sessions.iter().map(|s| s.id).collect();
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
        .map(|p| (p.group, p.real))
        .collect();
    let features = ["AutoFees", "Rebalancer", "OkxChannelOpen", "Loop", "Pool"]
        .map(String::from)
        .to_vec();
    Ok(Samples {
        accounts: spread(&accounts, SAMPLES),
        sessions: spread(&session_ids, SAMPLES),
        entries: spread(&entries, SAMPLES),
        pairs: spread(&pairs, SAMPLES),
        features,
    })
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
/// It writes (payments, sessions, kv-store values, actions): run it on a copy.
pub(crate) async fn measure(stores: &Stores, s: &Samples) -> Result<Value, BoxError> {
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
        "privacy lookup".into(),
        time(&s.pairs, |(group, real)| async move {
            let mut tx = fw.begin_privacy(*group, Mode::View).await?;
            tx.real_to_pseudo(real).await?;
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
    out.insert(
        "list actions by session (100)".into(),
        time(&s.sessions, |id| async move {
            let query = ActionQuery {
                filter: ActionFilter {
                    session_id: Some(*id),
                    ..ActionFilter::default()
                },
                max: 100,
                ..ActionQuery::default()
            };
            ac.list_actions(&query).await?;
            Ok(())
        })
        .await?,
    );
    out.insert(
        "list actions by feature (100)".into(),
        time(
            (0..SAMPLES).map(|i| (i, &s.features[i % s.features.len()])),
            |(i, feature)| async move {
                // Pages spread through the listing, as a client paging would ask.
                let query = ActionQuery {
                    filter: ActionFilter {
                        feature_name: Some(feature.clone()),
                        ..ActionFilter::default()
                    },
                    offset: (i as u64 % 5) * 100,
                    max: 100,
                    ..ActionQuery::default()
                };
                let page = ac.list_actions(&query).await?;
                if page.actions.is_empty() {
                    return Err("a feature page came back empty".into());
                }
                Ok(())
            },
        )
        .await?,
    );
    out.insert(
        "list actions, no filter (100)".into(),
        time(0..SAMPLES, |i| async move {
            let query = ActionQuery {
                offset: (i as u64 % 5) * 100,
                max: 100,
                ..ActionQuery::default()
            };
            ac.list_actions(&query).await?;
            Ok(())
        })
        .await?,
    );
    Ok(Value::Object(out))
}
