//! The sessions migration on SQLite and PostgreSQL: LiT's named cases for
//! it (docs/design.md §5.4, sessions).
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use common::proof::{refused, with_trigger};
use common::sessions::{clone_with_id, random_session, run_case};
use common::{Kv, Lcg};
use store_accounts::AccountId;
use store_sessions::{
    Caveat, MacaroonRecipe, NewSession, Permission, PrivacyFlag, PrivacyFlags, SessionState,
    SessionType, Store,
};
use testkit::sql::{SqlFixture, postgres, sqlite};
use tombstone::{KvDb, KvOptions};

fn plain(label: &str) -> NewSession {
    NewSession::new(
        label,
        SessionType::MacaroonAdmin,
        Utc.timestamp_opt(1000, 0).unwrap(),
        "",
    )
}

fn perms() -> Vec<Permission> {
    [("loop", "read"), ("lnd", "write"), ("pool", "read")]
        .map(|(e, a)| Permission {
            entity: e.into(),
            action: a.into(),
        })
        .to_vec()
}

fn caveats() -> Vec<Caveat> {
    vec![
        Caveat {
            id: b"caveat id here".to_vec(),
            verification_id: Some(b"HS7uD_w_dedwv4Jjw7UoXbRqIKhr".to_vec()),
            location: "anywhere".into(),
        },
        Caveat {
            id: b"caveat id2 here".to_vec(),
            verification_id: Some(b"HS7uD_w_dedwvJjw75rXbRqIKhr".to_vec()),
            location: "the world".into(),
        },
        Caveat {
            id: b"caveat id3 here".to_vec(),
            verification_id: None,
            location: String::new(),
        },
    ]
}

async fn with_options(fx: &SqlFixture, f: impl FnOnce(&mut NewSession)) {
    let mut n = plain("test");
    f(&mut n);
    run_case(fx, |s, _| async move {
        s.new_session(n).await.unwrap();
    })
    .await;
}

async fn empty(fx: &SqlFixture) {
    let r = run_case(fx, |_, _| async {}).await;
    assert_eq!(r, migrator::SessionsReport::default());
}

async fn one_session_no_options(fx: &SqlFixture) {
    with_options(fx, |_| {}).await;
}

async fn multiple_sessions_no_options(fx: &SqlFixture) {
    run_case(fx, |s, _| async move {
        for i in 1..=3 {
            s.new_session(plain(&format!("session{i}"))).await.unwrap();
        }
    })
    .await;
}

async fn one_privacy_flag(fx: &SqlFixture) {
    with_options(fx, |n| {
        n.privacy = Some(PrivacyFlags::of([PrivacyFlag::ClearPubkeys]))
    })
    .await;
}

async fn multiple_privacy_flags(fx: &SqlFixture) {
    with_options(fx, |n| {
        n.privacy = Some(PrivacyFlags::of([
            PrivacyFlag::ClearChanInitiator,
            PrivacyFlag::ClearHtlcs,
            PrivacyFlag::ClearClosingTxIds,
        ]))
    })
    .await;
}

async fn feature_config(fx: &SqlFixture) {
    with_options(fx, |n| {
        n.feature_config = Some(BTreeMap::from([
            ("AutoFees".to_owned(), vec![1, 2, 3, 4]),
            ("AutoSomething".to_owned(), vec![4, 3, 4, 5, 6, 6]),
        ]))
    })
    .await;
}

/// `{"AutoFees": []byte{}}` and `{"AutoFees": nil}` are the same here: an
/// empty value.
async fn feature_config_with_empty_value(fx: &SqlFixture) {
    with_options(fx, |n| {
        n.feature_config = Some(BTreeMap::from([("AutoFees".to_owned(), vec![])]))
    })
    .await;
}

async fn dev_server(fx: &SqlFixture) {
    with_options(fx, |n| n.dev_server = true).await;
}

async fn macaroon_recipe(fx: &SqlFixture) {
    with_options(fx, |n| {
        n.server_addr = "foo.bar.baz:1234".into();
        n.macaroon_recipe = Some(MacaroonRecipe {
            permissions: perms(),
            caveats: caveats(),
        });
    })
    .await;
}

async fn macaroon_recipe_nil_caveats(fx: &SqlFixture) {
    with_options(fx, |n| {
        n.macaroon_recipe = Some(MacaroonRecipe {
            permissions: perms(),
            caveats: vec![],
        })
    })
    .await;
}

