//! Property: any key-value firewall database (entries in every scope,
//! privacy pairs, groups whose sessions were deleted) migrates so that every
//! live entry and pair reads back equal and orphaned ones are skipped, on
//! both SQL backends.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use std::collections::BTreeMap;

use common::firewall::{Expect, run_case};
use proptest::prelude::*;
use store_firewall::{Namespace, Scope, update_privacy};
use store_sessions::SessionId;
use testkit::sql::SqlFixture;

#[derive(Debug, Clone)]
struct Op {
    rule: u8,
    scope: Scope,
    group: usize,
    feature: u8,
    key: u8,
    value: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Db {
    groups: usize,
    deleted: Vec<bool>,
    ops: Vec<Op>,
    pairs: Vec<(usize, u8, u8)>,
}

fn db() -> impl Strategy<Value = Db> {
    (1usize..5).prop_flat_map(|groups| {
        let op = (
            0u8..3,
            prop_oneof![
                Just(Scope::Global),
                Just(Scope::GlobalTemp),
                Just(Scope::Local),
                Just(Scope::LocalTemp)
            ],
            0..groups,
            0u8..3,
            0u8..6,
            proptest::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(rule, scope, group, feature, key, value)| Op {
                rule,
                scope,
                group,
                feature,
                key,
                value,
            });
        (
            Just(groups),
            proptest::collection::vec(any::<bool>(), groups),
            proptest::collection::vec(op, 0..40),
            proptest::collection::vec((0..groups, 0u8..8, 0u8..8), 0..30),
        )
            .prop_map(|(groups, deleted, ops, pairs)| Db {
                groups,
                deleted,
                ops,
                pairs,
            })
    })
}

async fn check(fx: SqlFixture, spec: Db) {
    run_case(&fx, |f| async move {
        // Groups to be deleted are created first, as Reserved sessions that
        // `delete_reserved_sessions` removes; live ones are moved on.
        let mut ids = Vec::new();
        for _ in 0..spec.groups {
            ids.push(f.group().await);
        }
        let mut entries: BTreeMap<(Namespace, Scope, String), Vec<u8>> = BTreeMap::new();
        for op in &spec.ops {
            let feature = if op.feature == 0 {
                String::new()
            } else {
                format!("feature-{}", op.feature)
            };
            let ns = if op.scope.is_local() {
                Namespace::new(format!("rule-{}", op.rule), ids[op.group], feature)
            } else {
                Namespace::new(format!("rule-{}", op.rule), SessionId([0; 4]), "")
            };
            let key = format!("key-{}", op.key);
            f.set(&ns, op.scope, &key, &op.value).await;
            entries.insert((ns, op.scope, key), op.value.clone());
        }
        let mut pairs: BTreeMap<SessionId, BTreeMap<String, String>> = BTreeMap::new();
        for (g, real, pseudo) in &spec.pairs {
            let (real, pseudo) = (format!("real-{real}"), format!("pseudo-{pseudo}"));
            let added = update_privacy(&f.firewall, ids[*g], |tx| {
                let (r, p) = (real.clone(), pseudo.clone());
                Box::pin(async move { tx.new_pair(&r, &p).await })
            })
            .await;
            if added.is_ok() {
                pairs.entry(ids[*g]).or_default().insert(real, pseudo);
            }
        }
        for (i, id) in ids.iter().enumerate() {
            if !spec.deleted[i] {
                store_sessions::Store::shift_state(
                    &f.sessions,
                    *id,
                    store_sessions::SessionState::Created,
                )
                .await
                .unwrap();
            }
        }
        f.delete_sessions().await;
        let dead = |g: &SessionId| ids.iter().zip(&spec.deleted).any(|(id, d)| id == g && *d);
        Expect {
            entries: entries
                .into_iter()
                .filter(|((ns, scope, _), _)| !(scope.is_local() && dead(&ns.group)))
                .map(|((ns, scope, key), value)| (ns, scope, key, value))
                .collect(),
            pairs: pairs.into_iter().filter(|(g, _)| !dead(g)).collect(),
        }
    })
    .await;
}

fn run(backend: &'static str, cases: u32) {
    common::run_property(
        backend,
        "random_firewall_databases_read_back_equal",
        cases,
        db(),
        |fx, spec| async move {
            check(fx, spec).await;
            Ok(())
        },
    );
}

mod sqlite {
    #[test]
    fn random_firewall_databases_read_back_equal() {
        super::run("sqlite", 24);
    }
}

mod postgres {
    #[test]
    fn random_firewall_databases_read_back_equal() {
        super::run("postgres", 16);
    }
}
