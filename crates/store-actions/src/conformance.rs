//! The actions store's conformance suite: one small async function per
//! behaviour, run against every backend over [`Stores`] (the actions store,
//! the sessions and accounts stores of the same database, and the clock the
//! actions store records with).
//!
//! Each function expects empty stores and writes to them freely. Not a
//! stable API. [`conformance_tests!`](crate::conformance_tests) generates
//! one test per function for a backend.
#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed expectation panics"
)]

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use store_sessions::{NewSession, SessionId, SessionState, SessionType};

use crate::{
    ActionFilter, ActionLocator, ActionQuery, ActionState, AddAction, Error, ManualClock, Store,
    StoreExt as _,
};

/// The stores one suite function works on.
pub struct Stores {
    /// The actions store under test, recording at `clock`'s time.
    pub actions: Box<dyn Store>,
    /// The sessions store of the same database.
    pub sessions: Box<dyn store_sessions::Store>,
    /// The accounts store of the same database.
    pub accounts: Box<dyn store_accounts::Store>,
    /// The actions store's clock.
    pub clock: Arc<ManualClock>,
}

/// The time the suite's clocks start at.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 6, 0, 0).unwrap()
}

/// Generates `#[tokio::test]`s for every conformance function, in a module
/// named after the backend. `$fixture` is an async function taking the test
/// name and returning `Option<F>` where `F` derefs to [`Stores`].
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident => $fixture:path) => {
        testkit::backend_tests!($backend => $fixture, suite = store_actions::conformance;
            every_field_reads_back,
            links_must_exist,
            adding_an_action_races_removing_its_account,
            state_changes_and_the_error_reason_rule,
            locators_grow_with_every_action,
            every_filter_alone,
            filters_combined,
            unknown_session_and_group_filters_fail,
            pagination_as_lit_lists,
            deep_pages_are_the_same_slices_as_shallow_ones,
            offset_and_reversed_count_rows_after_filtering,
            same_timestamps_keep_insertion_order,
            empty_rpc_params_and_strings_read_back_empty,
            group_and_group_feature_views_return_done_actions,
            text_with_nul_is_refused_naming_the_field,
            feature_names_longer_than_a_key_are_refused,
            actor_names_longer_than_a_key_are_refused,
            rpc_methods_longer_than_a_key_are_refused,
        );
    };
}

fn base(feature: &str) -> AddAction {
    AddAction {
        macaroon_root_key_id: None,
        session_id: None,
        account_id: None,
        actor_name: String::new(),
        feature_name: feature.into(),
        trigger: "test-trigger".into(),
        intent: "test-intent".into(),
        structured_json_data: r#"{"test":"data"}"#.into(),
        rpc_method: "Test.Method".into(),
        rpc_params_json: br#"{"test":"data"}"#.to_vec(),
    }
}

async fn session(st: &Stores) -> SessionId {
    let n = NewSession::new(
        "s",
        SessionType::MacaroonAdmin,
        Utc::now() + Duration::days(1),
        "",
    );
    st.sessions.new_session(n).await.unwrap().id
}

/// Adds `req` one second after the clock's current time.
async fn add(st: &Stores, req: AddAction) -> ActionLocator {
    st.clock.set(st.clock_now() + Duration::seconds(1));
    st.actions.add_action(req).await.unwrap()
}

impl Stores {
    fn clock_now(&self) -> DateTime<Utc> {
        crate::Clock::now(&*self.clock)
    }
}

fn locators(page: &crate::ActionPage) -> Vec<u64> {
    page.actions.iter().map(|a| a.locator.index()).collect()
}

async fn list(st: &Stores, q: ActionQuery) -> crate::ActionPage {
    st.actions.list_actions(&q).await.unwrap()
}

fn filter(f: ActionFilter) -> ActionQuery {
    ActionQuery {
        filter: f,
        ..ActionQuery::default()
    }
}

