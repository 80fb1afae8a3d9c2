//! The firewall store's conformance suite: one small async function per
//! behaviour, run against every backend over [`Stores`] (the firewall store
//! and the sessions store of the same database, which owns the groups).
//!
//! Each function expects empty stores and writes to them freely. Not a
//! stable API. [`conformance_tests!`](crate::conformance_tests) generates
//! one test per function for a backend.
#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed expectation panics"
)]

use std::collections::BTreeMap;

use store_sessions::{NewSession, SessionId, SessionType};

use crate::{
    Error, KvEntry, Namespace, PrivacyPair, Scope, Store, update_kv, update_privacy, view_kv,
    view_privacy,
};

/// The stores one suite function works on.
pub struct Stores {
    /// The firewall store under test.
    pub firewall: Box<dyn Store>,
    /// The sessions store of the same database.
    pub sessions: Box<dyn store_sessions::Store>,
}

/// Generates `#[tokio::test]`s for every conformance function, in a module
/// named after the backend. `$fixture` is an async function taking the test
/// name and returning `Option<F>` where `F` derefs to [`Stores`].
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident => $fixture:path) => {
        testkit::backend_tests!($backend => $fixture, suite = store_firewall::conformance;
            missing_keys_read_as_none_and_deleting_them_succeeds,
            set_inserts_then_overwrites_and_empty_values_round_trip,
            a_failing_update_rolls_back_every_write,
            a_transaction_reads_its_own_writes,
            views_see_committed_data_and_refuse_writes,
            temporary_group_stores_are_wiped_and_permanent_ones_kept,
            temporary_feature_stores_are_wiped_and_permanent_ones_kept,
            namespaces_are_isolated_between_rules_groups_and_features,
            unknown_groups_couple_to_sessions_as_lit_does,
            privacy_pairs_map_both_ways,
            privacy_duplicates_are_refused_per_group,
            the_same_real_value_may_live_in_two_groups,
            privacy_calls_on_an_unknown_group_fail,
            a_missing_privacy_value_is_no_such_key,
            a_failing_privacy_update_rolls_back,
            listings_show_every_entry_and_pair_in_order,
            text_with_nul_is_refused_naming_the_field,
            keys_longer_than_the_contract_allows_are_refused,
            empty_privacy_values_are_refused,
            setting_an_entry_races_removing_its_group,
            adding_a_pair_races_removing_its_group,
        );
    };
}

async fn group(st: &Stores) -> SessionId {
    let n = NewSession::new(
        "g",
        SessionType::Autopilot,
        chrono::Utc::now() + chrono::Duration::days(1),
        "",
    );
    st.sessions.new_session(n).await.unwrap().id
}

async fn set(st: &Stores, ns: &Namespace, scope: Scope, key: &'static str, value: &'static [u8]) {
    update_kv(&*st.firewall, ns.clone(), |tx| {
        Box::pin(async move { tx.set(scope, key, value).await })
    })
    .await
    .unwrap();
}

async fn get(st: &Stores, ns: &Namespace, scope: Scope, key: &'static str) -> Option<Vec<u8>> {
    view_kv(&*st.firewall, ns.clone(), |tx| {
        Box::pin(async move { tx.get(scope, key).await })
    })
    .await
    .unwrap()
}

const ALL_SCOPES: [Scope; 4] = [
    Scope::Global,
    Scope::GlobalTemp,
    Scope::Local,
    Scope::LocalTemp,
];

/// `get` of a missing key is `None`, and `del` of one succeeds.
pub async fn missing_keys_read_as_none_and_deleting_them_succeeds(st: &Stores) {
    let ns = Namespace::new("rule", group(st).await, "");
    for scope in ALL_SCOPES {
        assert_eq!(get(st, &ns, scope, "missing").await, None);
        update_kv(&*st.firewall, ns.clone(), |tx| {
            Box::pin(async move { tx.del(scope, "missing").await })
        })
        .await
        .unwrap();
    }
}

