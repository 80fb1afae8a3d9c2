//! The sessions store's conformance suite: one small async function per
//! behaviour, run against every backend over [`Stores`] (the sessions store
//! and the accounts store of the same database, for linked accounts).
//!
//! Each function expects empty stores and writes to them freely. Not a
//! stable API. [`conformance_tests!`](crate::conformance_tests) generates
//! one test per function for a backend.
#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed expectation panics"
)]

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};

use crate::types::{
    Caveat, MacaroonRecipe, NewSession, Permission, PrivacyFlag, PrivacyFlags, SessionId,
    SessionState, SessionType,
};
use crate::{Error, Store};

/// The stores one suite function works on.
pub struct Stores {
    /// The sessions store under test.
    pub sessions: Box<dyn Store>,
    /// The accounts store of the same database.
    pub accounts: Box<dyn store_accounts::Store>,
}

/// Generates `#[tokio::test]`s for every conformance function, in a module
/// named after the backend. `$fixture` is an async function taking the test
/// name and returning `Option<F>` where `F` derefs to [`Stores`].
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident => $fixture:path) => {
        testkit::backend_tests!($backend => $fixture, suite = store_sessions::conformance;
            new_sessions_start_reserved_with_fresh_keys,
            creating_a_session_races_removing_its_account,
            unknown_sessions_are_not_found_by_every_method,
            every_field_round_trips,
            large_recipes_round_trip_in_order,
            every_legal_shift_succeeds,
            illegal_shifts_are_refused,
            shifting_to_the_current_state_is_a_no_op,
            entering_a_terminal_state_sets_revoked_at,
            linking_to_an_unknown_group_is_refused,
            linking_requires_every_session_in_the_group_to_be_terminal,
            a_linked_account_must_exist,
            reserved_sessions_are_deleted_one_by_one,
            reserved_sessions_are_deleted_all_at_once,
            listings_are_ordered_by_creation_time,
            local_public_keys_and_ids_are_unique,
            recipes_with_nil_parts_round_trip_as_lit_does,
            feature_configs_and_privacy_flags_round_trip,
            remote_public_key_is_set_and_replaced,
            expiry_out_of_range_is_refused,
            text_with_nul_is_refused_naming_the_field,
            feature_config_names_longer_than_a_key_are_refused,
            a_leap_second_expiry_is_normalised_everywhere,
        );
    };
}

fn new(label: &str) -> NewSession {
    NewSession::new(
        label,
        SessionType::MacaroonAdmin,
        Utc::now() + Duration::days(1),
        "mailbox.example:443",
    )
}

/// A session linked to an account that is removed at the same moment is
/// either created (before the removal) or refused as not found: never a
/// backend error (a foreign key violation on PostgreSQL).
pub async fn creating_a_session_races_removing_its_account(st: &Stores) {
    for i in 0..24 {
        let a = st
            .accounts
            .new_account(1, None, &format!("race-{i}"))
            .await
            .unwrap();
        let mut n = new(&format!("racing {i}"));
        n.account = Some(a.id);
        let (created, removed) =
            tokio::join!(st.sessions.new_session(n), st.accounts.remove_account(a.id));
        assert!(
            matches!(created, Ok(_) | Err(Error::AccountNotFound { .. })),
            "{created:?}"
        );
        // A session that got in first keeps the account from going.
        if created.is_err() {
            removed.unwrap();
        }
    }
}

fn unknown() -> SessionId {
    SessionId([0xEE; 4])
}