async fn empty_caveat_verification_id(fx: &SqlFixture) {
    with_options(fx, |n| {
        n.macaroon_recipe = Some(MacaroonRecipe {
            permissions: perms(),
            caveats: vec![Caveat {
                id: b"id".to_vec(),
                verification_id: Some(vec![]),
                location: String::new(),
            }],
        })
    })
    .await;
}

async fn macaroon_recipe_nil_perms(fx: &SqlFixture) {
    with_options(fx, |n| {
        n.macaroon_recipe = Some(MacaroonRecipe {
            permissions: vec![],
            caveats: caveats(),
        })
    })
    .await;
}

/// A legacy record holding a recipe with neither permissions nor caveats
/// (the store no longer writes one) migrates as no recipe.
async fn macaroon_recipe_nil_perms_and_caveats(fx: &SqlFixture) {
    run_case(fx, |s, _| async move {
        let mut session = s.new_session(plain("legacy")).await.unwrap();
        session.macaroon_recipe = Some(MacaroonRecipe::default());
        s.import_sessions(vec![session]).await.unwrap();
    })
    .await;
}

fn account_caveat(id: AccountId) -> Caveat {
    Caveat {
        id: format!("lnd-custom account {id}").into_bytes(),
        verification_id: None,
        location: String::new(),
    }
}

async fn linked_account(fx: &SqlFixture) {
    run_case(fx, |s, a| async move {
        let acct =
            store_accounts::Store::new_account(&a, 1234, Some(Utc::now() + Duration::hours(1)), "")
                .await
                .unwrap();
        let mut n = plain("test");
        n.session_type = SessionType::MacaroonAccount;
        n.macaroon_recipe = Some(MacaroonRecipe {
            permissions: vec![],
            caveats: vec![account_caveat(acct.id)],
        });
        n.account = Some(acct.id);
        s.new_session(n).await.unwrap();
    })
    .await;
}

/// The account was removed after linking: the session migrates without it.
async fn deleted_linked_account(fx: &SqlFixture) {
    let r = run_case(fx, |s, a| async move {
        let acct = store_accounts::Store::new_account(&a, 1234, None, "")
            .await
            .unwrap();
        let mut n = plain("test");
        n.session_type = SessionType::MacaroonAccount;
        n.macaroon_recipe = Some(MacaroonRecipe {
            permissions: vec![],
            caveats: vec![account_caveat(acct.id)],
        });
        n.account = Some(acct.id);
        s.new_session(n).await.unwrap();
        store_accounts::Store::remove_account(&a, acct.id)
            .await
            .unwrap();
    })
    .await;
    assert_eq!(r.account_links_dropped, 1);
}

async fn linked_session(fx: &SqlFixture) {
    run_case(fx, |s, _| async move {
        let init = s.new_session(plain("init")).await.unwrap();
        s.shift_state(init.id, SessionState::Created).await.unwrap();
        s.shift_state(init.id, SessionState::Revoked).await.unwrap();
        let mut n = plain("linked");
        n.linked_group = Some(init.id);
        s.new_session(n).await.unwrap();
    })
    .await;
}

/// Six sessions; 3 shares 2's id (newer), 5 and 6 share 4's id (newer
/// still): 1, 3 and 6 survive; 2-way and 3-way duplicates.
async fn multiple_sessions_with_the_same_id(fx: &SqlFixture) {
    let r = run_case(fx, |s, _| async move {
        let mut made = Vec::new();
        for i in 1..=6 {
            made.push(s.new_session(plain(&format!("session{i}"))).await.unwrap());
        }
        let (s2, s4) = (made[1].clone(), made[3].clone());
        for (victim, base, later, salt) in [(2, &s2, 1, 1), (4, &s4, 1, 2), (5, &s4, 2, 3)] {
            s.delete_reserved_session(made[victim].id).await.unwrap();
            s.import_sessions(vec![clone_with_id(
                &made[victim],
                base.id,
                Duration::minutes(later),
                salt,
            )])
            .await
            .unwrap();
        }
    })
    .await;
    assert_eq!((r.sessions, r.duplicates_dropped), (3, 3));
}