/// `set` inserts, `set` again overwrites, and an empty value is a value.
pub async fn set_inserts_then_overwrites_and_empty_values_round_trip(st: &Stores) {
    let ns = Namespace::new("rule", group(st).await, "feature");
    for scope in ALL_SCOPES {
        set(st, &ns, scope, "k", b"one").await;
        assert_eq!(get(st, &ns, scope, "k").await.as_deref(), Some(&b"one"[..]));
        set(st, &ns, scope, "k", b"two").await;
        assert_eq!(get(st, &ns, scope, "k").await.as_deref(), Some(&b"two"[..]));
        set(st, &ns, scope, "empty", b"").await;
        assert_eq!(get(st, &ns, scope, "empty").await, Some(vec![]));
        update_kv(&*st.firewall, ns.clone(), |tx| {
            Box::pin(async move { tx.del(scope, "k").await })
        })
        .await
        .unwrap();
        assert_eq!(get(st, &ns, scope, "k").await, None);
    }
}

/// When the closure fails, none of its writes remain.
pub async fn a_failing_update_rolls_back_every_write(st: &Stores) {
    let ns = Namespace::new("rule", group(st).await, "");
    set(st, &ns, Scope::Global, "kept", b"1").await;
    let r: Result<(), Error> = update_kv(&*st.firewall, ns.clone(), |tx| {
        Box::pin(async move {
            tx.set(Scope::Global, "a", b"1").await?;
            tx.set(Scope::Local, "b", b"2").await?;
            tx.set(Scope::GlobalTemp, "kept", b"overwritten").await?;
            tx.del(Scope::Global, "kept").await?;
            Err(Error::ReadOnly)
        })
    })
    .await;
    assert!(matches!(r, Err(Error::ReadOnly)));
    assert_eq!(get(st, &ns, Scope::Global, "a").await, None);
    assert_eq!(get(st, &ns, Scope::Local, "b").await, None);
    assert_eq!(
        get(st, &ns, Scope::Global, "kept").await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(get(st, &ns, Scope::GlobalTemp, "kept").await, None);
}

/// Inside one transaction, reads see the transaction's own writes.
pub async fn a_transaction_reads_its_own_writes(st: &Stores) {
    let ns = Namespace::new("rule", group(st).await, "f");
    let seen = update_kv(&*st.firewall, ns.clone(), |tx| {
        Box::pin(async move {
            tx.set(Scope::Local, "k", b"v").await?;
            let after_set = tx.get(Scope::Local, "k").await?;
            tx.del(Scope::Local, "k").await?;
            let after_del = tx.get(Scope::Local, "k").await?;
            Ok((after_set, after_del))
        })
    })
    .await
    .unwrap();
    assert_eq!(seen, (Some(b"v".to_vec()), None));
}

/// A view reads committed data; its writes fail.
pub async fn views_see_committed_data_and_refuse_writes(st: &Stores) {
    let g = group(st).await;
    let ns = Namespace::new("rule", g, "");
    set(st, &ns, Scope::Local, "k", b"v").await;
    let r = view_kv(&*st.firewall, ns.clone(), |tx| {
        Box::pin(async move {
            assert_eq!(tx.get(Scope::Local, "k").await?, Some(b"v".to_vec()));
            tx.set(Scope::Local, "k", b"w").await
        })
    })
    .await;
    assert!(matches!(r, Err(Error::ReadOnly)), "{r:?}");
    let r = view_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.new_pair("r", "p").await })
    })
    .await;
    assert!(matches!(r, Err(Error::ReadOnly)), "{r:?}");
    assert_eq!(get(st, &ns, Scope::Local, "k").await, Some(b"v".to_vec()));
}

async fn temp_vs_perm(st: &Stores, feature: &'static str) {
    let ns = Namespace::new("rule", group(st).await, feature);
    for scope in ALL_SCOPES {
        set(st, &ns, scope, "k", b"v").await;
    }
    st.firewall.delete_temp_kv_stores().await.unwrap();
    assert_eq!(get(st, &ns, Scope::Global, "k").await, Some(b"v".to_vec()));
    assert_eq!(get(st, &ns, Scope::Local, "k").await, Some(b"v".to_vec()));
    assert_eq!(get(st, &ns, Scope::GlobalTemp, "k").await, None);
    assert_eq!(get(st, &ns, Scope::LocalTemp, "k").await, None);
    st.firewall.delete_temp_kv_stores().await.unwrap();
}

/// Group level: temporary stores go, permanent ones stay.
pub async fn temporary_group_stores_are_wiped_and_permanent_ones_kept(st: &Stores) {
    temp_vs_perm(st, "").await;
}

/// Feature level: temporary stores go, permanent ones stay.
pub async fn temporary_feature_stores_are_wiped_and_permanent_ones_kept(st: &Stores) {
    temp_vs_perm(st, "feature").await;
}