/// Sessions start Reserved, in a group of their own, with fresh keys and a
/// root key derived from the id.
pub async fn new_sessions_start_reserved_with_fresh_keys(st: &Stores) {
    let s = st.sessions.new_session(new("one")).await.unwrap();
    assert_eq!(s.state, SessionState::Reserved);
    assert_eq!(s.revoked_at, None);
    assert_eq!(s.id, SessionId::from_public_key(&s.local_public_key));
    assert_eq!(s.macaroon_root_key, s.id.macaroon_root_key());
    assert_eq!(s.group_id, s.id);
    assert!(!s.with_privacy_mapper && s.privacy_flags.is_empty());
    assert_eq!(
        (
            s.macaroon_recipe.as_ref(),
            s.feature_config.as_ref(),
            s.account_id
        ),
        (None, None, None)
    );
    assert!(
        !format!("{s:?}").contains(&format!("{:?}", s.local_private_key.0)),
        "no secret in Debug"
    );
    assert_eq!(st.sessions.session(s.id).await.unwrap(), s);
    assert_eq!(
        st.sessions
            .session_by_local_key(&s.local_public_key)
            .await
            .unwrap(),
        s
    );
    assert_eq!(st.sessions.group_id(s.id).await.unwrap(), s.id);
    assert_eq!(
        st.sessions.session_ids_in_group(s.id).await.unwrap(),
        vec![s.id]
    );
}

/// Every lookup by an unknown id or key fails as not found (unknown group
/// for group listings).
pub async fn unknown_sessions_are_not_found_by_every_method(st: &Stores) {
    let nf = |r: Result<(), Error>, what: &str| {
        assert!(matches!(r, Err(Error::NotFound { .. })), "{what}: {r:?}")
    };
    nf(st.sessions.session(unknown()).await.map(drop), "session");
    nf(
        st.sessions.session_by_local_key(&[2; 33]).await.map(drop),
        "session_by_local_key",
    );
    nf(
        st.sessions
            .update_remote_public_key(unknown(), [2; 33])
            .await,
        "update_remote_public_key",
    );
    nf(
        st.sessions
            .shift_state(unknown(), SessionState::Created)
            .await,
        "shift_state",
    );
    nf(
        st.sessions.delete_reserved_session(unknown()).await,
        "delete_reserved_session",
    );
    nf(st.sessions.group_id(unknown()).await.map(drop), "group_id");
    let r = st.sessions.session_ids_in_group(unknown()).await;
    assert!(
        matches!(r, Err(Error::UnknownGroup { group }) if group == unknown()),
        "{r:?}"
    );
    assert!(st.sessions.list_sessions().await.unwrap().is_empty());
}

/// A session with every option set reads back equal, by id, key and listing.
pub async fn every_field_round_trips(st: &Stores) {
    let account = st.accounts.new_account(1_234, None, "").await.unwrap();
    let mut n = NewSession::new(
        "everything",
        SessionType::MacaroonAccount,
        Utc.with_ymd_and_hms(2030, 5, 6, 7, 8, 9).unwrap() + Duration::nanoseconds(123_456_789),
        "foo.bar.baz:1234",
    );
    n.dev_server = true;
    n.macaroon_recipe = Some(MacaroonRecipe {
        permissions: vec![
            Permission {
                entity: "loop".into(),
                action: "read".into(),
            },
            Permission {
                entity: "lnd".into(),
                action: "write".into(),
            },
        ],
        caveats: vec![Caveat {
            id: format!("lnd-custom account {}", account.id).into_bytes(),
            verification_id: Some(b"HS7uD_w".to_vec()),
            location: "anywhere".into(),
        }],
    });
    n.feature_config = Some(BTreeMap::from([("AutoFees".to_owned(), vec![1, 2, 3, 4])]));
    n.privacy = Some(PrivacyFlags::of([
        PrivacyFlag::ClearPubkeys,
        PrivacyFlag::ClearAmounts,
    ]));
    n.account = Some(account.id);
    let s = st.sessions.new_session(n.clone()).await.unwrap();
    assert_eq!(s.label, "everything");
    assert_eq!(s.session_type, SessionType::MacaroonAccount);
    assert_eq!(s.expiry, store_contract::normalise_time(n.expiry));
    assert_eq!(
        (s.server_addr.as_str(), s.dev_server),
        ("foo.bar.baz:1234", true)
    );
    assert_eq!(s.macaroon_recipe, n.macaroon_recipe);
    assert_eq!(s.feature_config, n.feature_config);
    assert!(s.with_privacy_mapper);
    assert_eq!(s.privacy_flags, n.privacy.unwrap());
    assert_eq!(s.account_id, Some(account.id));
    assert_eq!(st.sessions.session(s.id).await.unwrap(), s);
    assert_eq!(st.sessions.list_sessions().await.unwrap(), vec![s.clone()]);
    assert_eq!(
        st.sessions
            .list_sessions_by_type(SessionType::MacaroonAccount)
            .await
            .unwrap(),
        vec![s]
    );
}

