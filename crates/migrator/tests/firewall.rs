//! The firewall migration on SQLite and PostgreSQL: the kv-store and
//! privacy cases LiT tests it with (docs/design.md §5.4, firewall), and
//! the strict layout checks.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use std::collections::BTreeMap;

use common::firewall::{Expect, run_case};
use common::proof::{refused, with_trigger};
use common::{Kv, Lcg, is_live};
use migrator::Error;
use store_firewall::{Namespace, Scope};
use store_sessions::SessionId;
use testkit::sql::{SqlFixture, postgres, sqlite};
use tombstone::{KvDb, KvOptions};

const RULE: &str = "test-rule";
const KEY: &str = "test-entry-key";
const VALUE: &[u8] = &[1, 2, 3];

async fn empty(fx: &SqlFixture) {
    let (r, _) = run_case(fx, |_| async { Expect::default() }).await;
    assert_eq!(r, migrator::FirewallReport::default());
}

async fn global_kv_entries(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let ns = Namespace::new(RULE, SessionId([0; 4]), "");
        f.set_temp_and_perm(&ns, false, KEY, VALUE, Some(&mut e))
            .await;
        e
    })
    .await;
}

async fn session_specific_kv_entries(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let ns = Namespace::new(RULE, f.group().await, "");
        f.set_temp_and_perm(&ns, true, KEY, VALUE, Some(&mut e))
            .await;
        e
    })
    .await;
}

async fn session_specific_kv_entries_deleted_session(fx: &SqlFixture) {
    let (r, _) = run_case(fx, |f| async move {
        let ns = Namespace::new(RULE, f.group().await, "");
        f.set_temp_and_perm(&ns, true, KEY, VALUE, None).await;
        f.delete_sessions().await;
        Expect::default()
    })
    .await;
    assert_eq!(r.kv_entries_skipped, 2);
}

async fn session_specific_kv_entries_deleted_and_existing_sessions(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let gone = Namespace::new(RULE, f.group().await, "");
        f.set_temp_and_perm(&gone, true, KEY, VALUE, None).await;
        f.delete_sessions().await;
        let live = Namespace::new("test-rule-2", f.group().await, "");
        f.set_temp_and_perm(&live, true, "test-entry-key-2", VALUE, Some(&mut e))
            .await;
        e
    })
    .await;
}

async fn feature_specific_kv_entries(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let ns = Namespace::new(RULE, f.group().await, "test-feature");
        f.set_temp_and_perm(&ns, true, KEY, VALUE, Some(&mut e))
            .await;
        e
    })
    .await;
}

async fn feature_specific_kv_entries_deleted_session(fx: &SqlFixture) {
    let (r, _) = run_case(fx, |f| async move {
        let ns = Namespace::new(RULE, f.group().await, "test-feature");
        f.set_temp_and_perm(&ns, true, KEY, VALUE, None).await;
        f.delete_sessions().await;
        Expect::default()
    })
    .await;
    assert_eq!(r.kv_entries_skipped, 2);
}

async fn feature_specific_kv_entries_deleted_and_existing_sessions(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let gone = Namespace::new(RULE, f.group().await, "test-feature");
        f.set_temp_and_perm(&gone, true, KEY, VALUE, None).await;
        f.delete_sessions().await;
        let live = Namespace::new("test-rule-2", f.group().await, "test-feature-2");
        f.set_temp_and_perm(&live, true, "test-entry-key-2", VALUE, Some(&mut e))
            .await;
        e
    })
    .await;
}

/// Global, group and feature entries for two groups, and empty values at
/// every level (nil and empty are the same here).
async fn all_kv_entry_combinations(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let g1 = f.group().await;
        f.set_temp_and_perm(
            &Namespace::new(RULE, g1, ""),
            false,
            KEY,
            VALUE,
            Some(&mut e),
        )
        .await;
        f.set_temp_and_perm(
            &Namespace::new(RULE, g1, ""),
            true,
            KEY,
            VALUE,
            Some(&mut e),
        )
        .await;
        f.set_temp_and_perm(
            &Namespace::new(RULE, g1, "test-feature"),
            true,
            KEY,
            VALUE,
            Some(&mut e),
        )
        .await;
        let g2 = f.group().await;
        for (feature, local) in [
            ("", false),
            ("", true),
            ("test-feature", true),
            ("test-feature-2", true),
        ] {
            f.set_temp_and_perm(
                &Namespace::new("test-rule-2", g2, feature),
                local,
                KEY,
                VALUE,
                Some(&mut e),
            )
            .await;
        }
        for key in ["test-entry-key-2", "test-entry-key-3", "test-entry-key-4"] {
            for (feature, local) in [("", false), ("", true), ("test-feature", true)] {
                f.set_temp_and_perm(
                    &Namespace::new(RULE, g1, feature),
                    local,
                    key,
                    &[],
                    Some(&mut e),
                )
                .await;
            }
        }
        e
    })
    .await;
}