/// Global is shared by all groups and features of a rule; feature stores
/// are per feature; the group store is shared by a group's namespaces
/// without feature; groups and rules are isolated.
pub async fn namespaces_are_isolated_between_rules_groups_and_features(st: &Stores) {
    let (g1, g2) = (group(st).await, group(st).await);
    let r1_g1 = Namespace::new("r1", g1, "");
    let r1_g1_f1 = Namespace::new("r1", g1, "f1");
    let r1_g1_f2 = Namespace::new("r1", g1, "f2");
    let r1_g2 = Namespace::new("r1", g2, "");
    let r2_g1 = Namespace::new("r2", g1, "");

    set(st, &r1_g1_f1, Scope::Global, "k", b"global").await;
    for ns in [&r1_g1, &r1_g1_f2, &r1_g2] {
        assert_eq!(
            get(st, ns, Scope::Global, "k").await,
            Some(b"global".to_vec()),
            "{ns:?}"
        );
    }
    assert_eq!(
        get(st, &r2_g1, Scope::Global, "k").await,
        None,
        "rules are isolated"
    );

    set(st, &r1_g1_f1, Scope::Local, "k", b"f1").await;
    set(st, &r1_g1_f2, Scope::Local, "k", b"f2").await;
    set(st, &r1_g1, Scope::Local, "k", b"group").await;
    assert_eq!(
        get(st, &r1_g1_f1, Scope::Local, "k").await,
        Some(b"f1".to_vec())
    );
    assert_eq!(
        get(st, &r1_g1_f2, Scope::Local, "k").await,
        Some(b"f2".to_vec())
    );
    assert_eq!(
        get(st, &r1_g1, Scope::Local, "k").await,
        Some(b"group".to_vec())
    );
    assert_eq!(
        get(st, &Namespace::new("r1", g1, ""), Scope::Local, "k").await,
        Some(b"group".to_vec())
    );
    assert_eq!(
        get(st, &r1_g2, Scope::Local, "k").await,
        None,
        "groups are isolated"
    );
    assert_eq!(get(st, &r2_g1, Scope::Local, "k").await, None);
    assert_eq!(
        get(st, &r1_g1, Scope::LocalTemp, "k").await,
        None,
        "temp and perm are apart"
    );
}

/// For an unknown group: Global works, Local get and del find nothing,
/// Local set fails.
pub async fn unknown_groups_couple_to_sessions_as_lit_does(st: &Stores) {
    let ns = Namespace::new("rule", SessionId([0xEE; 4]), "");
    set(st, &ns, Scope::Global, "k", b"v").await;
    assert_eq!(get(st, &ns, Scope::Global, "k").await, Some(b"v".to_vec()));
    assert_eq!(get(st, &ns, Scope::Local, "k").await, None);
    update_kv(&*st.firewall, ns.clone(), |tx| {
        Box::pin(async move { tx.del(Scope::Local, "k").await })
    })
    .await
    .unwrap();
    for scope in [Scope::Local, Scope::LocalTemp] {
        let r = update_kv(&*st.firewall, ns.clone(), |tx| {
            Box::pin(async move { tx.set(scope, "k", b"v").await })
        })
        .await;
        assert!(
            matches!(r, Err(Error::UnknownGroup { group }) if group == ns.group),
            "{r:?}"
        );
    }
    let feature = Namespace::new("rule", SessionId([0xEE; 4]), "f");
    let r = update_kv(&*st.firewall, feature, |tx| {
        Box::pin(async move { tx.set(Scope::Local, "k", b"v").await })
    })
    .await;
    assert!(matches!(r, Err(Error::UnknownGroup { .. })), "{r:?}");
}