/// Every state, including the legacy InUse, migrates as it is.
async fn every_state(fx: &SqlFixture) {
    run_case(fx, |s, _| async move {
        for (i, state) in SessionState::ALL.into_iter().enumerate() {
            let mut session = s.new_session(plain(&format!("s{i}"))).await.unwrap();
            session.state = state;
            session.revoked_at = state.is_terminal().then(Utc::now);
            s.import_sessions(vec![session]).await.unwrap();
        }
    })
    .await;
}

/// 100 sessions of every type, state and option, a quarter with linked
/// successors, some linked to accounts of which half are then removed.
async fn randomized_sessions(fx: &SqlFixture) {
    run_case(fx, |s, a| async move {
        let mut rng = Lcg(42);
        let start =
            Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + Duration::nanoseconds(123_456_789);
        let mut accounts = Vec::new();
        let mut t = 0;
        for i in 0..100u64 {
            t += 1;
            let mut session = random_session(&mut rng, i, start + Duration::seconds(t));
            if i % 7 == 0 {
                let acct = store_accounts::Store::new_account(&a, 1000 + i, None, "")
                    .await
                    .unwrap();
                session.account_id = Some(acct.id);
                accounts.push(acct.id);
            }
            s.import_sessions(vec![session.clone()]).await.unwrap();
            if i % 4 == 0 {
                for j in 0..rng.range(0, 10) {
                    t += 1;
                    let mut next =
                        random_session(&mut rng, 1000 + i * 10 + j, start + Duration::seconds(t));
                    next.group_id = session.id;
                    next.dev_server = session.dev_server;
                    next.feature_config = session.feature_config.clone();
                    next.privacy_flags = session.privacy_flags;
                    next.with_privacy_mapper = session.with_privacy_mapper;
                    next.macaroon_recipe = session.macaroon_recipe.clone();
                    next.account_id = session.account_id;
                    s.import_sessions(vec![next]).await.unwrap();
                }
            }
        }
        for id in accounts.iter().step_by(2) {
            store_accounts::Store::remove_account(&a, *id)
                .await
                .unwrap();
        }
    })
    .await;
}

/// Groups resolve however the keys order founders and members.
async fn group_ids_resolve_to_the_founders_sql_ids(fx: &SqlFixture) {
    let kv = Kv::new();
    let founder_id;
    {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let s = store_sessions::KvStore::open(&db).unwrap();
        let first = s.new_session(plain("first")).await.unwrap();
        s.shift_state(first.id, SessionState::Created)
            .await
            .unwrap();
        s.shift_state(first.id, SessionState::Revoked)
            .await
            .unwrap();
        let mut n = plain("second");
        n.linked_group = Some(first.id);
        s.new_session(n).await.unwrap();
        founder_id = first.id;
    }
    let db = fx.open().await;
    migrator::migrate(&kv.path, &db, &migrator::Options::default(), None)
        .await
        .unwrap();
    let sql = store_sessions::SqlStore::new(db);
    let members = sql.session_ids_in_group(founder_id).await.unwrap();
    assert_eq!(members.len(), 2);
    for m in members {
        assert_eq!(sql.group_id(m).await.unwrap(), founder_id);
    }
}

/// Ten plain sessions labelled `s0` to `s9` and one labelled `lonely`, in
/// the key-value database; their ids by label.
async fn eleven_sessions(kv: &Kv) -> BTreeMap<String, store_sessions::SessionId> {
    let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
    let sessions = store_sessions::KvStore::open(&db).unwrap();
    let mut ids = BTreeMap::new();
    for label in (0..10).map(|i| format!("s{i}")).chain(["lonely".into()]) {
        let s = sessions.new_session(plain(&label)).await.unwrap();
        ids.insert(label, s.id);
    }
    ids
}

/// A session the database stores other than it was written (a trigger
/// changes its server address) is refused, naming the session and the
/// field, however the copy proves the table (docs/design.md §5.7).
async fn a_session_stored_altered_is_refused_and_named(fx: &SqlFixture) {
    let kv = Kv::new();
    let id = eleven_sessions(&kv).await["s4"];
    let db = with_trigger(
        fx,
        "CREATE TRIGGER alter_one AFTER INSERT ON sessions WHEN NEW.label = 's4' \
         BEGIN UPDATE sessions SET server_address = 'altered' WHERE id = NEW.id; END;"
            .into(),
        "CREATE FUNCTION alter_one() RETURNS trigger AS $$ BEGIN \
         NEW.server_address := 'altered'; RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER alter_one BEFORE INSERT ON sessions FOR EACH ROW \
         WHEN (NEW.label = 's4') EXECUTE FUNCTION alter_one();"
            .into(),
    )
    .await;
    let err = refused(&kv, &db, 4).await;
    assert!(
        err.contains(&format!("session {id}")),
        "names the session: {err}"
    );
    assert!(err.contains("server_addr"), "names the field: {err}");
}

