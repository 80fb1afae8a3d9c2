//! The actions migration on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use chrono::Duration;
use common::actions::{request, run_case, t0};
use common::proof::{refused, with_trigger};
use common::{Kv, Lcg};
use proptest::prelude::*;
use store_actions::{ActionState, AddAction, Store as _};
use store_sessions::Store as _;
use testkit::sql::{SqlFixture, postgres, sqlite};

async fn empty(fx: &SqlFixture) {
    assert_eq!(
        run_case(fx, |_| async {}).await,
        migrator::ActionsReport::default()
    );
}

async fn unlinked_actions(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let loc = f
            .add(
                AddAction {
                    macaroon_root_key_id: Some(0x1122_3344_5566_7788),
                    ..request("f")
                },
                false,
            )
            .await;
        f.actions
            .set_action_state(loc, ActionState::Error, "boom")
            .await
            .unwrap();
        f.add(request("g"), false).await;
    })
    .await;
}

async fn session_linked(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let s = f.session().await;
        let loc = f
            .add(
                AddAction {
                    session_id: Some(s),
                    macaroon_root_key_id: Some(s.macaroon_root_key()),
                    ..request("f")
                },
                false,
            )
            .await;
        f.actions
            .set_action_state(loc, ActionState::Done, "")
            .await
            .unwrap();
    })
    .await;
}

async fn account_linked(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let a = store_accounts::Store::new_account(&f.accounts, 1234, None, "")
            .await
            .unwrap();
        f.add(
            AddAction {
                account_id: Some(a.id),
                ..request("f")
            },
            false,
        )
        .await;
    })
    .await;
}

async fn session_and_account(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let a = store_accounts::Store::new_account(&f.accounts, 1234, None, "")
            .await
            .unwrap();
        let mut n = store_sessions::NewSession::new(
            "s",
            store_sessions::SessionType::MacaroonAccount,
            chrono::Utc::now() + Duration::hours(1),
            "",
        );
        n.account = Some(a.id);
        let s = f.sessions.new_session(n).await.unwrap().id;
        f.add(
            AddAction {
                session_id: Some(s),
                account_id: Some(a.id),
                ..request("f")
            },
            false,
        )
        .await;
    })
    .await;
}

/// The session and the account are deleted after the actions: the actions
/// are kept, their links dropped and counted.
async fn links_to_deleted_sessions_and_accounts(fx: &SqlFixture) {
    let r = run_case(fx, |f| async move {
        let keep = f.session().await;
        f.sessions
            .shift_state(keep, store_sessions::SessionState::Created)
            .await
            .unwrap();
        let gone = f.session().await;
        let a = store_accounts::Store::new_account(&f.accounts, 1, None, "")
            .await
            .unwrap();
        f.add(
            AddAction {
                session_id: Some(gone),
                ..request("f")
            },
            false,
        )
        .await;
        f.add(
            AddAction {
                session_id: Some(keep),
                account_id: Some(a.id),
                ..request("f")
            },
            false,
        )
        .await;
        f.add(
            AddAction {
                account_id: Some(a.id),
                ..request("f")
            },
            false,
        )
        .await;
        f.sessions.delete_reserved_sessions().await.unwrap();
        store_accounts::Store::remove_account(&f.accounts, a.id)
            .await
            .unwrap();
    })
    .await;
    assert_eq!((r.session_links_dropped, r.account_links_dropped), (1, 2));
}

/// Three actions with one timestamp keep their insertion order.
async fn same_timestamps(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        for i in 1..=3 {
            f.add(request(&format!("same-time-{i}")), true).await;
        }
    })
    .await;
}

async fn empty_rpc_params(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        f.add(
            AddAction {
                rpc_params_json: vec![],
                ..request("f")
            },
            false,
        )
        .await;
    })
    .await;
}

/// Times written out of order still list by time, then locator, and keep
/// their locators.
async fn out_of_order_times(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut rng = Lcg(9);
        for i in 0..40 {
            f.clock
                .set(t0() + Duration::seconds(rng.range(0, 20) as i64));
            f.add(request(&format!("a{i}")), true).await;
        }
    })
    .await;
}