/// A pair maps both ways, and `fetch_all_pairs` lists the group's pairs.
pub async fn privacy_pairs_map_both_ways(st: &Stores) {
    let g = group(st).await;
    assert!(
        view_privacy(&*st.firewall, g, |tx| Box::pin(async move {
            tx.fetch_all_pairs().await
        }))
        .await
        .unwrap()
        .is_empty()
    );
    update_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move {
            tx.new_pair("real-1", "pseudo-1").await?;
            tx.new_pair("real-2", "pseudo-2").await?;
            assert_eq!(
                tx.real_to_pseudo("real-1").await?,
                "pseudo-1",
                "own writes are visible"
            );
            Ok(())
        })
    })
    .await
    .unwrap();
    let (real, pseudo, all) = view_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move {
            Ok((
                tx.pseudo_to_real("pseudo-2").await?,
                tx.real_to_pseudo("real-2").await?,
                tx.fetch_all_pairs().await?,
            ))
        })
    })
    .await
    .unwrap();
    assert_eq!((real.as_str(), pseudo.as_str()), ("real-2", "pseudo-2"));
    assert_eq!(
        all,
        BTreeMap::from([
            ("real-1".to_owned(), "pseudo-1".to_owned()),
            ("real-2".to_owned(), "pseudo-2".to_owned())
        ])
    );
}

/// Within a group a real value and a pseudo value are each used once.
pub async fn privacy_duplicates_are_refused_per_group(st: &Stores) {
    let g = group(st).await;
    update_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.new_pair("r", "p").await })
    })
    .await
    .unwrap();
    let r = update_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.new_pair("r", "other").await })
    })
    .await;
    assert!(
        matches!(r, Err(Error::DuplicateRealValue { ref real, .. }) if real == "r"),
        "{r:?}"
    );
    let r = update_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.new_pair("other", "p").await })
    })
    .await;
    assert!(
        matches!(r, Err(Error::DuplicatePseudoValue { ref pseudo, .. }) if pseudo == "p"),
        "{r:?}"
    );
    let r = update_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.new_pair("", "x").await })
    })
    .await;
    assert!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
    let all = view_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.fetch_all_pairs().await })
    })
    .await
    .unwrap();
    assert_eq!(all.len(), 1);
}

/// The same real value may be mapped in two groups, each its own way.
pub async fn the_same_real_value_may_live_in_two_groups(st: &Stores) {
    let (g1, g2) = (group(st).await, group(st).await);
    update_privacy(&*st.firewall, g1, |tx| {
        Box::pin(async move { tx.new_pair("real", "p1").await })
    })
    .await
    .unwrap();
    update_privacy(&*st.firewall, g2, |tx| {
        Box::pin(async move { tx.new_pair("real", "p2").await })
    })
    .await
    .unwrap();
    let p1 = view_privacy(&*st.firewall, g1, |tx| {
        Box::pin(async move { tx.real_to_pseudo("real").await })
    })
    .await
    .unwrap();
    let p2 = view_privacy(&*st.firewall, g2, |tx| {
        Box::pin(async move { tx.real_to_pseudo("real").await })
    })
    .await
    .unwrap();
    assert_eq!((p1.as_str(), p2.as_str()), ("p1", "p2"));
    let r = view_privacy(&*st.firewall, g2, |tx| {
        Box::pin(async move { tx.pseudo_to_real("p1").await })
    })
    .await;
    assert!(matches!(r, Err(Error::NoSuchKey { .. })), "{r:?}");
}

/// Every privacy call on a group that does not exist fails.
pub async fn privacy_calls_on_an_unknown_group_fail(st: &Stores) {
    let g = SessionId([0xEE; 4]);
    let fw = &*st.firewall;
    let unknown = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::UnknownGroup { group }) if group == g),
            "{r:?}"
        )
    };
    unknown(
        update_privacy(fw, g, |tx| {
            Box::pin(async move { tx.new_pair("r", "p").await })
        })
        .await,
    );
    unknown(
        view_privacy(fw, g, |tx| {
            Box::pin(async move { tx.pseudo_to_real("p").await.map(drop) })
        })
        .await,
    );
    unknown(
        view_privacy(fw, g, |tx| {
            Box::pin(async move { tx.real_to_pseudo("r").await.map(drop) })
        })
        .await,
    );
    unknown(
        view_privacy(fw, g, |tx| {
            Box::pin(async move { tx.fetch_all_pairs().await.map(drop) })
        })
        .await,
    );
}

/// Looking up a value the group does not have is `NoSuchKey`.
pub async fn a_missing_privacy_value_is_no_such_key(st: &Stores) {
    let g = group(st).await;
    let r = view_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.pseudo_to_real("nope").await })
    })
    .await;
    assert!(
        matches!(r, Err(Error::NoSuchKey { ref key, .. }) if key == "nope"),
        "{r:?}"
    );
    let r = view_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.real_to_pseudo("nope").await })
    })
    .await;
    assert!(matches!(r, Err(Error::NoSuchKey { .. })), "{r:?}");
}