/// A child row the copy did not write (a trigger gives a session a feature
/// config) is refused, naming the session and the field.
async fn a_child_row_the_copy_did_not_write_is_refused_and_named(fx: &SqlFixture) {
    let kv = Kv::new();
    let id = eleven_sessions(&kv).await["s3"];
    let extra = "INSERT INTO session_feature_configs (session_id, feature_name, config) \
                 VALUES (NEW.id, 'extra', NULL);";
    let db = with_trigger(
        fx,
        format!(
            "CREATE TRIGGER add_one AFTER INSERT ON sessions WHEN NEW.label = 's3' \
             BEGIN {extra} END;"
        ),
        format!(
            "CREATE FUNCTION add_one() RETURNS trigger AS $$ BEGIN \
             {extra} RETURN NULL; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER add_one AFTER INSERT ON sessions FOR EACH ROW \
             WHEN (NEW.label = 's3') EXECUTE FUNCTION add_one();"
        ),
    )
    .await;
    let err = refused(&kv, &db, 4).await;
    assert!(
        err.contains(&format!("session {id}")),
        "names the session: {err}"
    );
    assert!(err.contains("feature_config"), "names the field: {err}");
}

/// A session the database does not keep (a trigger drops it) is refused,
/// naming it. It has no child row, which would fail its foreign key first
/// on SQLite.
async fn a_session_not_kept_is_refused_and_named(fx: &SqlFixture) {
    let kv = Kv::new();
    let id = eleven_sessions(&kv).await["lonely"];
    let db = with_trigger(
        fx,
        "CREATE TRIGGER drop_one AFTER INSERT ON sessions WHEN NEW.label = 'lonely' \
         BEGIN DELETE FROM sessions WHERE id = NEW.id; END;"
            .into(),
        "CREATE FUNCTION drop_one() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ \
         LANGUAGE plpgsql; \
         CREATE TRIGGER drop_one BEFORE INSERT ON sessions FOR EACH ROW \
         WHEN (NEW.label = 'lonely') EXECUTE FUNCTION drop_one();"
            .into(),
    )
    .await;
    let err = refused(&kv, &db, 4).await;
    assert!(
        err.contains(&format!("session {id}")),
        "names the session: {err}"
    );
    assert!(err.contains("missing in sql"), "says how: {err}");
}

testkit::backend_tests!(sqlite => sqlite;
    empty, one_session_no_options, multiple_sessions_no_options, one_privacy_flag,
    multiple_privacy_flags, feature_config, feature_config_with_empty_value, dev_server,
    macaroon_recipe, macaroon_recipe_nil_caveats, empty_caveat_verification_id,
    macaroon_recipe_nil_perms, macaroon_recipe_nil_perms_and_caveats, linked_account,
    deleted_linked_account, linked_session, multiple_sessions_with_the_same_id, every_state,
    randomized_sessions, group_ids_resolve_to_the_founders_sql_ids,
    a_session_stored_altered_is_refused_and_named,
    a_child_row_the_copy_did_not_write_is_refused_and_named,
    a_session_not_kept_is_refused_and_named,
);

testkit::backend_tests!(postgres => postgres;
    empty, one_session_no_options, multiple_sessions_no_options, one_privacy_flag,
    multiple_privacy_flags, feature_config, feature_config_with_empty_value, dev_server,
    macaroon_recipe, macaroon_recipe_nil_caveats, empty_caveat_verification_id,
    macaroon_recipe_nil_perms, macaroon_recipe_nil_perms_and_caveats, linked_account,
    deleted_linked_account, linked_session, multiple_sessions_with_the_same_id, every_state,
    randomized_sessions, group_ids_resolve_to_the_founders_sql_ids,
    a_session_stored_altered_is_refused_and_named,
    a_child_row_the_copy_did_not_write_is_refused_and_named,
    a_session_not_kept_is_refused_and_named,
);