/// A recipe large enough that its rows go in bulk (a macaroon with every
/// permission of a node) round trips in order, empty verification ids and
/// locations included.
pub async fn large_recipes_round_trip_in_order(st: &Stores) {
    let mut n = NewSession::new(
        "large",
        SessionType::MacaroonCustom,
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
        "host:1",
    );
    n.macaroon_recipe = Some(MacaroonRecipe {
        permissions: (0..150)
            .map(|i| Permission {
                entity: format!("entity {}", 149 - i),
                action: if i % 2 == 0 { "read" } else { "write" }.into(),
            })
            .collect(),
        caveats: (0..70u8)
            .map(|i| Caveat {
                id: vec![i, 0, 255 - i],
                verification_id: (i % 3 == 0).then(|| vec![i; 3]),
                location: if i % 2 == 0 {
                    String::new()
                } else {
                    format!("l{i}")
                },
            })
            .collect(),
    });
    n.feature_config = Some(
        (0..80)
            .map(|i| (format!("feature {i:03}"), vec![i as u8; 5]))
            .collect(),
    );
    let s = st.sessions.new_session(n.clone()).await.unwrap();
    assert_eq!(s.macaroon_recipe, n.macaroon_recipe);
    assert_eq!(s.feature_config, n.feature_config);
    assert_eq!(st.sessions.session(s.id).await.unwrap(), s);
}

/// Reserved → Created → Revoked, and Created → Expired.
pub async fn every_legal_shift_succeeds(st: &Stores) {
    let a = st.sessions.new_session(new("a")).await.unwrap();
    st.sessions
        .shift_state(a.id, SessionState::Created)
        .await
        .unwrap();
    assert_eq!(
        st.sessions.session(a.id).await.unwrap().state,
        SessionState::Created
    );
    st.sessions
        .shift_state(a.id, SessionState::Revoked)
        .await
        .unwrap();
    assert_eq!(
        st.sessions.session(a.id).await.unwrap().state,
        SessionState::Revoked
    );
    let b = st.sessions.new_session(new("b")).await.unwrap();
    st.sessions
        .shift_state(b.id, SessionState::Created)
        .await
        .unwrap();
    st.sessions
        .shift_state(b.id, SessionState::Expired)
        .await
        .unwrap();
    assert_eq!(
        st.sessions.session(b.id).await.unwrap().state,
        SessionState::Expired
    );
}

/// Every shift outside the table fails and leaves the session unchanged.
pub async fn illegal_shifts_are_refused(st: &Stores) {
    use SessionState::*;
    let reserved = st.sessions.new_session(new("r")).await.unwrap();
    let created = st.sessions.new_session(new("c")).await.unwrap();
    st.sessions.shift_state(created.id, Created).await.unwrap();
    let revoked = st.sessions.new_session(new("rv")).await.unwrap();
    st.sessions.shift_state(revoked.id, Created).await.unwrap();
    st.sessions.shift_state(revoked.id, Revoked).await.unwrap();
    let expired = st.sessions.new_session(new("e")).await.unwrap();
    st.sessions.shift_state(expired.id, Created).await.unwrap();
    st.sessions.shift_state(expired.id, Expired).await.unwrap();
    for (s, from) in [
        (&reserved, Reserved),
        (&created, Created),
        (&revoked, Revoked),
        (&expired, Expired),
    ] {
        let before = st.sessions.session(s.id).await.unwrap();
        for to in SessionState::ALL {
            if to == from || from.can_shift_to(to) {
                continue;
            }
            let r = st.sessions.shift_state(s.id, to).await;
            assert!(
                matches!(r, Err(Error::IllegalStateShift { from: f, to: t, .. }) if f == from && t == to),
                "{from:?} -> {to:?}: {r:?}"
            );
        }
        assert_eq!(st.sessions.session(s.id).await.unwrap(), before);
    }
}