/// A thousand entries across rules, scopes, groups and features.
async fn random_kv_entries(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let mut rng = Lcg(4_10);
        let mut rules = vec!["rule-0".to_owned()];
        let mut groups = vec![f.group().await];
        let mut features = vec!["feature-0".to_owned()];
        let mut written: BTreeMap<(Namespace, Scope, String), Vec<u8>> = BTreeMap::new();
        for i in 0..1000u64 {
            if rng.next().is_multiple_of(10) {
                rules.push(format!("rule-{i}"));
            }
            let rule = rules[(rng.next() % rules.len() as u64) as usize].clone();
            let global = rng.next().is_multiple_of(4);
            let perm = rng.next().is_multiple_of(2);
            let (group, feature) = if global {
                (SessionId([0; 4]), String::new())
            } else {
                if rng.next().is_multiple_of(4) {
                    groups.push(f.group().await);
                }
                let g = groups[(rng.next() % groups.len() as u64) as usize];
                let feature = if rng.next().is_multiple_of(2) {
                    if rng.next().is_multiple_of(4) {
                        features.push(format!("feature-{i}"));
                    }
                    features[(rng.next() % features.len() as u64) as usize].clone()
                } else {
                    String::new()
                };
                (g, feature)
            };
            let scope = match (global, perm) {
                (true, true) => Scope::Global,
                (true, false) => Scope::GlobalTemp,
                (false, true) => Scope::Local,
                (false, false) => Scope::LocalTemp,
            };
            let value: Vec<u8> = if rng.next().is_multiple_of(4) {
                vec![]
            } else {
                (0..rng.range(1, 100)).map(|_| rng.next() as u8).collect()
            };
            let key = format!("key-{}", rng.next() % 300);
            let ns = Namespace::new(rule, group, feature);
            f.set(&ns, scope, &key, &value).await;
            // A later write of the same key in the same store overwrites.
            written.insert((ns, scope, key), value);
        }
        e.entries = written
            .into_iter()
            .map(|((ns, scope, key), value)| (ns, scope, key, value))
            .collect();
        e
    })
    .await;
}

async fn pairs_case(fx: &SqlFixture, groups: usize, per_group: usize) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        for i in 0..groups {
            let g = f.group().await;
            for j in 0..per_group {
                // Real values repeat across groups.
                f.pair(g, &format!("real-{j}"), &format!("pseudo-{i}-{j}"))
                    .await;
                e.pairs
                    .entry(g)
                    .or_default()
                    .insert(format!("real-{j}"), format!("pseudo-{i}-{j}"));
            }
        }
        e
    })
    .await;
}

async fn one_session_and_privacy_pair(fx: &SqlFixture) {
    pairs_case(fx, 1, 1).await;
}

async fn one_session_with_multiple_privacy_pairs(fx: &SqlFixture) {
    pairs_case(fx, 1, 10).await;
}

async fn multiple_sessions_and_privacy_pairs(fx: &SqlFixture) {
    pairs_case(fx, 5, 10).await;
}

async fn deleted_session_with_privacy_pair(fx: &SqlFixture) {
    let (r, _) = run_case(fx, |f| async move {
        let g = f.group().await;
        f.pair(g, "real", "pseudo").await;
        f.delete_sessions().await;
        Expect::default()
    })
    .await;
    assert_eq!(r.privacy_pairs_skipped, 1);
}

async fn deleted_and_existing_sessions_with_privacy_pairs(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let gone = f.group().await;
        f.pair(gone, "real", "pseudo").await;
        f.delete_sessions().await;
        let live = f.group().await;
        f.pair(live, "real", "pseudo").await;
        e.pairs
            .entry(live)
            .or_default()
            .insert("real".into(), "pseudo".into());
        e
    })
    .await;
}