/// Every field of the request, the time, the Init state and the links read
/// back.
pub async fn every_field_reads_back(st: &Stores) {
    let s = session(st).await;
    let acct = st.accounts.new_account(1234, None, "").await.unwrap();
    let req = AddAction {
        macaroon_root_key_id: Some(s.macaroon_root_key()),
        session_id: Some(s),
        account_id: Some(acct.id),
        actor_name: "Autopilot".into(),
        ..base("auto-fees")
    };
    let loc = add(st, req.clone()).await;
    let got = st.actions.action(loc).await.unwrap();
    assert_eq!(got.request, req);
    assert_eq!(got.locator, loc);
    assert_eq!(got.attempted_at, st.clock_now());
    assert_eq!(
        (got.state, got.error_reason.as_str()),
        (ActionState::Init, "")
    );
    assert_eq!(list(st, ActionQuery::default()).await.actions, vec![got]);
    assert!(matches!(
        st.actions.action(ActionLocator::from_index(999)).await,
        Err(Error::NotFound { .. })
    ));
}

/// A linked session or account must exist.
pub async fn links_must_exist(st: &Stores) {
    let r = st
        .actions
        .add_action(AddAction {
            session_id: Some(SessionId([9; 4])),
            ..base("f")
        })
        .await;
    assert!(matches!(r, Err(Error::SessionNotFound { .. })), "{r:?}");
    let r = st
        .actions
        .add_action(AddAction {
            account_id: Some(store_accounts::AccountId([9; 8])),
            ..base("f")
        })
        .await;
    assert!(matches!(r, Err(Error::AccountNotFound { .. })), "{r:?}");
    assert!(list(st, ActionQuery::default()).await.actions.is_empty());
}

/// An action added while its account is removed at the same moment is
/// either added (before the removal) or refused as not found: never a
/// backend error (on PostgreSQL the check and the insert once raced the
/// delete into a foreign key violation).
pub async fn adding_an_action_races_removing_its_account(st: &Stores) {
    for i in 0..24 {
        let a = st
            .accounts
            .new_account(1, None, &format!("race-{i}"))
            .await
            .unwrap();
        let (added, removed) = tokio::join!(
            st.actions.add_action(AddAction {
                account_id: Some(a.id),
                ..base("f")
            }),
            st.accounts.remove_account(a.id),
        );
        removed.unwrap();
        assert!(
            matches!(added, Ok(_) | Err(Error::AccountNotFound { .. })),
            "{added:?}"
        );
    }
}

/// States change; an error reason goes only with the Error state.
pub async fn state_changes_and_the_error_reason_rule(st: &Stores) {
    let loc = add(st, base("f")).await;
    st.actions
        .set_action_state(loc, ActionState::Done, "")
        .await
        .unwrap();
    assert_eq!(
        st.actions.action(loc).await.unwrap().state,
        ActionState::Done
    );
    let r = st
        .actions
        .set_action_state(loc, ActionState::Done, "why")
        .await;
    assert!(
        matches!(
            r,
            Err(Error::InvalidInput {
                field: "error_reason",
                ..
            })
        ),
        "{r:?}"
    );
    st.actions
        .set_action_state(loc, ActionState::Error, "it failed")
        .await
        .unwrap();
    let a = st.actions.action(loc).await.unwrap();
    assert_eq!(
        (a.state, a.error_reason.as_str()),
        (ActionState::Error, "it failed")
    );
    let r = st
        .actions
        .set_action_state(ActionLocator::from_index(999), ActionState::Done, "")
        .await;
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
}

/// Each new action's locator is greater than the last.
pub async fn locators_grow_with_every_action(st: &Stores) {
    let mut last = 0;
    for _ in 0..5 {
        let loc = add(st, base("f")).await;
        assert!(loc.index() > last);
        last = loc.index();
    }
}