/// Shifting to the state a session is in changes nothing.
pub async fn shifting_to_the_current_state_is_a_no_op(st: &Stores) {
    let s = st.sessions.new_session(new("s")).await.unwrap();
    st.sessions
        .shift_state(s.id, SessionState::Reserved)
        .await
        .unwrap();
    assert_eq!(st.sessions.session(s.id).await.unwrap(), s);
    st.sessions
        .shift_state(s.id, SessionState::Created)
        .await
        .unwrap();
    st.sessions
        .shift_state(s.id, SessionState::Revoked)
        .await
        .unwrap();
    let revoked = st.sessions.session(s.id).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    st.sessions
        .shift_state(s.id, SessionState::Revoked)
        .await
        .unwrap();
    assert_eq!(
        st.sessions.session(s.id).await.unwrap(),
        revoked,
        "revoked_at untouched"
    );
}

/// Revoked and Expired both stamp `revoked_at`; other states do not.
pub async fn entering_a_terminal_state_sets_revoked_at(st: &Stores) {
    for terminal in [SessionState::Revoked, SessionState::Expired] {
        let s = st.sessions.new_session(new("t")).await.unwrap();
        st.sessions
            .shift_state(s.id, SessionState::Created)
            .await
            .unwrap();
        assert_eq!(st.sessions.session(s.id).await.unwrap().revoked_at, None);
        let before = Utc::now() - Duration::seconds(1);
        st.sessions.shift_state(s.id, terminal).await.unwrap();
        let at = st.sessions.session(s.id).await.unwrap().revoked_at.unwrap();
        assert!(
            at >= before && at <= Utc::now() + Duration::seconds(1),
            "{at}"
        );
    }
}

/// A group that does not exist cannot be joined.
pub async fn linking_to_an_unknown_group_is_refused(st: &Stores) {
    let mut n = new("linked");
    n.linked_group = Some(unknown());
    let r = st.sessions.new_session(n).await;
    assert!(
        matches!(r, Err(Error::UnknownGroup { group }) if group == unknown()),
        "{r:?}"
    );
    assert!(
        st.sessions.list_sessions().await.unwrap().is_empty(),
        "nothing was created"
    );
}

/// Joining needs every session in the group revoked or expired; members are
/// listed in creation order.
pub async fn linking_requires_every_session_in_the_group_to_be_terminal(st: &Stores) {
    let first = st.sessions.new_session(new("first")).await.unwrap();
    let mut n = new("second");
    n.linked_group = Some(first.id);
    let r = st.sessions.new_session(n.clone()).await;
    assert!(
        matches!(r, Err(Error::GroupStillActive { group }) if group == first.id),
        "reserved: {r:?}"
    );
    st.sessions
        .shift_state(first.id, SessionState::Created)
        .await
        .unwrap();
    assert!(matches!(
        st.sessions.new_session(n.clone()).await,
        Err(Error::GroupStillActive { .. })
    ));
    st.sessions
        .shift_state(first.id, SessionState::Revoked)
        .await
        .unwrap();
    let second = st.sessions.new_session(n.clone()).await.unwrap();
    assert_eq!(second.group_id, first.id);
    assert_eq!(st.sessions.group_id(second.id).await.unwrap(), first.id);
    // The new member is active again, so nobody else may join yet.
    assert!(matches!(
        st.sessions.new_session(n.clone()).await,
        Err(Error::GroupStillActive { .. })
    ));
    st.sessions
        .shift_state(second.id, SessionState::Created)
        .await
        .unwrap();
    st.sessions
        .shift_state(second.id, SessionState::Expired)
        .await
        .unwrap();
    let third = st.sessions.new_session(n).await.unwrap();
    assert_eq!(
        st.sessions.session_ids_in_group(first.id).await.unwrap(),
        vec![first.id, second.id, third.id]
    );
    // A member's own id does not name a group.
    let r = st.sessions.session_ids_in_group(third.id).await;
    assert!(matches!(r, Err(Error::UnknownGroup { .. })), "{r:?}");
    let mut n = new("fourth");
    n.linked_group = Some(third.id);
    let r = st.sessions.new_session(n).await;
    assert!(matches!(r, Err(Error::UnknownGroup { .. })), "{r:?}");
}