async fn random_privacy_pairs(fx: &SqlFixture) {
    run_case(fx, |f| async move {
        let mut e = Expect::default();
        let mut rng = Lcg(77);
        for _ in 0..10 {
            let g = f.group().await;
            for j in 0..rng.range(1, 21) {
                let (real, pseudo) = (
                    format!("r{}-{j}", rng.next() % 1000),
                    format!("p{:x}", rng.next()),
                );
                f.pair(g, &real, &pseudo).await;
                e.pairs.entry(g).or_default().insert(real, pseudo);
            }
        }
        e
    })
    .await;
}

/// Writes a raw entry into a key-value tree, as a broken or foreign
/// database would hold it, migrates, and expects a layout error naming
/// `where_`; nothing is kept and the KV database stays live.
async fn expect_layout_error(
    fx: &SqlFixture,
    tree: &str,
    key: Vec<u8>,
    value: Vec<u8>,
    where_: &str,
) {
    let kv = Kv::new();
    {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        db.tree(tree).unwrap().insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let db = fx.open().await;
    let err = migrator::migrate(&kv.path, &db, &migrator::Options::default(), None)
        .await
        .unwrap_err();
    // An offline run reads on past a record that does not decode and
    // refuses the source with every such record listed.
    assert!(
        matches!(&err.error, Error::DamagedSource { problems, .. }
            if problems.iter().any(|p| p.what.starts_with("unexpected layout") && p.what.contains(where_))),
        "{err}"
    );
    assert!(
        err.to_string().contains(where_),
        "{err} should name {where_}"
    );
    assert!(is_live(&kv.path));
}

fn value(bytes: &[u8]) -> Vec<u8> {
    kvcodec::encode(
        1,
        &store_firewall::kv::record::ValueRecordV1 {
            value: bytes.to_vec(),
        },
    )
    .unwrap()
}

fn privacy_value(s: &str) -> Vec<u8> {
    kvcodec::encode(
        1,
        &store_firewall::kv::record::PrivacyValueRecordV1 { value: s.into() },
    )
    .unwrap()
}

async fn an_unexpected_bucket_fails_naming_where(fx: &SqlFixture) {
    let key = store_firewall::path::encode(&[b"perm", b"rule", b"surprise"], b"k").unwrap();
    expect_layout_error(fx, "rules", key, value(b"v"), "perm/rule/surprise/k").await;
}

async fn a_value_directly_under_a_rule_fails_naming_where(fx: &SqlFixture) {
    let key = store_firewall::path::encode(&[b"temp", b"rule"], b"loose").unwrap();
    expect_layout_error(fx, "rules", key, value(b"v"), "temp/rule/loose").await;
}

async fn an_empty_privacy_value_fails_naming_where(fx: &SqlFixture) {
    let key = store_firewall::path::encode(&[&[1, 2, 3, 4], b"real-to-pseudo"], b"real").unwrap();
    expect_layout_error(
        fx,
        "privacy",
        key,
        privacy_value(""),
        "0x01020304/real-to-pseudo/real",
    )
    .await;
}

async fn privacy_maps_that_are_not_inverses_are_damage(fx: &SqlFixture) {
    let kv = Kv::new();
    let group = {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let s = store_sessions::KvStore::open(&db).unwrap();
        let g = store_sessions::Store::new_session(
            &s,
            store_sessions::NewSession::new(
                "s",
                store_sessions::SessionType::Autopilot,
                chrono::Utc::now() + chrono::Duration::days(1),
                "",
            ),
        )
        .await
        .unwrap()
        .id;
        let t = db.tree("privacy").unwrap();
        t.insert(
            store_firewall::path::encode(&[&g.0, b"real-to-pseudo"], b"a").unwrap(),
            privacy_value("x"),
        )
        .unwrap();
        t.insert(
            store_firewall::path::encode(&[&g.0, b"pseudo-to-real"], b"x").unwrap(),
            privacy_value("b"),
        )
        .unwrap();
        db.flush().unwrap();
        g
    };
    let db = fx.open().await;
    let err = migrator::migrate(&kv.path, &db, &migrator::Options::default(), None)
        .await
        .unwrap_err();
    // Counted with the source's other damage, as a record that does not
    // decode is.
    assert!(
        matches!(&err.error, Error::DamagedSource { problems, .. }
            if problems.iter().any(|p| p.what.contains(&group.to_string()) && p.what.contains("inverses"))),
        "{err}"
    );
    assert!(is_live(&kv.path));
    // Accepted, the group's pairs are left out and the rest migrates.
    let opts = migrator::Options {
        accept_damaged: true,
        ..migrator::Options::default()
    };
    let outcome = migrator::migrate(&kv.path, &db, &opts, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome.report.firewall.privacy_pairs, 0);
    assert_eq!(outcome.report.sessions.sessions, 1);
    assert!(
        outcome
            .accepted_damage
            .iter()
            .any(|p| p.what.contains("inverses")),
        "{:?}",
        outcome.accepted_damage
    );
}

/// Ten global entries of one rule, `k0` to `k9`, in a new key-value
/// database.
async fn ten_entries(kv: &Kv) {
    let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
    let firewall = store_firewall::KvStore::open(&db).unwrap();
    let ns = Namespace::new(RULE, SessionId([0; 4]), "");
    for i in 0..10 {
        let key = format!("k{i}");
        store_firewall::update_kv(&firewall, ns.clone(), |tx| {
            let key = key.clone();
            Box::pin(async move { tx.set(Scope::Global, &key, VALUE).await })
        })
        .await
        .unwrap();
    }
    db.flush().unwrap();
}

/// The refusal of a migration of ten entries in chunks of four into a
/// target with `trigger` (SQLite's, PostgreSQL's), which keeps no entry.
async fn refused_entries(fx: &SqlFixture, sqlite: &str, postgres: &str) -> String {
    let kv = Kv::new();
    ten_entries(&kv).await;
    let db = with_trigger(fx, sqlite.into(), postgres.into()).await;
    let err = refused(&kv, &db, 4).await;
    assert_eq!(common::count(&db, "kvstores").await, 0, "{err}");
    err
}

/// An entry the database stores other than it was written (a trigger
/// changes its value) is refused, naming the entry and the field, however
/// the copy proves the table (docs/design.md §5.7).
async fn an_entry_stored_altered_is_refused_and_named(fx: &SqlFixture) {
    let err = refused_entries(
        fx,
        "CREATE TRIGGER alter_one AFTER INSERT ON kvstores WHEN NEW.entry_key = 'k4' \
         BEGIN UPDATE kvstores SET value = x'ff' WHERE id = NEW.id; END;",
        "CREATE FUNCTION alter_one() RETURNS trigger AS $$ BEGIN \
         NEW.value := '\\xff'::bytea; RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER alter_one BEFORE INSERT ON kvstores FOR EACH ROW \
         WHEN (NEW.entry_key = 'k4') EXECUTE FUNCTION alter_one();",
    )
    .await;
    assert!(
        err.contains(r#"kv-store entry "k4" of rule "test-rule""#),
        "names the entry: {err}"
    );
    assert!(err.contains("value"), "names the field: {err}");
}

/// A row the copy did not write, under an id no chunk wrote (a trigger
/// adds it), is refused: the table holds more entries than were written.
async fn an_entry_the_copy_did_not_write_is_refused(fx: &SqlFixture) {
    let extra = "INSERT INTO kvstores (id, perm, rule_id, entry_key, value) \
                 VALUES (1000, NEW.perm, NEW.rule_id, 'extra', NEW.value);";
    let err = refused_entries(
        fx,
        &format!(
            "CREATE TRIGGER add_one AFTER INSERT ON kvstores WHEN NEW.entry_key = 'k3' \
             BEGIN {extra} END;"
        ),
        &format!(
            "CREATE FUNCTION add_one() RETURNS trigger AS $$ BEGIN \
             {extra} RETURN NULL; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER add_one AFTER INSERT ON kvstores FOR EACH ROW \
             WHEN (NEW.entry_key = 'k3') EXECUTE FUNCTION add_one();"
        ),
    )
    .await;
    assert!(err.contains("kv-store entries"), "names the table: {err}");
    assert!(
        err.contains("10 written, 11 read back"),
        "gives both counts: {err}"
    );
}

/// An entry the database does not keep (a trigger drops it) is refused,
/// naming the chunk of SQL ids that lacks it.
async fn an_entry_not_kept_is_refused_and_named(fx: &SqlFixture) {
    let err = refused_entries(
        fx,
        "CREATE TRIGGER drop_one AFTER INSERT ON kvstores WHEN NEW.entry_key = 'k6' \
         BEGIN DELETE FROM kvstores WHERE id = NEW.id; END;",
        "CREATE FUNCTION drop_one() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ \
         LANGUAGE plpgsql; \
         CREATE TRIGGER drop_one BEFORE INSERT ON kvstores FOR EACH ROW \
         WHEN (NEW.entry_key = 'k6') EXECUTE FUNCTION drop_one();",
    )
    .await;
    // k6 has the SQL id 7, in the second chunk of four.
    assert!(
        err.contains("kv-store entries 5..=8"),
        "names the chunk: {err}"
    );
    assert!(err.contains("4 written, 3 read back"), "says how: {err}");
}

/// A privacy pair the copy did not write (a trigger adds one to a group
/// the copy writes) is refused before anything is committed: the table
/// holds more pairs than were written.
async fn a_pair_the_copy_did_not_write_is_refused(fx: &SqlFixture) {
    let kv = Kv::new();
    {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let fill = common::firewall::Fill {
            sessions: store_sessions::KvStore::open(&db).unwrap(),
            firewall: store_firewall::KvStore::open(&db).unwrap(),
            db,
        };
        let group = fill.group().await;
        for i in 0..10 {
            fill.pair(group, &format!("r{i}"), &format!("p{i}")).await;
        }
        fill.db.flush().unwrap();
    }
    let extra = "INSERT INTO privacy_pairs (group_id, real_val, pseudo_val) \
                 VALUES (NEW.group_id, 'extra', 'extra-pseudo');";
    let db = with_trigger(
        fx,
        format!(
            "CREATE TRIGGER add_one AFTER INSERT ON privacy_pairs WHEN NEW.real_val = 'r3' \
             BEGIN {extra} END;"
        ),
        format!(
            "CREATE FUNCTION add_one() RETURNS trigger AS $$ BEGIN \
             {extra} RETURN NULL; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER add_one AFTER INSERT ON privacy_pairs FOR EACH ROW \
             WHEN (NEW.real_val = 'r3') EXECUTE FUNCTION add_one();"
        ),
    )
    .await;
    let err = refused(&kv, &db, 4).await;
    assert_eq!(common::count(&db, "privacy_pairs").await, 0, "{err}");
    assert!(err.contains("privacy pairs"), "names the table: {err}");
    assert!(
        err.contains("10 written, 11 read back"),
        "gives both counts: {err}"
    );
}

testkit::backend_tests!(sqlite => sqlite;
    empty, global_kv_entries, session_specific_kv_entries, session_specific_kv_entries_deleted_session,
    session_specific_kv_entries_deleted_and_existing_sessions, feature_specific_kv_entries,
    feature_specific_kv_entries_deleted_session, feature_specific_kv_entries_deleted_and_existing_sessions,
    all_kv_entry_combinations, random_kv_entries, one_session_and_privacy_pair,
    one_session_with_multiple_privacy_pairs, multiple_sessions_and_privacy_pairs,
    deleted_session_with_privacy_pair, deleted_and_existing_sessions_with_privacy_pairs, random_privacy_pairs,
    an_unexpected_bucket_fails_naming_where, a_value_directly_under_a_rule_fails_naming_where,
    an_empty_privacy_value_fails_naming_where, privacy_maps_that_are_not_inverses_are_damage,
    an_entry_stored_altered_is_refused_and_named, an_entry_the_copy_did_not_write_is_refused,
    an_entry_not_kept_is_refused_and_named, a_pair_the_copy_did_not_write_is_refused,
);

testkit::backend_tests!(postgres => postgres;
    empty, global_kv_entries, session_specific_kv_entries, session_specific_kv_entries_deleted_session,
    session_specific_kv_entries_deleted_and_existing_sessions, feature_specific_kv_entries,
    feature_specific_kv_entries_deleted_session, feature_specific_kv_entries_deleted_and_existing_sessions,
    all_kv_entry_combinations, random_kv_entries, one_session_and_privacy_pair,
    one_session_with_multiple_privacy_pairs, multiple_sessions_and_privacy_pairs,
    deleted_session_with_privacy_pair, deleted_and_existing_sessions_with_privacy_pairs, random_privacy_pairs,
    an_unexpected_bucket_fails_naming_where, a_value_directly_under_a_rule_fails_naming_where,
    an_empty_privacy_value_fails_naming_where, privacy_maps_that_are_not_inverses_are_damage,
    an_entry_stored_altered_is_refused_and_named, an_entry_the_copy_did_not_write_is_refused,
    an_entry_not_kept_is_refused_and_named, a_pair_the_copy_did_not_write_is_refused,
);