/// Each filter on its own.
pub async fn every_filter_alone(st: &Stores) {
    let (s1, s2) = (session(st).await, session(st).await);
    let t0 = st.clock_now();
    let a1 = add(
        st,
        AddAction {
            session_id: Some(s1),
            ..base("feat-a")
        },
    )
    .await;
    let a2 = add(
        st,
        AddAction {
            session_id: Some(s2),
            actor_name: "Autopilot".into(),
            ..base("feat-b")
        },
    )
    .await;
    let a3 = add(
        st,
        AddAction {
            rpc_method: "/lnrpc.Lightning/SendPayment".into(),
            ..base("feat-a")
        },
    )
    .await;
    st.actions
        .set_action_state(a2, ActionState::Done, "")
        .await
        .unwrap();
    let t2 = t0 + Duration::seconds(2);
    let ids = |v: &[ActionLocator]| v.iter().map(|l| l.index()).collect::<Vec<_>>();
    let cases: Vec<(ActionFilter, Vec<ActionLocator>)> = vec![
        (ActionFilter::default(), vec![a1, a2, a3]),
        (
            ActionFilter {
                session_id: Some(s1),
                ..Default::default()
            },
            vec![a1],
        ),
        (
            ActionFilter {
                group_id: Some(s2),
                ..Default::default()
            },
            vec![a2],
        ),
        (
            ActionFilter {
                feature_name: Some("feat-a".into()),
                ..Default::default()
            },
            vec![a1, a3],
        ),
        (
            ActionFilter {
                actor_name: Some("Autopilot".into()),
                ..Default::default()
            },
            vec![a2],
        ),
        (
            ActionFilter {
                rpc_method: Some("/lnrpc.Lightning/SendPayment".into()),
                ..Default::default()
            },
            vec![a3],
        ),
        (
            ActionFilter {
                state: Some(ActionState::Done),
                ..Default::default()
            },
            vec![a2],
        ),
        (
            ActionFilter {
                state: Some(ActionState::Init),
                ..Default::default()
            },
            vec![a1, a3],
        ),
        (
            ActionFilter {
                start_time: Some(t2),
                ..Default::default()
            },
            vec![a2, a3],
        ),
        (
            ActionFilter {
                end_time: Some(t2),
                ..Default::default()
            },
            vec![a1, a2],
        ),
        (
            ActionFilter {
                feature_name: Some(String::new()),
                ..Default::default()
            },
            vec![a1, a2, a3],
        ),
    ];
    for (f, want) in cases {
        let page = list(st, filter(f.clone())).await;
        assert_eq!(locators(&page), ids(&want), "{f:?}");
    }
}

/// Filters AND together.
pub async fn filters_combined(st: &Stores) {
    let s = session(st).await;
    let t0 = st.clock_now();
    let mut locs = Vec::new();
    for i in 0..6 {
        let feature = if i % 2 == 0 { "even" } else { "odd" };
        locs.push(
            add(
                st,
                AddAction {
                    session_id: (i < 4).then_some(s),
                    ..base(feature)
                },
            )
            .await,
        );
    }
    st.actions
        .set_action_state(locs[2], ActionState::Done, "")
        .await
        .unwrap();
    let f = ActionFilter {
        session_id: Some(s),
        feature_name: Some("even".into()),
        start_time: Some(t0 + Duration::seconds(2)),
        end_time: Some(t0 + Duration::seconds(6)),
        ..Default::default()
    };
    assert_eq!(
        locators(&list(st, filter(f.clone())).await),
        vec![locs[2].index()]
    );
    let f = ActionFilter {
        state: Some(ActionState::Init),
        ..f
    };
    assert!(list(st, filter(f)).await.actions.is_empty());
    let f = ActionFilter {
        group_id: Some(s),
        feature_name: Some("odd".into()),
        ..Default::default()
    };
    assert_eq!(
        locators(&list(st, filter(f)).await),
        vec![locs[1].index(), locs[3].index()]
    );
}