/// Twenty actions in the key-value database, their locators' indexes
/// returned, the third session's actions first in storage order.
async fn twenty_actions(kv: &Kv) -> Vec<u64> {
    let db = tombstone::KvDb::open(&kv.path, &tombstone::KvOptions::default()).unwrap();
    let actions = store_actions::KvStore::open(&db).unwrap();
    let sessions = store_sessions::KvStore::open(&db).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let n = store_sessions::NewSession::new(
            "s",
            store_sessions::SessionType::MacaroonAdmin,
            chrono::Utc::now() + Duration::days(1),
            "foo.bar.baz:1234",
        );
        ids.push(sessions.new_session(n).await.unwrap().id);
    }
    let mut locators = Vec::new();
    for i in 0..20 {
        let req = AddAction {
            session_id: Some(ids[i % 3]),
            ..request(&format!("f{i}"))
        };
        locators.push(actions.add_action(req).await.unwrap().index());
    }
    locators
}

/// An action the database stores other than it was written (here a trigger
/// rewrites its intent) is refused, and the refusal names it and the field,
/// however the copy proves the table (docs/design.md §5.7).
async fn an_action_stored_altered_is_refused_and_named(fx: &SqlFixture) {
    let kv = Kv::new();
    let locators = twenty_actions(&kv).await;
    let id = locators[10];
    let db = with_trigger(
        fx,
        format!(
            "CREATE TRIGGER alter_one AFTER INSERT ON actions WHEN NEW.id = {id} \
             BEGIN UPDATE actions SET intent = 'altered' WHERE id = NEW.id; END;"
        ),
        format!(
            "CREATE FUNCTION alter_one() RETURNS trigger AS $$ BEGIN \
             NEW.intent := 'altered'; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER alter_one BEFORE INSERT ON actions FOR EACH ROW \
             WHEN (NEW.id = {id}) EXECUTE FUNCTION alter_one();"
        ),
    )
    .await;
    let err = refused(&kv, &db, 6).await;
    assert!(
        err.contains(&format!("action {id}")),
        "names the action: {err}"
    );
    assert!(err.contains("altered"), "shows the field: {err}");
}

/// A row the copy did not write (a trigger adds one) is refused: the
/// table must hold exactly what was written.
async fn a_row_the_copy_did_not_write_is_refused(fx: &SqlFixture) {
    let kv = Kv::new();
    let locators = twenty_actions(&kv).await;
    let id = locators[4];
    let copy = "INSERT INTO actions (id, actor_name, feature_name, action_trigger, intent, \
                structured_json_data, rpc_method, rpc_params_json, created_at, action_state, \
                error_reason) SELECT 1000000, actor_name, feature_name, action_trigger, intent, \
                structured_json_data, rpc_method, rpc_params_json, created_at, action_state, \
                error_reason FROM actions WHERE id = ";
    let db = with_trigger(
        fx,
        format!(
            "CREATE TRIGGER add_one AFTER INSERT ON actions WHEN NEW.id = {id} \
             BEGIN {copy}NEW.id; END;"
        ),
        format!(
            "CREATE FUNCTION add_one() RETURNS trigger AS $$ BEGIN \
             {copy}NEW.id; RETURN NULL; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER add_one AFTER INSERT ON actions FOR EACH ROW \
             WHEN (NEW.id = {id}) EXECUTE FUNCTION add_one();"
        ),
    )
    .await;
    let err = refused(&kv, &db, 6).await;
    assert!(err.contains("20 written, 21 read back"), "{err}");
}

/// An action the database does not keep (a trigger deletes it) is
/// refused, and the refusal names the chunk it was written in.
async fn an_action_not_kept_is_refused(fx: &SqlFixture) {
    let kv = Kv::new();
    let locators = twenty_actions(&kv).await;
    let id = locators[15];
    let db = with_trigger(
        fx,
        format!(
            "CREATE TRIGGER drop_one AFTER INSERT ON actions WHEN NEW.id = {id} \
             BEGIN DELETE FROM actions WHERE id = NEW.id; END;"
        ),
        format!(
            "CREATE FUNCTION drop_one() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ \
             LANGUAGE plpgsql; \
             CREATE TRIGGER drop_one BEFORE INSERT ON actions FOR EACH ROW \
             WHEN (NEW.id = {id}) EXECUTE FUNCTION drop_one();"
        ),
    )
    .await;
    let err = refused(&kv, &db, 6).await;
    // "migrated actions FIRST..=LAST …: N written, N-1 read back"
    let range = err
        .split_whitespace()
        .find_map(|w| w.split_once("..="))
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
    assert!(
        range.is_some_and(|(a, b)| (a..=b).contains(&id)) && err.contains("read back"),
        "names the chunk of action {id}: {err}"
    );
}

