//! Shared helpers of the firewall migration tests.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use sqldb::Db;
use store_firewall::{Namespace, Scope, update_kv, update_privacy, view_kv, view_privacy};
use store_sessions::{NewSession, SessionId, SessionType, Store as _};
use testkit::sql::SqlFixture;
use tombstone::{KvDb, KvOptions};

use super::Kv;

/// What a case expects in SQL after the migration.
#[derive(Debug, Default)]
pub(crate) struct Expect {
    /// Live entries: namespace, scope, key, value.
    pub(crate) entries: Vec<(Namespace, Scope, String, Vec<u8>)>,
    /// Live privacy maps by group.
    pub(crate) pairs: BTreeMap<SessionId, BTreeMap<String, String>>,
}

/// The key-value stores a case fills.
pub(crate) struct Fill {
    pub(crate) sessions: store_sessions::KvStore,
    pub(crate) firewall: store_firewall::KvStore,
    pub(crate) db: KvDb,
}

impl Fill {
    /// A new session group.
    pub(crate) async fn group(&self) -> SessionId {
        let n = NewSession::new(
            "s",
            SessionType::MacaroonAdmin,
            Utc::now() + Duration::hours(24),
            "foo.bar.baz:1234",
        );
        self.sessions.new_session(n).await.unwrap().id
    }

    /// Deletes every session (as LiT's "deleted session"), leaving
    /// the firewall data of their groups orphaned.
    pub(crate) async fn delete_sessions(&self) {
        self.sessions.delete_reserved_sessions().await.unwrap();
    }

    pub(crate) async fn set(&self, ns: &Namespace, scope: Scope, key: &str, value: &[u8]) {
        let (key, value) = (key.to_owned(), value.to_vec());
        update_kv(&self.firewall, ns.clone(), |tx| {
            let (key, value) = (key.clone(), value.clone());
            Box::pin(async move { tx.set(scope, &key, &value).await })
        })
        .await
        .unwrap();
    }

    /// The same entry into the temporary and the permanent store.
    pub(crate) async fn set_temp_and_perm(
        &self,
        ns: &Namespace,
        local: bool,
        key: &str,
        value: &[u8],
        expect: Option<&mut Expect>,
    ) {
        let scopes = if local {
            [Scope::Local, Scope::LocalTemp]
        } else {
            [Scope::Global, Scope::GlobalTemp]
        };
        for scope in scopes {
            self.set(ns, scope, key, value).await;
        }
        if let Some(e) = expect {
            for scope in scopes {
                e.entries
                    .push((ns.clone(), scope, key.to_owned(), value.to_vec()));
            }
        }
    }

    pub(crate) async fn pair(&self, group: SessionId, real: &str, pseudo: &str) {
        let (real, pseudo) = (real.to_owned(), pseudo.to_owned());
        update_privacy(&self.firewall, group, |tx| {
            let (real, pseudo) = (real.clone(), pseudo.clone());
            Box::pin(async move { tx.new_pair(&real, &pseudo).await })
        })
        .await
        .unwrap();
    }
}

/// Fills a key-value database, migrates it and checks the SQL side.
pub(crate) async fn run_case<F, Fut>(fx: &SqlFixture, fill: F) -> (migrator::FirewallReport, Db)
where
    F: FnOnce(Fill) -> Fut,
    Fut: std::future::Future<Output = Expect>,
{
    let kv = Kv::new();
    let expect = {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let f = Fill {
            sessions: store_sessions::KvStore::open(&db).unwrap(),
            firewall: store_firewall::KvStore::open(&db).unwrap(),
            db: db.clone(),
        };
        fill(f).await
    };
    let db = fx.open().await;
    let outcome = migrator::migrate(
        &kv.path,
        &db,
        &migrator::Options {
            chunk_size: 5,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let report = outcome.report.firewall;
    check(&db, &expect).await;
    assert_eq!(report.kv_entries, expect.entries.len() as u64);
    assert_eq!(
        report.privacy_pairs,
        expect.pairs.values().map(|m| m.len() as u64).sum::<u64>()
    );
    (report, db)
}

/// Every expected entry and pair reads back through the SQL store, and
/// nothing else is there.
pub(crate) async fn check(db: &Db, expect: &Expect) {
    let sql = store_firewall::SqlStore::new(db.clone());
    assert_eq!(
        super::count(db, "kvstores").await,
        expect.entries.len() as i64,
        "kv rows"
    );
    for (ns, scope, key, value) in &expect.entries {
        let (k, scope) = (key.clone(), *scope);
        let got = view_kv(&sql, ns.clone(), |tx| {
            Box::pin(async move { tx.get(scope, &k).await })
        })
        .await
        .unwrap();
        assert_eq!(
            got.as_deref(),
            Some(value.as_slice()),
            "{ns:?} {scope:?} {key}"
        );
    }
    for (group, pairs) in &expect.pairs {
        let got = view_privacy(&sql, *group, |tx| {
            Box::pin(async move { tx.fetch_all_pairs().await })
        })
        .await
        .unwrap();
        assert_eq!(&got, pairs, "group {group}");
    }
    let total: usize = expect.pairs.values().map(BTreeMap::len).sum();
    assert_eq!(
        super::count(db, "privacy_pairs").await,
        total as i64,
        "privacy pairs"
    );
}
