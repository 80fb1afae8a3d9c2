//! Every filter combination the RPC layer uses is served by an index, in
//! listing order, on SQLite (checked on its query plans).
//!
//! PostgreSQL chooses plans from table statistics, so a plan on a small test
//! table says little about a node's; there the same composite indexes exist
//! (schema step 7), and `cargo xtask bench` measures a filtered page of 100
//! out of a million actions on both engines.

use chrono::{Duration, TimeZone, Utc};
use store_actions::{ActionFilter, ActionQuery, ActionState, SqlStore};
use store_sessions::{NewSession, SessionType, Store as _};
use testkit::sql::SqlFixture;

async fn plans() -> Vec<(String, Vec<String>)> {
    let fx = SqlFixture::sqlite();
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
            let q = ActionQuery {
                reversed,
                ..page(f.clone())
            };
            out.push((
                format!("{name}{}", if reversed { " (reversed)" } else { "" }),
                store.query_plan(&q).await.unwrap(),
            ));
        }
    }
    out
}

mod sqlite {
    #[tokio::test]
    async fn every_rpc_filter_reads_actions_through_an_index() {
        for (name, plan) in super::plans().await {
            let text = plan.join(" | ");
            eprintln!("{name}: {text}");
            let scans_actions = plan
                .iter()
                .any(|l| l.starts_with("SCAN a") && !l.contains("INDEX"));
            assert!(!scans_actions, "{name}: a full scan of actions: {text}");
            let reads_actions_by_index = plan.iter().any(|l| {
                (l.starts_with("SEARCH a") || l.starts_with("SCAN a")) && l.contains("INDEX")
            });
            assert!(
                reads_actions_by_index,
                "{name}: actions not read through an index: {text}"
            );
        }
    }

    #[tokio::test]
    async fn single_column_filters_need_no_sort() {
        for (name, plan) in super::plans().await {
            if ["session", "feature", "state", "no filter", "time range"]
                .iter()
                .any(|n| name == *n || name == format!("{n} (reversed)"))
            {
                let text = plan.join(" | ");
                assert!(
                    !text.contains("TEMP B-TREE"),
                    "{name}: sorts instead of reading in index order: {text}"
                );
            }
        }
    }
}