/// When the closure fails, none of its pairs remain.
pub async fn a_failing_privacy_update_rolls_back(st: &Stores) {
    let g = group(st).await;
    let r: Result<(), Error> = update_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move {
            tx.new_pair("r1", "p1").await?;
            tx.new_pair("r2", "p2").await?;
            tx.new_pair("r1", "p3").await
        })
    })
    .await;
    assert!(matches!(r, Err(Error::DuplicateRealValue { .. })));
    let all = view_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move { tx.fetch_all_pairs().await })
    })
    .await
    .unwrap();
    assert!(all.is_empty(), "{all:?}");
}

/// The listings show every entry of every namespace and every pair, in
/// their canonical order; deleted entries are gone from them.
pub async fn listings_show_every_entry_and_pair_in_order(st: &Stores) {
    assert!(st.firewall.kv_entries().await.unwrap().is_empty());
    let g = group(st).await;
    set(
        st,
        &Namespace::new("r2", g, "feat"),
        Scope::LocalTemp,
        "k2",
        b"4",
    )
    .await;
    set(st, &Namespace::new("r1", g, ""), Scope::Local, "k1", b"2").await;
    set(st, &Namespace::new("r1", g, ""), Scope::Global, "k1", b"").await;
    set(
        st,
        &Namespace::new("r1", g, ""),
        Scope::Global,
        "gone",
        b"x",
    )
    .await;
    update_kv(&*st.firewall, Namespace::new("r1", g, ""), |tx| {
        Box::pin(async move { tx.del(Scope::Global, "gone").await })
    })
    .await
    .unwrap();
    let entry = |perm,
                 rule: &str,
                 group: Option<SessionId>,
                 feature: Option<&str>,
                 key: &str,
                 value: &[u8]| KvEntry {
        perm,
        rule: rule.into(),
        group,
        feature: feature.map(str::to_owned),
        key: key.into(),
        value: value.to_vec(),
    };
    assert_eq!(
        st.firewall.kv_entries().await.unwrap(),
        vec![
            entry(false, "r2", Some(g), Some("feat"), "k2", b"4"),
            entry(true, "r1", None, None, "k1", b""),
            entry(true, "r1", Some(g), None, "k1", b"2"),
        ]
    );
    update_privacy(&*st.firewall, g, |tx| {
        Box::pin(async move {
            tx.new_pair("b-real", "p1").await?;
            tx.new_pair("a-real", "p2").await
        })
    })
    .await
    .unwrap();
    let pair = |real: &str, pseudo: &str| PrivacyPair {
        group: g,
        real: real.into(),
        pseudo: pseudo.into(),
    };
    assert_eq!(
        st.firewall.privacy_pairs().await.unwrap(),
        vec![pair("a-real", "p2"), pair("b-real", "p1")]
    );
}

fn is_invalid<T: std::fmt::Debug>(r: crate::Result<T>, want: &str) {
    match r {
        Err(crate::Error::InvalidInput { field, .. }) => assert_eq!(field, want),
        other => panic!("expected InvalidInput on {want}, got {other:?}"),
    }
}

/// The NUL character is refused in rule and feature names, keys and privacy
/// values, naming the field, before any backend sees it.
pub async fn text_with_nul_is_refused_naming_the_field(st: &Stores) {
    let g = group(st).await;
    let fw = &*st.firewall;
    is_invalid(
        update_kv(fw, Namespace::new("ru\0le", g, ""), |tx| {
            Box::pin(async move { tx.set(Scope::Global, "k", b"v").await })
        })
        .await,
        "rule",
    );
    is_invalid(
        update_kv(fw, Namespace::new("rule", g, "fe\0at"), |tx| {
            Box::pin(async move { tx.set(Scope::Local, "k", b"v").await })
        })
        .await,
        "feature",
    );
    for scope in [Scope::Global, Scope::Local] {
        is_invalid(
            update_kv(fw, Namespace::new("rule", g, ""), |tx| {
                Box::pin(async move { tx.set(scope, "k\0", b"v").await })
            })
            .await,
            "key",
        );
        is_invalid(
            view_kv(fw, Namespace::new("rule", g, ""), |tx| {
                Box::pin(async move { tx.get(scope, "k\0").await })
            })
            .await,
            "key",
        );
    }
    is_invalid(
        update_privacy(fw, g, |tx| {
            Box::pin(async move { tx.new_pair("r\0", "p").await })
        })
        .await,
        "real",
    );
    is_invalid(
        update_privacy(fw, g, |tx| {
            Box::pin(async move { tx.new_pair("r", "p\0").await })
        })
        .await,
        "pseudo",
    );
    is_invalid(
        view_privacy(fw, g, |tx| {
            Box::pin(async move { tx.pseudo_to_real("p\0").await })
        })
        .await,
        "pseudo",
    );
    assert!(fw.kv_entries().await.unwrap().is_empty());
    assert!(fw.privacy_pairs().await.unwrap().is_empty());
}

