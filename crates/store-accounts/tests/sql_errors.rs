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