/// A session may link an account only if the account exists.
pub async fn a_linked_account_must_exist(st: &Stores) {
    let mut n = new("acct");
    n.account = Some(store_accounts::AccountId([9; 8]));
    let r = st.sessions.new_session(n.clone()).await;
    assert!(matches!(r, Err(Error::AccountNotFound { .. })), "{r:?}");
    let account = st.accounts.new_account(1, None, "").await.unwrap();
    n.account = Some(account.id);
    let s = st.sessions.new_session(n).await.unwrap();
    assert_eq!(
        st.sessions.session(s.id).await.unwrap().account_id,
        Some(account.id)
    );
}

/// Only reserved sessions can be deleted; a deleted one is gone everywhere.
pub async fn reserved_sessions_are_deleted_one_by_one(st: &Stores) {
    let keep = st.sessions.new_session(new("keep")).await.unwrap();
    st.sessions
        .shift_state(keep.id, SessionState::Created)
        .await
        .unwrap();
    let r = st.sessions.delete_reserved_session(keep.id).await;
    assert!(
        matches!(
            r,
            Err(Error::NotReserved {
                state: SessionState::Created,
                ..
            })
        ),
        "{r:?}"
    );
    let gone = st.sessions.new_session(new("gone")).await.unwrap();
    st.sessions.delete_reserved_session(gone.id).await.unwrap();
    assert!(matches!(
        st.sessions.session(gone.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        st.sessions
            .session_by_local_key(&gone.local_public_key)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        st.sessions.session_ids_in_group(gone.id).await,
        Err(Error::UnknownGroup { .. })
    ));
    assert!(matches!(
        st.sessions.delete_reserved_session(gone.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(st.sessions.list_sessions().await.unwrap().len(), 1);
}

/// `delete_reserved_sessions` removes every reserved session and nothing else.
pub async fn reserved_sessions_are_deleted_all_at_once(st: &Stores) {
    let mut reserved = Vec::new();
    for i in 0..3 {
        reserved.push(
            st.sessions
                .new_session(new(&format!("r{i}")))
                .await
                .unwrap(),
        );
    }
    let created = st.sessions.new_session(new("c")).await.unwrap();
    st.sessions
        .shift_state(created.id, SessionState::Created)
        .await
        .unwrap();
    assert_eq!(st.sessions.delete_reserved_sessions().await.unwrap(), 3);
    assert_eq!(st.sessions.delete_reserved_sessions().await.unwrap(), 0);
    let left: Vec<SessionId> = st
        .sessions
        .list_sessions()
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, vec![created.id]);
    for r in reserved {
        assert!(matches!(
            st.sessions.session(r.id).await,
            Err(Error::NotFound { .. })
        ));
    }
}

/// Every listing is ordered by creation time, filters included.
pub async fn listings_are_ordered_by_creation_time(st: &Stores) {
    let mut made = Vec::new();
    for (i, t) in [
        SessionType::Autopilot,
        SessionType::MacaroonAdmin,
        SessionType::Autopilot,
        SessionType::UiPassword,
    ]
    .into_iter()
    .enumerate()
    {
        let mut n = new(&format!("s{i}"));
        n.session_type = t;
        made.push(st.sessions.new_session(n).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    st.sessions
        .shift_state(made[1].id, SessionState::Created)
        .await
        .unwrap();
    st.sessions
        .shift_state(made[3].id, SessionState::Created)
        .await
        .unwrap();
    let ids = |v: Vec<crate::Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(st.sessions.list_sessions().await.unwrap()),
        made.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(st
            .sessions
            .list_sessions_by_type(SessionType::Autopilot)
            .await
            .unwrap()),
        vec![made[0].id, made[2].id]
    );
    assert_eq!(
        ids(st
            .sessions
            .list_sessions_by_state(SessionState::Created)
            .await
            .unwrap()),
        vec![made[1].id, made[3].id]
    );
    assert!(
        st.sessions
            .list_sessions_by_state(SessionState::Expired)
            .await
            .unwrap()
            .is_empty()
    );
}

/// No two sessions share a local public key or an id.
pub async fn local_public_keys_and_ids_are_unique(st: &Stores) {
    let mut keys = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for i in 0..20 {
        let s = st.sessions.new_session(new(&format!("{i}"))).await.unwrap();
        assert!(keys.insert(s.local_public_key));
        assert!(ids.insert(s.id));
    }
}

/// Recipes: only permissions, only caveats, neither (stored as no recipe),
/// and an empty but present verification id, which stays empty.
pub async fn recipes_with_nil_parts_round_trip_as_lit_does(st: &Stores) {
    let perms = vec![
        Permission {
            entity: "loop".into(),
            action: "read".into(),
        },
        Permission {
            entity: "lnd".into(),
            action: "write".into(),
        },
        Permission {
            entity: "pool".into(),
            action: "read".into(),
        },
    ];
    let caveats = vec![
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
    ];
    let cases = [
        (
            Some(MacaroonRecipe {
                permissions: perms.clone(),
                caveats: caveats.clone(),
            }),
            "both",
        ),
        (
            Some(MacaroonRecipe {
                permissions: perms.clone(),
                caveats: vec![],
            }),
            "nil caveats",
        ),
        (
            Some(MacaroonRecipe {
                permissions: vec![],
                caveats: caveats.clone(),
            }),
            "nil permissions",
        ),
        (
            Some(MacaroonRecipe {
                permissions: perms.clone(),
                caveats: vec![Caveat {
                    id: b"id".to_vec(),
                    verification_id: Some(vec![]),
                    location: String::new(),
                }],
            }),
            "empty verification id",
        ),
    ];
    for (recipe, name) in cases {
        let mut n = new(name);
        n.macaroon_recipe = recipe.clone();
        let s = st.sessions.new_session(n).await.unwrap();
        assert_eq!(
            st.sessions.session(s.id).await.unwrap().macaroon_recipe,
            recipe,
            "{name}"
        );
    }
    let mut n = new("nil permissions and caveats");
    n.macaroon_recipe = Some(MacaroonRecipe::default());
    let s = st.sessions.new_session(n).await.unwrap();
    assert_eq!(s.macaroon_recipe, None);
    assert_eq!(
        st.sessions.session(s.id).await.unwrap().macaroon_recipe,
        None
    );
}

/// Feature configs (an empty value kept, an empty map stored as none) and
/// privacy flags read back as written.
pub async fn feature_configs_and_privacy_flags_round_trip(st: &Stores) {
    let config = BTreeMap::from([
        ("AutoFees".to_owned(), vec![1, 2, 3, 4]),
        ("AutoSomething".to_owned(), vec![4, 3, 4, 5, 6, 6]),
        ("Empty".to_owned(), vec![]),
    ]);
    let mut n = new("config");
    n.feature_config = Some(config.clone());
    n.privacy = Some(PrivacyFlags::of([
        PrivacyFlag::ClearChanInitiator,
        PrivacyFlag::ClearHtlcs,
        PrivacyFlag::ClearClosingTxIds,
    ]));
    let s = st.sessions.new_session(n.clone()).await.unwrap();
    let got = st.sessions.session(s.id).await.unwrap();
    assert_eq!(got.feature_config, Some(config));
    assert_eq!(got.privacy_flags, n.privacy.unwrap());
    assert!(got.with_privacy_mapper);

    let mut n = new("empty");
    n.feature_config = Some(BTreeMap::new());
    n.privacy = Some(PrivacyFlags::EMPTY);
    let s = st.sessions.new_session(n).await.unwrap();
    let got = st.sessions.session(s.id).await.unwrap();
    assert_eq!(got.feature_config, None);
    assert!(got.with_privacy_mapper && got.privacy_flags.is_empty());
}

/// The remote key is set, and set again.
pub async fn remote_public_key_is_set_and_replaced(st: &Stores) {
    let s = st.sessions.new_session(new("r")).await.unwrap();
    st.sessions
        .update_remote_public_key(s.id, [2; 33])
        .await
        .unwrap();
    assert_eq!(
        st.sessions.session(s.id).await.unwrap().remote_public_key,
        Some([2; 33])
    );
    st.sessions
        .update_remote_public_key(s.id, [3; 33])
        .await
        .unwrap();
    assert_eq!(
        st.sessions.session(s.id).await.unwrap().remote_public_key,
        Some([3; 33])
    );
}

/// Expiry must be storable on every backend.
pub async fn expiry_out_of_range_is_refused(st: &Stores) {
    let mut n = new("far");
    n.expiry = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
    let r = st.sessions.new_session(n).await;
    assert!(
        matches!(
            r,
            Err(Error::InvalidInput {
                field: "expiry",
                ..
            })
        ),
        "{r:?}"
    );
}

fn is_invalid(r: Result<impl std::fmt::Debug, Error>, want: &str) {
    match r {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, want),
        other => panic!("expected InvalidInput on {want}, got {other:?}"),
    }
}

/// The NUL character is refused in every text field, naming it.
pub async fn text_with_nul_is_refused_naming_the_field(st: &Stores) {
    use crate::types::{Caveat, MacaroonRecipe, Permission};
    let s = &*st.sessions;
    is_invalid(s.new_session(new("a\0")).await, "label");
    let mut n = new("x");
    n.server_addr = "host\0:1".into();
    is_invalid(s.new_session(n).await, "server_addr");
    let mut n = new("x");
    n.macaroon_recipe = Some(MacaroonRecipe {
        permissions: vec![Permission {
            entity: "ln\0d".into(),
            action: "read".into(),
        }],
        caveats: vec![],
    });
    is_invalid(s.new_session(n).await, "permission entity");
    let mut n = new("x");
    n.macaroon_recipe = Some(MacaroonRecipe {
        permissions: vec![],
        caveats: vec![Caveat {
            id: vec![1],
            verification_id: None,
            location: "here\0".into(),
        }],
    });
    is_invalid(s.new_session(n).await, "caveat location");
    let mut n = new("x");
    n.feature_config = Some(BTreeMap::from([("f\0".to_owned(), vec![1])]));
    is_invalid(s.new_session(n).await, "feature config name");
    assert!(
        s.list_sessions().await.unwrap().is_empty(),
        "nothing written"
    );
}

/// A feature config name sits in a unique index: a key.
pub async fn feature_config_names_longer_than_a_key_are_refused(st: &Stores) {
    let max = store_contract::MAX_KEY_BYTES;
    let mut n = new("x");
    n.feature_config = Some(BTreeMap::from([("f".repeat(max), vec![1])]));
    st.sessions.new_session(n).await.unwrap();
    let mut n = new("x");
    n.feature_config = Some(BTreeMap::from([("f".repeat(max + 1), vec![1])]));
    is_invalid(st.sessions.new_session(n).await, "feature config name");
}

/// A leap second expiry reads back as the last microsecond before it.
pub async fn a_leap_second_expiry_is_normalised_everywhere(st: &Stores) {
    use chrono::Timelike;
    let leap = Utc
        .with_ymd_and_hms(2030, 6, 30, 23, 59, 59)
        .unwrap()
        .with_nanosecond(1_000_000_500)
        .unwrap();
    let mut n = new("x");
    n.expiry = leap;
    let created = st.sessions.new_session(n).await.unwrap();
    let want =
        Utc.with_ymd_and_hms(2030, 6, 30, 23, 59, 59).unwrap() + Duration::microseconds(999_999);
    assert_eq!(created.expiry, want);
    assert_eq!(st.sessions.session(created.id).await.unwrap().expiry, want);
}