/// Filtering by a session or group that does not exist is an error.
pub async fn unknown_session_and_group_filters_fail(st: &Stores) {
    let r = st
        .actions
        .list_actions(&filter(ActionFilter {
            session_id: Some(SessionId([7; 4])),
            ..Default::default()
        }))
        .await;
    assert!(matches!(r, Err(Error::SessionNotFound { .. })), "{r:?}");
    let r = st
        .actions
        .list_actions(&filter(ActionFilter {
            group_id: Some(SessionId([7; 4])),
            ..Default::default()
        }))
        .await;
    assert!(matches!(r, Err(Error::UnknownGroup { .. })), "{r:?}");
}

/// Pages far into a listing (where SQL backends seek to the page's first
/// row instead of stepping over every row before it) are exactly the
/// slices of the whole listing, forwards and reversed, filtered or not,
/// with many actions sharing a time.
pub async fn deep_pages_are_the_same_slices_as_shallow_ones(st: &Stores) {
    let t0 = st.clock_now();
    for i in 0..1_300i64 {
        // Seven actions per second: ties are ordered by locator.
        st.clock.set(t0 + Duration::seconds(i / 7));
        let feature = if i % 3 == 0 { "g" } else { "f" };
        st.actions.add_action(base(feature)).await.unwrap();
    }
    for (filter, expect_n) in [
        (ActionFilter::default(), 1_300usize),
        (
            ActionFilter {
                feature_name: Some("f".into()),
                ..Default::default()
            },
            866,
        ),
    ] {
        for reversed in [false, true] {
            let all = list(
                st,
                ActionQuery {
                    filter: filter.clone(),
                    reversed,
                    ..Default::default()
                },
            )
            .await;
            let all = locators(&all);
            assert_eq!(all.len(), expect_n);
            for offset in [0u64, 700, 999, 1_000, 1_001, 1_234, 1_299, 1_300, 5_000] {
                for max in [0u64, 1, 100] {
                    let page = list(
                        st,
                        ActionQuery {
                            filter: filter.clone(),
                            reversed,
                            offset,
                            max,
                            count_all: true,
                        },
                    )
                    .await;
                    let from = (offset as usize).min(all.len());
                    let to = if max == 0 {
                        all.len()
                    } else {
                        (from + max as usize).min(all.len())
                    };
                    assert_eq!(
                        locators(&page),
                        all[from..to].to_vec(),
                        "offset {offset}, max {max}, reversed {reversed}, {filter:?}"
                    );
                    assert_eq!(page.total_count, all.len() as u64);
                    assert_eq!(page.last_index, all[from..to].last().copied().unwrap_or(0));
                }
            }
        }
    }
}

