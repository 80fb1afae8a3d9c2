//! A kv-store or privacy transaction that PostgreSQL ends for its timing
//! is run again by `update_kv` and `update_privacy`, as every other store
//! call is (docs/design.md §4.5).
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sea_query::{Alias, Expr, ExprTrait, LockType, Query};
use sqldb::{TxExt, TxMode};
use store_firewall::{Namespace, Scope, SqlStore, update_kv, view_kv};
use store_sessions::SessionId;
use testkit::sql::postgres;

/// Locks the global entry `key` against writes.
fn lock_entry(key: &str) -> sea_query::SelectStatement {
    Query::select()
        .column(Alias::new("id"))
        .from(Alias::new("kvstores"))
        .and_where(Expr::col(Alias::new("entry_key")).eq(key))
        .lock(LockType::Update)
        .to_owned()
}

/// The rule's closure writes `a` and then `b`, while another transaction
/// holds `b` and then asks for `a`: the server ends the closure's
/// transaction (it waited first), and `update_kv` runs it again, whole.
#[tokio::test]
async fn postgres_a_kv_update_ended_by_a_deadlock_is_run_again() {
    let name = concat!(module_path!(), "::postgres_kv_deadlock");
    let Some(fx) = postgres(name).await else {
        return;
    };
    let db = fx.open_migrated().await;
    let store = Arc::new(SqlStore::new(db.clone()));
    let ns = Namespace::new("rule", SessionId([0; 4]), "");
    update_kv(&*store, ns.clone(), |tx| {
        Box::pin(async move {
            tx.set(Scope::Global, "a", b"0").await?;
            tx.set(Scope::Global, "b", b"0").await
        })
    })
    .await
    .unwrap();
    let mut other = db.begin(TxMode::Write).await.unwrap();
    other.query(&lock_entry("b")).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let (took, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let update = {
        let (store, ns, runs) = (store.clone(), ns.clone(), runs.clone());
        tokio::spawn(async move {
            update_kv(&*store, ns, |tx| {
                let (runs, took) = (runs.clone(), took.clone());
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tx.set(Scope::Global, "a", b"1").await?;
                    let _ = took.send(());
                    tx.set(Scope::Global, "b", b"1").await
                })
            })
            .await
        })
    };
    taken.recv().await.unwrap();
    testkit::sql::until_a_session_waits_for_a_lock(&db).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    other.query(&lock_entry("a")).await.unwrap();
    other.commit().await.unwrap();
    update.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "run twice, once ended");
    let values = view_kv(&*store, ns, |tx| {
        Box::pin(async move {
            Ok((
                tx.get(Scope::Global, "a").await?,
                tx.get(Scope::Global, "b").await?,
            ))
        })
    })
    .await
    .unwrap();
    assert_eq!(values, (Some(b"1".to_vec()), Some(b"1".to_vec())));
}
