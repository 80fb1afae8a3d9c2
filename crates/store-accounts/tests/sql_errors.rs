//! Database errors reach the caller as themselves on both SQL backends,
//! never disguised as a domain outcome.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use store_accounts::{Error, SqlStore, Store};
use testkit::sql::{SqlFixture, postgres, sqlite};

/// A failing id lookup is reported as the database error it is, not as "no
/// unused random id" after ten tries.
async fn a_failed_id_lookup_is_reported_as_itself(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    // Break the lookup: the accounts table is renamed away, so every query
    // of a new account fails in the database.
    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script("ALTER TABLE accounts RENAME TO accounts_elsewhere")
                .await
        })
    })
    .await
    .unwrap();
    let store = SqlStore::new(db);
    let err = store.new_account(1_000, None, "").await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert!(!err.to_string().contains("attempts"), "{err}");
}

testkit::backend_tests!(sqlite => sqlite;
    a_failed_id_lookup_is_reported_as_itself,
);

testkit::backend_tests!(postgres => postgres;
    a_failed_id_lookup_is_reported_as_itself,
);

/// A remove the server ends as a deadlock's victim succeeds when run again
/// (on PostgreSQL, where rows are locked one by one). The remove locks the
/// account and then, cascading, its payments; here another transaction
/// holds a payment and then asks for the account, as a write of a row that
/// references the account does. Before writes were run again, the remove
/// failed with "deadlock detected" (the online migration's concurrent test
/// met it beside writes of linked sessions).
#[tokio::test]
async fn postgres_a_remove_ended_by_a_deadlock_is_run_again() {
    use sea_query::{Alias, LockType, Query};
    use sqldb::{TxExt, TxMode};
    let name = concat!(module_path!(), "::postgres_remove_deadlock");
    let Some(fx) = postgres(name).await else {
        return;
    };
    let db = fx.open_migrated().await;
    let store = SqlStore::new(db.clone());
    let account = store.new_account(1_000, None, "").await.unwrap();
    let hash = store_accounts::Hash([7; 32]);
    store
        .upsert_account_payment(
            account.id,
            hash,
            10,
            store_accounts::PaymentStatus::InFlight,
            store_accounts::UpsertOptions::default(),
        )
        .await
        .unwrap();
    let lock = |table: &str, kind: LockType| {
        Query::select()
            .column(Alias::new("account_id"))
            .from(Alias::new(table))
            .lock(kind)
            .to_owned()
    };
    let lock_account = |kind: LockType| {
        Query::select()
            .column(Alias::new("id"))
            .from(Alias::new("accounts"))
            .lock(kind)
            .to_owned()
    };
    let mut other = db.begin(TxMode::Write).await.unwrap();
    other
        .query(&lock("account_payments", LockType::Update))
        .await
        .unwrap();
    let remove = tokio::spawn(async move { store.remove_account(account.id).await });
    // The remove waits for the payment; a moment later, the other
    // transaction asks for the account, and the remove, waiting longer,
    // is the one the server ends.
    testkit::sql::until_a_session_waits_for_a_lock(&db).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    other
        .query(&lock_account(LockType::KeyShare))
        .await
        .unwrap();
    other.commit().await.unwrap();
    remove.await.unwrap().unwrap();
    let store = SqlStore::new(db);
    let gone = store.account(account.id).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone}");
}

/// A backend failure says its kind, and whether running the call again may
/// succeed; a refusal of the call's input never is retryable.
#[test]
fn a_backend_error_says_whether_a_retry_may_succeed() {
    use sqldb::{DbError, ErrorKind};
    let busy = Error::from(DbError::new(
        "sqlite",
        ErrorKind::Retryable,
        "database is locked",
    ));
    assert_eq!(busy.backend_kind(), Some(ErrorKind::Retryable));
    assert!(busy.is_retryable(), "{busy}");
    let unique = Error::from(DbError::new(
        "postgres",
        ErrorKind::UniqueViolation,
        "duplicate",
    ));
    assert_eq!(unique.backend_kind(), Some(ErrorKind::UniqueViolation));
    assert!(!unique.is_retryable(), "{unique}");
    let refused = Error::InvalidInput {
        record: "account 00".into(),
        field: "label",
        reason: "too long".into(),
    };
    assert_eq!(refused.backend_kind(), None);
    assert!(!refused.is_retryable());
}