/// An action stored so that it no longer decodes (a trigger sets a state
/// no action has) is refused, naming it.
async fn an_action_stored_undecodable_is_refused_and_named(fx: &SqlFixture) {
    let kv = Kv::new();
    let locators = twenty_actions(&kv).await;
    let id = locators[7];
    let db = with_trigger(
        fx,
        format!(
            "CREATE TRIGGER break_one AFTER INSERT ON actions WHEN NEW.id = {id} \
             BEGIN UPDATE actions SET action_state = 99 WHERE id = NEW.id; END;"
        ),
        format!(
            "CREATE FUNCTION break_one() RETURNS trigger AS $$ BEGIN \
             NEW.action_state := 99; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER break_one BEFORE INSERT ON actions FOR EACH ROW \
             WHEN (NEW.id = {id}) EXECUTE FUNCTION break_one();"
        ),
    )
    .await;
    let err = refused(&kv, &db, 6).await;
    assert!(
        err.contains(&format!("action {id}")),
        "names the action: {err}"
    );
    assert!(err.contains("99"), "says why: {err}");
}

/// Where damage was found, a record whose linked record is missing may be
/// missing it because of the damage: the session and the action linking to
/// a removed account are left out and listed as damage under
/// `--accept-damaged` rather than migrated with their links dropped, which
/// would alter them; an action with no link migrates as it was. (Without
/// damage the links are dropped: `links_to_deleted_sessions_and_accounts`.)
async fn links_that_damage_may_have_taken_are_damage(fx: &SqlFixture) {
    let kv = Kv::new();
    {
        let db = tombstone::KvDb::open(&kv.path, &tombstone::KvOptions::default()).unwrap();
        let accounts = store_accounts::KvStore::open(&db).unwrap();
        let sessions = store_sessions::KvStore::open(&db).unwrap();
        let actions = store_actions::KvStore::open(&db).unwrap();
        let a = store_accounts::Store::new_account(&accounts, 1, None, "")
            .await
            .unwrap();
        let mut n = store_sessions::NewSession::new(
            "s",
            store_sessions::SessionType::MacaroonAccount,
            chrono::Utc::now() + Duration::hours(1),
            "",
        );
        n.account = Some(a.id);
        let s = sessions.new_session(n).await.unwrap().id;
        for (session_id, account_id) in [(Some(s), None), (None, Some(a.id)), (None, None)] {
            actions
                .add_action(AddAction {
                    session_id,
                    account_id,
                    ..request("f")
                })
                .await
                .unwrap();
        }
        store_accounts::Store::remove_account(&accounts, a.id)
            .await
            .unwrap();
        // The damage: a record of the accounts tree no codec reads.
        db.tree(store_accounts::kv::TREE)
            .unwrap()
            .insert(b"damaged".as_slice(), vec![0xEE; 5])
            .unwrap();
        db.flush().unwrap();
    }
    let db = fx.open().await;
    let opts = migrator::Options {
        accept_damaged: true,
        ..migrator::Options::default()
    };
    let outcome = migrator::migrate(&kv.path, &db, &opts, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &outcome.report;
    assert_eq!(
        (r.sessions.sessions, r.actions.actions),
        (0, 1),
        "{:?}",
        outcome.accepted_damage
    );
    let lost: Vec<_> = outcome
        .accepted_damage
        .iter()
        .filter(|p| p.what.contains("which is missing"))
        .collect();
    assert_eq!(lost.len(), 3, "{:?}", outcome.accepted_damage);
    assert_eq!(
        (
            r.actions.session_links_dropped,
            r.actions.account_links_dropped
        ),
        (0, 0)
    );
}

testkit::backend_tests!(sqlite => sqlite;
    empty, unlinked_actions, session_linked, account_linked, session_and_account,
    links_to_deleted_sessions_and_accounts, same_timestamps, empty_rpc_params, out_of_order_times,
    an_action_stored_altered_is_refused_and_named, a_row_the_copy_did_not_write_is_refused,
    an_action_not_kept_is_refused, an_action_stored_undecodable_is_refused_and_named,
    links_that_damage_may_have_taken_are_damage,
);

testkit::backend_tests!(postgres => postgres;
    empty, unlinked_actions, session_linked, account_linked, session_and_account,
    links_to_deleted_sessions_and_accounts, same_timestamps, empty_rpc_params, out_of_order_times,
    an_action_stored_altered_is_refused_and_named, a_row_the_copy_did_not_write_is_refused,
    an_action_not_kept_is_refused, an_action_stored_undecodable_is_refused_and_named,
    links_that_damage_may_have_taken_are_damage,
);

/// One random action: session and account (by index), state, whether it
/// shares the previous action's time, RPC params, feature.
type RandomAction = (Option<usize>, Option<usize>, u8, bool, Vec<u8>, u8);

/// A random action log over random sessions and accounts, some deleted.
#[derive(Debug, Clone)]
struct Log {
    sessions: usize,
    accounts: usize,
    actions: Vec<RandomAction>,
    delete_sessions: Vec<bool>,
    remove_accounts: Vec<bool>,
}

fn log() -> impl Strategy<Value = Log> {
    (1usize..4, 1usize..4).prop_flat_map(|(sessions, accounts)| {
        (
            Just(sessions),
            Just(accounts),
            proptest::collection::vec(
                (
                    proptest::option::of(0..sessions),
                    proptest::option::of(0..accounts),
                    0u8..4,
                    any::<bool>(),
                    proptest::collection::vec(any::<u8>(), 0..6),
                    0u8..4,
                ),
                0..30,
            ),
            proptest::collection::vec(any::<bool>(), sessions),
            proptest::collection::vec(any::<bool>(), accounts),
        )
            .prop_map(
                |(sessions, accounts, actions, delete_sessions, remove_accounts)| Log {
                    sessions,
                    accounts,
                    actions,
                    delete_sessions,
                    remove_accounts,
                },
            )
    })
}

async fn check(fx: SqlFixture, log: Log) {
    run_case(&fx, |f| async move {
        let mut sessions = Vec::new();
        for _ in 0..log.sessions {
            sessions.push(f.session().await);
        }
        let mut accounts = Vec::new();
        for _ in 0..log.accounts {
            accounts.push(
                store_accounts::Store::new_account(&f.accounts, 5, None, "")
                    .await
                    .unwrap()
                    .id,
            );
        }
        for (s, a, state, same_time, params, feature) in &log.actions {
            let req = AddAction {
                session_id: s.map(|i| sessions[i]),
                account_id: a.map(|i| accounts[i]),
                rpc_params_json: params.clone(),
                ..request(&format!("feature-{feature}"))
            };
            let loc = f.add(req, *same_time).await;
            let state = ActionState::ALL[usize::from(*state)];
            let reason = if state == ActionState::Error {
                "failed"
            } else {
                ""
            };
            f.actions
                .set_action_state(loc, state, reason)
                .await
                .unwrap();
        }
        for (i, s) in sessions.iter().enumerate() {
            if !log.delete_sessions[i] {
                f.sessions
                    .shift_state(*s, store_sessions::SessionState::Created)
                    .await
                    .unwrap();
            }
        }
        f.sessions.delete_reserved_sessions().await.unwrap();
        for (i, a) in accounts.iter().enumerate() {
            if log.remove_accounts[i] {
                store_accounts::Store::remove_account(&f.accounts, *a)
                    .await
                    .unwrap();
            }
        }
    })
    .await;
}

fn run_prop(backend: &'static str, cases: u32) {
    common::run_property(
        backend,
        "random_action_logs_read_back_equal",
        cases,
        log(),
        |fx, l| async move {
            check(fx, l).await;
            Ok(())
        },
    );
}

mod prop {
    mod sqlite {
        #[test]
        fn random_action_logs_read_back_equal() {
            super::super::run_prop("sqlite", 24);
        }
    }

    mod postgres {
        #[test]
        fn random_action_logs_read_back_equal() {
            super::super::run_prop("postgres", 16);
        }
    }
}
