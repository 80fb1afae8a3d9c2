//! Every filter combination the RPC layer uses is served by an index, in
//! listing order where one column filters, on SQLite and PostgreSQL
//! (checked on their query plans).
//!
//! PostgreSQL's plans are taken with sequential scans and sorts priced out
//! (see `SqlStore::query_plan`), since on a small test table it would scan
//! whatever indexes exist; a plan that still scans or sorts has no index
//! that serves the page. `cargo xtask bench` times the same pages on a
//! million actions.
#![allow(clippy::print_stderr, reason = "a test reports the plans it checked")]
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use chrono::{Duration, TimeZone, Utc};
use store_actions::{ActionFilter, ActionQuery, ActionState, SqlStore};
use store_sessions::{NewSession, SessionType, Store as _};
use testkit::sql::SqlFixture;

async fn plans(fx: &SqlFixture) -> Vec<(String, Vec<String>)> {
    let db = fx.open_migrated().await;
    let sessions = store_sessions::SqlStore::new(db.clone());
    let s = sessions
        .new_session(NewSession::new(
            "s",
            SessionType::Autopilot,
            Utc::now() + Duration::days(1),
            "",
        ))
        .await
        .unwrap()
        .id;
    let store = SqlStore::new(db);
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let page = |f: ActionFilter| ActionQuery {
        filter: f,
        max: 100,
        ..ActionQuery::default()
    };
    let cases = [
        ("no filter", ActionFilter::default()),
        (
            "session",
            ActionFilter {
                session_id: Some(s),
                ..Default::default()
            },
        ),
        (
            "session and time range",
            ActionFilter {
                session_id: Some(s),
                start_time: Some(t),
                end_time: Some(t),
                ..Default::default()
            },
        ),
        (
            "session, actor and method",
            ActionFilter {
                session_id: Some(s),
                actor_name: Some("a".into()),
                rpc_method: Some("m".into()),
                ..Default::default()
            },
        ),
        (
            "actor",
            ActionFilter {
                actor_name: Some("a".into()),
                ..Default::default()
            },
        ),
        (
            "method",
            ActionFilter {
                rpc_method: Some("m".into()),
                ..Default::default()
            },
        ),
        (
            "group",
            ActionFilter {
                group_id: Some(s),
                ..Default::default()
            },
        ),
        (
            "feature",
            ActionFilter {
                feature_name: Some("f".into()),
                ..Default::default()
            },
        ),
        (
            "group and feature",
            ActionFilter {
                group_id: Some(s),
                feature_name: Some("f".into()),
                ..Default::default()
            },
        ),
        (
            "state",
            ActionFilter {
                state: Some(ActionState::Done),
                ..Default::default()
            },
        ),
        (
            "time range",
            ActionFilter {
                start_time: Some(t),
                end_time: Some(t),
                ..Default::default()
            },
        ),
    ];
    let mut out = Vec::new();
    for (name, f) in cases {
        for reversed in [false, true] {
            for deep in [false, true] {
                let q = ActionQuery {
                    reversed,
                    // Page 100: the seek path of a deep page.
                    offset: if deep { 9_900 } else { 0 },
                    ..page(f.clone())
                };
                out.push((
                    format!(
                        "{name}{}{}",
                        if reversed { " (reversed)" } else { "" },
                        if deep { " (deep)" } else { "" }
                    ),
                    store.query_plan(&q).await.unwrap(),
                ));
            }
        }
    }
    out
}

/// Whether `line` of a plan reads `actions` (alias `a`), and if so whether
/// through an index.
fn reads_actions(fx: &SqlFixture, line: &str) -> Option<bool> {
    match fx {
        SqlFixture::Sqlite(_) => {
            let mut words = line.split_whitespace();
            let op = words.next();
            (matches!(op, Some("SEARCH" | "SCAN")) && words.next() == Some("a"))
                .then(|| line.contains("INDEX"))
        }
        SqlFixture::Postgres(_) => line
            .contains(" on actions a")
            .then(|| line.contains("Index Scan") || line.contains("Index Only Scan")),
    }
}

/// Whether `line` of a plan sorts rows.
fn sorts(fx: &SqlFixture, line: &str) -> bool {
    match fx {
        SqlFixture::Sqlite(_) => line.contains("TEMP B-TREE"),
        SqlFixture::Postgres(_) => {
            let node = line.trim_start().trim_start_matches("->").trim_start();
            node.starts_with("Sort") || node.starts_with("Incremental Sort")
        }
    }
}

async fn every_rpc_filter_reads_actions_through_an_index(fx: &SqlFixture) {
    for (name, plan) in plans(fx).await {
        let text = plan.join(" | ");
        eprintln!("{name}: {text}");
        let reads: Vec<bool> = plan.iter().filter_map(|l| reads_actions(fx, l)).collect();
        assert!(!reads.is_empty(), "{name}: actions not read: {text}");
        assert!(
            reads.iter().all(|by_index| *by_index),
            "{name}: actions not read through an index: {text}"
        );
    }
}

async fn single_column_filters_need_no_sort(fx: &SqlFixture) {
    for (name, plan) in plans(fx).await {
        if [
            "session",
            "feature",
            "actor",
            "method",
            "state",
            "no filter",
            "time range",
        ]
        .iter()
        .any(|n| {
            [
                n.to_string(),
                format!("{n} (reversed)"),
                format!("{n} (deep)"),
                format!("{n} (reversed) (deep)"),
            ]
            .contains(&name)
        }) {
            let text = plan.join(" | ");
            assert!(
                !plan.iter().any(|l| sorts(fx, l)),
                "{name}: sorts instead of reading in index order: {text}"
            );
        }
    }
}

testkit::backend_tests!(sqlite => testkit::sql::sqlite;
    every_rpc_filter_reads_actions_through_an_index,
    single_column_filters_need_no_sort,
);

testkit::backend_tests!(postgres => testkit::sql::postgres;
    every_rpc_filter_reads_actions_through_an_index,
    single_column_filters_need_no_sort,
);