/// The pagination cases of LiT's `TestListActions`.
pub async fn pagination_as_lit_lists(st: &Stores) {
    let mut locs = Vec::new();
    for _ in 0..5 {
        locs.push(add(st, base("f")).await.index());
    }
    let page = list(st, ActionQuery::default()).await;
    assert_eq!(
        (locators(&page), page.last_index, page.total_count),
        (locs.clone(), locs[4], 0)
    );
    let page = list(
        st,
        ActionQuery {
            reversed: true,
            ..Default::default()
        },
    )
    .await;
    let rev: Vec<u64> = locs.iter().rev().copied().collect();
    assert_eq!((locators(&page), page.last_index), (rev, locs[0]));
    let page = list(
        st,
        ActionQuery {
            count_all: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(page.total_count, 5);
    for _ in 0..5 {
        locs.push(add(st, base("f")).await.index());
    }
    let page = list(
        st,
        ActionQuery {
            max: 3,
            count_all: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (locators(&page), page.last_index, page.total_count),
        (locs[0..3].to_vec(), locs[2], 10)
    );
    let page = list(
        st,
        ActionQuery {
            max: 3,
            offset: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (locators(&page), page.last_index),
        (locs[3..6].to_vec(), locs[5])
    );
    let page = list(
        st,
        ActionQuery {
            max: 3,
            offset: 30,
            ..Default::default()
        },
    )
    .await;
    assert_eq!((locators(&page), page.last_index), (vec![], 0));
}

/// The offset skips matches, not stored rows; reversed pages walk back.
pub async fn offset_and_reversed_count_rows_after_filtering(st: &Stores) {
    let mut evens = Vec::new();
    for i in 0..10 {
        let loc = add(st, base(if i % 2 == 0 { "even" } else { "odd" })).await;
        if i % 2 == 0 {
            evens.push(loc.index());
        }
    }
    let f = ActionFilter {
        feature_name: Some("even".into()),
        ..Default::default()
    };
    let page = list(
        st,
        ActionQuery {
            filter: f.clone(),
            offset: 1,
            max: 2,
            count_all: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (locators(&page), page.total_count),
        (evens[1..3].to_vec(), 5)
    );
    let page = list(
        st,
        ActionQuery {
            filter: f,
            offset: 1,
            max: 2,
            reversed: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(locators(&page), vec![evens[3], evens[2]]);
    let page = list(
        st,
        ActionQuery {
            offset: 8,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(page.actions.len(), 2, "an offset without a limit");
}

/// Three actions at the same time list in insertion order, both ways.
pub async fn same_timestamps_keep_insertion_order(st: &Stores) {
    st.clock.set(start_time() + Duration::hours(1));
    let mut locs = Vec::new();
    for i in 1..=3 {
        locs.push(
            st.actions
                .add_action(base(&format!("same-time-{i}")))
                .await
                .unwrap()
                .index(),
        );
    }
    // An earlier action added afterwards lists first.
    st.clock.set(start_time());
    let early = st
        .actions
        .add_action(base("earlier"))
        .await
        .unwrap()
        .index();
    let page = list(st, ActionQuery::default()).await;
    assert_eq!(locators(&page), vec![early, locs[0], locs[1], locs[2]]);
    let page = list(
        st,
        ActionQuery {
            reversed: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(locators(&page), vec![locs[2], locs[1], locs[0], early]);
}

/// Empty strings and empty RPC params read back empty.
pub async fn empty_rpc_params_and_strings_read_back_empty(st: &Stores) {
    let req = AddAction {
        trigger: String::new(),
        intent: String::new(),
        structured_json_data: String::new(),
        rpc_params_json: vec![],
        ..base("")
    };
    let loc = add(st, req.clone()).await;
    assert_eq!(st.actions.action(loc).await.unwrap().request, req);
}

/// The history views return the Done actions of a group's sessions (and of
/// one feature), oldest first.
pub async fn group_and_group_feature_views_return_done_actions(st: &Stores) {
    let first = session(st).await;
    st.sessions
        .shift_state(first, SessionState::Created)
        .await
        .unwrap();
    st.sessions
        .shift_state(first, SessionState::Revoked)
        .await
        .unwrap();
    let mut n = NewSession::new(
        "linked",
        SessionType::Autopilot,
        Utc::now() + Duration::days(1),
        "",
    );
    n.linked_group = Some(first);
    let second = st.sessions.new_session(n).await.unwrap().id;
    let other = session(st).await;
    let a1 = add(
        st,
        AddAction {
            session_id: Some(first),
            rpc_method: "m1".into(),
            ..base("fa")
        },
    )
    .await;
    let a2 = add(
        st,
        AddAction {
            session_id: Some(second),
            rpc_method: "m2".into(),
            ..base("fb")
        },
    )
    .await;
    let a3 = add(
        st,
        AddAction {
            session_id: Some(second),
            rpc_method: "m3".into(),
            ..base("fa")
        },
    )
    .await;
    let a4 = add(
        st,
        AddAction {
            session_id: Some(other),
            rpc_method: "m4".into(),
            ..base("fa")
        },
    )
    .await;
    for loc in [a1, a2, a4] {
        st.actions
            .set_action_state(loc, ActionState::Done, "")
            .await
            .unwrap();
    }
    let _ = a3; // stays Init: not in the views
    let methods = |v: Vec<crate::RuleAction>| v.into_iter().map(|a| a.method).collect::<Vec<_>>();
    assert_eq!(
        methods(st.actions.group_actions(first).await.unwrap()),
        vec!["m1", "m2"]
    );
    assert_eq!(
        methods(st.actions.group_feature_actions(first, "fa").await.unwrap()),
        vec!["m1"]
    );
    let view = st.actions.group_actions(first).await.unwrap();
    assert!(view[0].performed_at < view[1].performed_at);
    assert!(matches!(
        st.actions.group_actions(SessionId([7; 4])).await,
        Err(Error::UnknownGroup { .. })
    ));
}

fn is_invalid<T: std::fmt::Debug>(r: crate::Result<T>, want: &str) {
    match r {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, want),
        other => panic!("expected InvalidInput on {want}, got {other:?}"),
    }
}

/// The NUL character is refused in every text field of an action and of a
/// filter, naming the field.
pub async fn text_with_nul_is_refused_naming_the_field(st: &Stores) {
    let a = &*st.actions;
    type Spoil = fn(&mut AddAction);
    let cases: [(&str, Spoil); 6] = [
        ("actor_name", |r| r.actor_name = "a\0".into()),
        ("feature_name", |r| r.feature_name = "f\0".into()),
        ("trigger", |r| r.trigger = "t\0".into()),
        ("intent", |r| r.intent = "i\0".into()),
        ("structured_json_data", |r| {
            r.structured_json_data = "{\0}".into()
        }),
        ("rpc_method", |r| r.rpc_method = "/m\0".into()),
    ];
    for (field, spoil) in cases {
        let mut r = base("f");
        spoil(&mut r);
        is_invalid(a.add_action(r).await, field);
    }
    let q = ActionQuery {
        filter: crate::ActionFilter {
            rpc_method: Some("/m\0".into()),
            ..Default::default()
        },
        ..ActionQuery::default()
    };
    is_invalid(a.list_actions(&q).await, "rpc_method");
    assert!(
        a.list_actions(&ActionQuery::default())
            .await
            .unwrap()
            .actions
            .is_empty()
    );
}

/// A feature name sits in an index: a key.
pub async fn feature_names_longer_than_a_key_are_refused(st: &Stores) {
    let max = store_contract::MAX_KEY_BYTES;
    st.actions.add_action(base(&"f".repeat(max))).await.unwrap();
    is_invalid(
        st.actions.add_action(base(&"f".repeat(max + 1))).await,
        "feature_name",
    );
}

/// Every indexed field of an action at the key bound and one byte past it,
/// counted in bytes (a two-byte character at the bound too): what one
/// backend's index holds, every backend accepts, and past it every backend
/// refuses, naming the field.
async fn indexed_field_bound(st: &Stores, field: &str, set: fn(&mut AddAction, String)) {
    let max = store_contract::MAX_KEY_BYTES;
    for (fits, past) in [
        ("a".repeat(max), "a".repeat(max + 1)),
        ("é".repeat(max / 2), format!("{}a", "é".repeat(max / 2))),
    ] {
        let mut ok = base("feature");
        set(&mut ok, fits.clone());
        let id = st.actions.add_action(ok).await.unwrap();
        let stored = st
            .actions
            .list_actions(&ActionQuery::default())
            .await
            .unwrap()
            .actions
            .into_iter()
            .find(|a| a.locator == id)
            .expect("the action at the bound is stored");
        let got = if field == "actor_name" {
            stored.request.actor_name
        } else {
            stored.request.rpc_method
        };
        assert_eq!(got, fits, "{field} at the bound reads back whole");
        let mut bad = base("feature");
        set(&mut bad, past);
        is_invalid(st.actions.add_action(bad).await, field);
    }
}

/// The actor name sits in an index (schema step 9): a key.
pub async fn actor_names_longer_than_a_key_are_refused(st: &Stores) {
    indexed_field_bound(st, "actor_name", |a, v| a.actor_name = v).await;
}

/// The RPC method sits in an index (schema step 9): a key.
pub async fn rpc_methods_longer_than_a_key_are_refused(st: &Stores) {
    indexed_field_bound(st, "rpc_method", |a, v| a.rpc_method = v).await;
}