/// Rule names, keys and privacy values sit in unique indexes: at most
/// `store_contract::MAX_KEY_BYTES`, the same on every backend.
pub async fn keys_longer_than_the_contract_allows_are_refused(st: &Stores) {
    let g = group(st).await;
    let fw = &*st.firewall;
    let max = store_contract::MAX_KEY_BYTES;
    let (longest, over) = ("k".repeat(max), "k".repeat(max + 1));
    update_kv(
        fw,
        Namespace::new(longest.clone(), g, longest.clone()),
        |tx| {
            let l = longest.clone();
            Box::pin(async move { tx.set(Scope::Local, &l, b"v").await })
        },
    )
    .await
    .unwrap();
    is_invalid(
        update_kv(fw, Namespace::new(over.clone(), g, ""), |tx| {
            Box::pin(async move { tx.set(Scope::Global, "k", b"v").await })
        })
        .await,
        "rule",
    );
    is_invalid(
        update_kv(fw, Namespace::new("rule", g, ""), |tx| {
            let o = over.clone();
            Box::pin(async move { tx.set(Scope::Global, &o, b"v").await })
        })
        .await,
        "key",
    );
    is_invalid(
        update_privacy(fw, g, |tx| {
            let o = over.clone();
            Box::pin(async move { tx.new_pair(&o, "p").await })
        })
        .await,
        "real",
    );
    update_privacy(fw, g, |tx| {
        let l = longest.clone();
        Box::pin(async move { tx.new_pair(&l, &l).await })
    })
    .await
    .unwrap();
}

/// A privacy value names something: empty ones are refused, naming which.
pub async fn empty_privacy_values_are_refused(st: &Stores) {
    let g = group(st).await;
    is_invalid(
        update_privacy(&*st.firewall, g, |tx| {
            Box::pin(async move { tx.new_pair("", "p").await })
        })
        .await,
        "real",
    );
    is_invalid(
        update_privacy(&*st.firewall, g, |tx| {
            Box::pin(async move { tx.new_pair("r", "").await })
        })
        .await,
        "pseudo",
    );
}

/// An entry set under a group whose session is deleted at the same moment
/// is either written (and then removed with the group) or refused as an
/// unknown group: never a backend error (a foreign key violation on
/// PostgreSQL, which an online migration's concurrent test met).
pub async fn setting_an_entry_races_removing_its_group(st: &Stores) {
    for i in 0..24 {
        let g = group(st).await;
        let ns = Namespace::new("race", g, "");
        let key = format!("k{i}");
        let write = async {
            let mut tx = st
                .firewall
                .begin_kv(ns.clone(), crate::Mode::Update)
                .await?;
            tx.set(Scope::Local, &key, b"v").await?;
            tx.commit().await
        };
        let (written, removed) = tokio::join!(write, st.sessions.delete_reserved_session(g));
        assert!(
            matches!(written, Ok(()) | Err(Error::UnknownGroup { .. })),
            "{written:?}"
        );
        removed.unwrap();
    }
}

/// The same race for a privacy pair.
pub async fn adding_a_pair_races_removing_its_group(st: &Stores) {
    for i in 0..24 {
        let g = group(st).await;
        let write = async {
            let mut tx = st.firewall.begin_privacy(g, crate::Mode::Update).await?;
            tx.new_pair(&format!("real{i}"), &format!("pseudo{i}"))
                .await?;
            tx.commit().await
        };
        let (written, removed) = tokio::join!(write, st.sessions.delete_reserved_session(g));
        assert!(
            matches!(written, Ok(()) | Err(Error::UnknownGroup { .. })),
            "{written:?}"
        );
        removed.unwrap();
    }
}
