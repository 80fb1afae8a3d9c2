//! The accounts store's conformance suite: one small async function per
//! behaviour, run against every backend over `&dyn Store`.
//!
//! Each function expects an empty store and writes to it freely: never run
//! it against data you care about. Not a stable API; it changes with the
//! store's contract. [`conformance_tests!`](crate::conformance_tests)
//! generates one test per function for a backend.
#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed expectation panics"
)]

use chrono::{Duration, Utc};

use crate::types::{
    AccountId, AccountUpdate, Hash, LastIndexes, PaymentEntry, PaymentStatus, UpsertOptions,
};
use crate::{Error, Store};

/// Generates `#[tokio::test]`s for every conformance function, in a module
/// named after the backend. `$fixture` is an async function taking the test
/// name and returning `Option<F>` where `&F` derefs to `&dyn Store`.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident => $fixture:path) => {
        testkit::backend_tests!($backend => $fixture, suite = store_accounts::conformance;
            new_account_starts_with_its_balance_and_no_history,
            unknown_accounts_are_not_found_by_every_method,
            accounts_lists_every_account_by_id,
            plain_short_hex_and_non_hex_labels_are_allowed,
            sixteen_hex_character_labels_are_refused_in_either_case,
            duplicate_labels_are_refused,
            renaming_an_account_to_its_own_label_is_allowed,
            update_changes_only_the_given_fields_and_bumps_last_update,
            expiry_none_set_and_cleared,
            adding_a_known_invoice_changes_nothing,
            credit_and_debit_change_the_balance,
            debit_below_zero_is_refused_and_changes_nothing,
            amounts_above_i64_max_are_refused,
            a_negative_balance_round_trips,
            upsert_inserts_then_overwrites_and_reports_known,
            upsert_err_if_already_succeeded,
            upsert_err_if_already_pending,
            upsert_use_pending_amount,
            upsert_err_if_unknown,
            upsert_debit_account,
            delete_payment_removes_it_once,
            payments_page_in_hash_order,
            remove_account_removes_it,
            last_indexes_missing_is_an_error,
            store_last_indexes_replaces_both,
            concurrent_credits_and_debits_lose_no_update,
            text_with_nul_is_refused_naming_the_field,
            keys_longer_than_the_contract_allows_are_refused,
            a_leap_second_expiry_reads_back_as_the_microsecond_before,
            hostile_but_valid_text_round_trips,
        );
    };
}

fn h(n: u8) -> Hash {
    Hash([n; 32])
}

fn missing() -> AccountId {
    AccountId([0xEE; 8])
}

/// A fresh account has its balance as initial and current balance, no
/// invoices, no payments, and a `last_update` of about now.
pub async fn new_account_starts_with_its_balance_and_no_history(store: &dyn Store) {
    let before = Utc::now() - Duration::seconds(1);
    let a = store.new_account(5_000, None, "alice").await.unwrap();
    assert_eq!(
        (a.initial_balance_msat, a.current_balance_msat),
        (5_000, 5_000)
    );
    assert_eq!(a.label, "alice");
    assert!(a.invoices.is_empty() && a.payments.is_empty());
    assert_eq!(a.expiration, None);
    assert!(a.last_update >= before && a.last_update <= Utc::now() + Duration::seconds(1));
    assert_eq!(store.account(a.id).await.unwrap(), a);
}

/// Every method that takes an account id reports a missing one as
/// [`Error::NotFound`].
pub async fn unknown_accounts_are_not_found_by_every_method(store: &dyn Store) {
    let id = missing();
    let nf = |r: Result<(), Error>, what: &str| {
        assert!(
            matches!(r, Err(Error::NotFound { id: got }) if got == id),
            "{what}: {r:?}"
        );
    };
    nf(store.account(id).await.map(drop), "account");
    nf(
        store.update_account(id, AccountUpdate::default()).await,
        "update_account",
    );
    nf(
        store.add_account_invoice(id, h(1)).await,
        "add_account_invoice",
    );
    nf(store.credit_account(id, 1).await, "credit_account");
    nf(store.debit_account(id, 1).await, "debit_account");
    nf(
        store
            .upsert_account_payment(
                id,
                h(1),
                1,
                PaymentStatus::InFlight,
                UpsertOptions::default(),
            )
            .await
            .map(drop),
        "upsert_account_payment",
    );
    nf(
        store.delete_account_payment(id, h(1)).await,
        "delete_account_payment",
    );
    nf(
        store.list_account_payments(id, 0, 10).await.map(drop),
        "list_account_payments",
    );
    nf(
        store.count_account_payments(id).await.map(drop),
        "count_account_payments",
    );
    nf(store.remove_account(id).await, "remove_account");
}

/// `accounts` returns every account, ordered by id.
pub async fn accounts_lists_every_account_by_id(store: &dyn Store) {
    assert!(store.accounts().await.unwrap().is_empty());
    let mut made = Vec::new();
    for i in 0..6 {
        made.push(
            store
                .new_account(i * 10, None, &format!("acct-{i}"))
                .await
                .unwrap(),
        );
    }
    store.add_account_invoice(made[2].id, h(9)).await.unwrap();
    made[2] = store.account(made[2].id).await.unwrap();
    made.sort_by_key(|a| a.id);
    assert_eq!(store.accounts().await.unwrap(), made);
}

/// Empty, plain text, short hex and 16 non-hex characters are all fine.
pub async fn plain_short_hex_and_non_hex_labels_are_allowed(store: &dyn Store) {
    for label in [
        "",
        "plain text",
        "abcdef",
        "G011223344556677",
        "0011223344556677ff",
    ] {
        let a = store.new_account(1, None, label).await.unwrap();
        assert_eq!(store.account(a.id).await.unwrap().label, label);
    }
    // Several accounts may have no label.
    store.new_account(1, None, "").await.unwrap();
}

/// A label of 16 hex characters could be mistaken for an account id.
pub async fn sixteen_hex_character_labels_are_refused_in_either_case(store: &dyn Store) {
    for label in ["0011223344556677", "AABBCCDDEEFF0011"] {
        let r = store.new_account(1, None, label).await;
        assert!(
            matches!(r, Err(Error::LabelNotAllowed { .. })),
            "{label}: {r:?}"
        );
    }
    let a = store.new_account(1, None, "ok").await.unwrap();
    let r = store
        .update_account(
            a.id,
            AccountUpdate {
                label: Some("aabbccddeeff0011".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(Error::LabelNotAllowed { .. })), "{r:?}");
    assert_eq!(store.account(a.id).await.unwrap().label, "ok");
}

/// No two accounts share a non-empty label, on creation or on rename.
pub async fn duplicate_labels_are_refused(store: &dyn Store) {
    let a = store.new_account(1, None, "taken").await.unwrap();
    let r = store.new_account(1, None, "taken").await;
    assert!(
        matches!(r, Err(Error::LabelAlreadyExists { ref label }) if label == "taken"),
        "{r:?}"
    );
    let b = store.new_account(1, None, "other").await.unwrap();
    let r = store
        .update_account(
            b.id,
            AccountUpdate {
                label: Some("taken".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(Error::LabelAlreadyExists { .. })), "{r:?}");
    // Clearing a label frees it.
    store
        .update_account(
            a.id,
            AccountUpdate {
                label: Some(String::new()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.account(a.id).await.unwrap().label, "");
    store.new_account(1, None, "taken").await.unwrap();
    assert_eq!(store.accounts().await.unwrap().len(), 3);
}

/// Renaming an account to the label it already has is not a duplicate.
pub async fn renaming_an_account_to_its_own_label_is_allowed(store: &dyn Store) {
    let a = store.new_account(1, None, "mine").await.unwrap();
    store
        .update_account(
            a.id,
            AccountUpdate {
                label: Some("mine".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.account(a.id).await.unwrap().label, "mine");
}

/// `update_account` sets only the fields given and always bumps `last_update`.
pub async fn update_changes_only_the_given_fields_and_bumps_last_update(store: &dyn Store) {
    let exp = Utc::now() + Duration::hours(1);
    let a = store.new_account(1_000, Some(exp), "u").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .update_account(a.id, AccountUpdate::default())
        .await
        .unwrap();
    let b = store.account(a.id).await.unwrap();
    assert!(
        b.last_update > a.last_update,
        "an empty update still bumps last_update"
    );
    assert_eq!(
        (b.current_balance_msat, b.expiration, &b.label),
        (a.current_balance_msat, a.expiration, &a.label)
    );

    store
        .update_account(
            a.id,
            AccountUpdate {
                balance_msat: Some(-7),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = store.account(a.id).await.unwrap();
    assert_eq!(c.current_balance_msat, -7, "the balance is set, not added");
    assert_eq!(c.initial_balance_msat, 1_000);
    assert_eq!((c.expiration, &c.label), (a.expiration, &a.label));
}

/// No expiry, an expiry, a changed expiry and a removed expiry all read back.
pub async fn expiry_none_set_and_cleared(store: &dyn Store) {
    let never = store.new_account(1, None, "").await.unwrap();
    assert_eq!(store.account(never.id).await.unwrap().expiration, None);
    assert!(!never.has_expired(Utc::now() + Duration::days(10_000)));

    let exp = Utc::now() + Duration::hours(1);
    let a = store.new_account(1, Some(exp), "").await.unwrap();
    let got = store.account(a.id).await.unwrap().expiration.unwrap();
    assert!(
        (got - exp).num_microseconds().unwrap().abs() < 1,
        "{got} vs {exp}"
    );

    let later = exp + Duration::minutes(1);
    store
        .update_account(
            a.id,
            AccountUpdate {
                expiration: Some(Some(later)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = store.account(a.id).await.unwrap().expiration.unwrap();
    assert!((got - later).num_microseconds().unwrap().abs() < 1);

    store
        .update_account(
            a.id,
            AccountUpdate {
                expiration: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.account(a.id).await.unwrap().expiration, None);
}

/// Adding an invoice twice keeps one and does not bump `last_update` again.
pub async fn adding_a_known_invoice_changes_nothing(store: &dyn Store) {
    let a = store.new_account(1, None, "").await.unwrap();
    store.add_account_invoice(a.id, h(1)).await.unwrap();
    let once = store.account(a.id).await.unwrap();
    assert!(once.last_update >= a.last_update);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.add_account_invoice(a.id, h(1)).await.unwrap();
    let twice = store.account(a.id).await.unwrap();
    assert_eq!(twice, once);
    store.add_account_invoice(a.id, h(2)).await.unwrap();
    let both = store.account(a.id).await.unwrap();
    assert_eq!(
        both.invoices.iter().copied().collect::<Vec<_>>(),
        vec![h(1), h(2)]
    );
    assert!(both.last_update > once.last_update);
}

/// Credits add, debits subtract, and a debit may reach exactly zero.
pub async fn credit_and_debit_change_the_balance(store: &dyn Store) {
    let a = store.new_account(100, None, "").await.unwrap();
    store.credit_account(a.id, 50).await.unwrap();
    assert_eq!(store.account(a.id).await.unwrap().current_balance_msat, 150);
    store.debit_account(a.id, 150).await.unwrap();
    let b = store.account(a.id).await.unwrap();
    assert_eq!((b.current_balance_msat, b.initial_balance_msat), (0, 100));
    assert!(b.last_update >= a.last_update);
}

/// A debit below zero fails and leaves the balance as it was.
pub async fn debit_below_zero_is_refused_and_changes_nothing(store: &dyn Store) {
    let a = store.new_account(100, None, "").await.unwrap();
    let r = store.debit_account(a.id, 101).await;
    assert!(
        matches!(
            r,
            Err(Error::WouldGoBelowZero {
                balance_msat: 100,
                amount_msat: 101,
                ..
            })
        ),
        "{r:?}"
    );
    let r = store.debit_account(a.id, u64::MAX).await;
    assert!(matches!(r, Err(Error::WouldGoBelowZero { .. })), "{r:?}");
    assert_eq!(store.account(a.id).await.unwrap(), a);
}

/// Amounts and indexes above `i64::MAX` are refused, never wrapped.
pub async fn amounts_above_i64_max_are_refused(store: &dyn Store) {
    let big = i64::MAX as u64 + 1;
    let r = store.new_account(big, None, "").await;
    assert!(
        matches!(
            r,
            Err(Error::InvalidInput {
                field: "balance_msat",
                ..
            })
        ),
        "{r:?}"
    );
    let a = store.new_account(10, None, "").await.unwrap();
    let r = store.credit_account(a.id, big).await;
    assert!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
    let r = store.credit_account(a.id, i64::MAX as u64).await;
    assert!(
        matches!(r, Err(Error::InvalidInput { .. })),
        "an overflowing sum: {r:?}"
    );
    let r = store
        .upsert_account_payment(
            a.id,
            h(1),
            big,
            PaymentStatus::InFlight,
            UpsertOptions::default(),
        )
        .await;
    assert!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
    let r = store
        .store_last_indexes(LastIndexes {
            add_index: big,
            settle_index: 0,
        })
        .await;
    assert!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
    assert_eq!(store.account(a.id).await.unwrap(), a);
    assert!(matches!(
        store.last_indexes().await,
        Err(Error::NoInvoiceIndexKnown)
    ));
}

/// A payment debited beyond the balance leaves it negative, and that reads back.
pub async fn a_negative_balance_round_trips(store: &dyn Store) {
    let a = store.new_account(100, None, "").await.unwrap();
    let opts = UpsertOptions {
        debit_account: true,
        ..Default::default()
    };
    store
        .upsert_account_payment(a.id, h(1), 250, PaymentStatus::Succeeded, opts)
        .await
        .unwrap();
    assert_eq!(
        store.account(a.id).await.unwrap().current_balance_msat,
        -150
    );
    assert_eq!(
        store.accounts().await.unwrap()[0].current_balance_msat,
        -150
    );
}

/// The first upsert inserts (not known), the second overwrites status and
/// amount (known).
pub async fn upsert_inserts_then_overwrites_and_reports_known(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    let o = UpsertOptions::default();
    assert!(
        !store
            .upsert_account_payment(a.id, h(1), 100, PaymentStatus::InFlight, o)
            .await
            .unwrap()
    );
    assert!(
        store
            .upsert_account_payment(a.id, h(1), 120, PaymentStatus::Succeeded, o)
            .await
            .unwrap()
    );
    let b = store.account(a.id).await.unwrap();
    assert_eq!(
        b.payments[&h(1)],
        PaymentEntry {
            status: PaymentStatus::Succeeded,
            full_amount_msat: 120
        }
    );
    assert_eq!(b.current_balance_msat, 1_000, "no debit without the option");
    for (i, status) in PaymentStatus::ALL.into_iter().enumerate() {
        store
            .upsert_account_payment(a.id, h(10 + i as u8), 5, status, o)
            .await
            .unwrap();
    }
    let c = store.account(a.id).await.unwrap();
    assert_eq!(c.payments.len(), 6);
    assert_eq!(c.payments[&h(14)].status, PaymentStatus::Initiated);
}

/// `err_if_already_succeeded` refuses only a succeeded payment.
pub async fn upsert_err_if_already_succeeded(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    let plain = UpsertOptions::default();
    let opts = UpsertOptions {
        err_if_already_succeeded: true,
        ..Default::default()
    };
    store
        .upsert_account_payment(a.id, h(1), 10, PaymentStatus::Succeeded, plain)
        .await
        .unwrap();
    store
        .upsert_account_payment(a.id, h(2), 10, PaymentStatus::InFlight, plain)
        .await
        .unwrap();
    let r = store
        .upsert_account_payment(a.id, h(1), 99, PaymentStatus::InFlight, opts)
        .await;
    assert!(
        matches!(r, Err(Error::AlreadySucceeded { hash, .. }) if hash == h(1)),
        "{r:?}"
    );
    assert!(
        store
            .upsert_account_payment(a.id, h(2), 20, PaymentStatus::Succeeded, opts)
            .await
            .unwrap()
    );
    let b = store.account(a.id).await.unwrap();
    assert_eq!(
        b.payments[&h(1)].full_amount_msat,
        10,
        "the refused upsert changed nothing"
    );
}

/// `err_if_already_pending` refuses a known payment unless it failed.
pub async fn upsert_err_if_already_pending(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    let plain = UpsertOptions::default();
    let opts = UpsertOptions {
        err_if_already_pending: true,
        ..Default::default()
    };
    store
        .upsert_account_payment(a.id, h(1), 10, PaymentStatus::InFlight, plain)
        .await
        .unwrap();
    store
        .upsert_account_payment(a.id, h(2), 10, PaymentStatus::Failed, plain)
        .await
        .unwrap();
    let r = store
        .upsert_account_payment(a.id, h(1), 10, PaymentStatus::InFlight, opts)
        .await;
    assert!(
        matches!(
            r,
            Err(Error::AlreadyPending {
                status: PaymentStatus::InFlight,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(
        store
            .upsert_account_payment(a.id, h(2), 10, PaymentStatus::InFlight, opts)
            .await
            .unwrap()
    );
    assert!(
        !store
            .upsert_account_payment(a.id, h(3), 10, PaymentStatus::InFlight, opts)
            .await
            .unwrap()
    );
}

/// `use_pending_amount` keeps a known payment's amount.
pub async fn upsert_use_pending_amount(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    let opts = UpsertOptions {
        use_pending_amount: true,
        ..Default::default()
    };
    store
        .upsert_account_payment(a.id, h(1), 300, PaymentStatus::InFlight, opts)
        .await
        .unwrap();
    store
        .upsert_account_payment(a.id, h(1), 5, PaymentStatus::Succeeded, opts)
        .await
        .unwrap();
    let b = store.account(a.id).await.unwrap();
    assert_eq!(
        b.payments[&h(1)],
        PaymentEntry {
            status: PaymentStatus::Succeeded,
            full_amount_msat: 300
        }
    );
}

/// `err_if_unknown` refuses a payment the account does not have.
pub async fn upsert_err_if_unknown(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    let opts = UpsertOptions {
        err_if_unknown: true,
        ..Default::default()
    };
    let r = store
        .upsert_account_payment(a.id, h(1), 1, PaymentStatus::Succeeded, opts)
        .await;
    assert!(
        matches!(r, Err(Error::PaymentNotAssociated { .. })),
        "{r:?}"
    );
    assert_eq!(store.account(a.id).await.unwrap(), a);
    store
        .upsert_account_payment(
            a.id,
            h(1),
            1,
            PaymentStatus::InFlight,
            UpsertOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        store
            .upsert_account_payment(a.id, h(1), 1, PaymentStatus::Succeeded, opts)
            .await
            .unwrap()
    );
}

/// `debit_account` subtracts the amount stored (the pending one when both
/// options are set).
pub async fn upsert_debit_account(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    let debit = UpsertOptions {
        debit_account: true,
        ..Default::default()
    };
    store
        .upsert_account_payment(a.id, h(1), 300, PaymentStatus::InFlight, debit)
        .await
        .unwrap();
    assert_eq!(store.account(a.id).await.unwrap().current_balance_msat, 700);
    let both = UpsertOptions {
        debit_account: true,
        use_pending_amount: true,
        ..Default::default()
    };
    store
        .upsert_account_payment(a.id, h(1), 1, PaymentStatus::Succeeded, both)
        .await
        .unwrap();
    assert_eq!(store.account(a.id).await.unwrap().current_balance_msat, 400);
}

/// Deleting a payment removes it; deleting it again is an error.
pub async fn delete_payment_removes_it_once(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    let o = UpsertOptions::default();
    store
        .upsert_account_payment(a.id, h(1), 1, PaymentStatus::Failed, o)
        .await
        .unwrap();
    store
        .upsert_account_payment(a.id, h(2), 1, PaymentStatus::Failed, o)
        .await
        .unwrap();
    store.delete_account_payment(a.id, h(1)).await.unwrap();
    let b = store.account(a.id).await.unwrap();
    assert_eq!(b.payments.keys().copied().collect::<Vec<_>>(), vec![h(2)]);
    let r = store.delete_account_payment(a.id, h(1)).await;
    assert!(
        matches!(r, Err(Error::PaymentNotAssociated { hash, .. }) if hash == h(1)),
        "{r:?}"
    );
}

/// Pages are ordered by hash; an offset past the end and a limit of 0 give
/// empty pages.
pub async fn payments_page_in_hash_order(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    let o = UpsertOptions::default();
    for n in [7u8, 3, 200, 1, 9, 128] {
        store
            .upsert_account_payment(a.id, h(n), u64::from(n), PaymentStatus::InFlight, o)
            .await
            .unwrap();
    }
    let hashes = |p: Vec<crate::AccountPayment>| p.into_iter().map(|p| p.hash).collect::<Vec<_>>();
    assert_eq!(store.count_account_payments(a.id).await.unwrap(), 6);
    assert_eq!(
        hashes(store.list_account_payments(a.id, 0, 100).await.unwrap()),
        vec![h(1), h(3), h(7), h(9), h(128), h(200)]
    );
    assert_eq!(
        hashes(store.list_account_payments(a.id, 2, 3).await.unwrap()),
        vec![h(7), h(9), h(128)]
    );
    assert_eq!(
        hashes(store.list_account_payments(a.id, 5, 3).await.unwrap()),
        vec![h(200)]
    );
    assert!(
        store
            .list_account_payments(a.id, 6, 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_account_payments(a.id, 100, 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_account_payments(a.id, 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let page = store.list_account_payments(a.id, 0, 1).await.unwrap();
    assert_eq!(
        page[0].entry,
        PaymentEntry {
            status: PaymentStatus::InFlight,
            full_amount_msat: 1
        }
    );
}

/// A removed account is gone; removing it again is an error.
pub async fn remove_account_removes_it(store: &dyn Store) {
    let a = store.new_account(1, None, "gone").await.unwrap();
    let b = store.new_account(1, None, "stays").await.unwrap();
    store.add_account_invoice(a.id, h(1)).await.unwrap();
    store.remove_account(a.id).await.unwrap();
    assert!(matches!(
        store.account(a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.remove_account(a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(store.accounts().await.unwrap(), vec![b]);
    // Its label is free again.
    store.new_account(1, None, "gone").await.unwrap();
}

/// Without stored indexes, `last_indexes` is an error.
pub async fn last_indexes_missing_is_an_error(store: &dyn Store) {
    assert!(matches!(
        store.last_indexes().await,
        Err(Error::NoInvoiceIndexKnown)
    ));
}

/// Storing indexes replaces both.
pub async fn store_last_indexes_replaces_both(store: &dyn Store) {
    store
        .store_last_indexes(LastIndexes {
            add_index: 1,
            settle_index: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        store.last_indexes().await.unwrap(),
        LastIndexes {
            add_index: 1,
            settle_index: 0
        }
    );
    let max = LastIndexes {
        add_index: i64::MAX as u64,
        settle_index: 2,
    };
    store.store_last_indexes(max).await.unwrap();
    assert_eq!(store.last_indexes().await.unwrap(), max);
}

/// 50 credits and debits at once on one account: none is lost.
pub async fn concurrent_credits_and_debits_lose_no_update(store: &dyn Store) {
    let a = store.new_account(1_000, None, "").await.unwrap();
    // `&dyn Store` is not 'static; the futures run concurrently on this task.
    let ops = (0..50).map(|i| async move {
        if i % 2 == 0 {
            store.credit_account(a.id, 10).await
        } else {
            store.debit_account(a.id, 5).await
        }
    });
    for r in futures::future::join_all(ops).await {
        r.unwrap();
    }
    assert_eq!(
        store.account(a.id).await.unwrap().current_balance_msat,
        1_000 + 25 * 10 - 25 * 5
    );
}

fn is_invalid(r: Result<impl std::fmt::Debug, Error>, want: &str) {
    match r {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, want),
        other => panic!("expected InvalidInput on {want}, got {other:?}"),
    }
}

/// The NUL character is refused in text on every backend, naming the field
/// (PostgreSQL cannot store it; the contract refuses it everywhere).
pub async fn text_with_nul_is_refused_naming_the_field(store: &dyn Store) {
    is_invalid(store.new_account(1, None, "a\0b").await, "label");
    let a = store.new_account(1, None, "").await.unwrap();
    is_invalid(
        store
            .update_account(
                a.id,
                AccountUpdate {
                    label: Some("x\0".into()),
                    ..AccountUpdate::default()
                },
            )
            .await,
        "label",
    );
    assert!(
        store.accounts().await.unwrap().len() == 1,
        "nothing written"
    );
}

/// A label is a unique key: at most `store_contract::MAX_KEY_BYTES`.
pub async fn keys_longer_than_the_contract_allows_are_refused(store: &dyn Store) {
    let max = store_contract::MAX_KEY_BYTES;
    let longest = "é".repeat(max / 2);
    let a = store.new_account(1, None, &longest).await.unwrap();
    assert_eq!(store.account(a.id).await.unwrap().label, longest);
    is_invalid(
        store.new_account(1, None, &"l".repeat(max + 1)).await,
        "label",
    );
}

/// A leap second is read as the last microsecond before it, the same on
/// every backend; years outside 1 to 9999 are refused.
pub async fn a_leap_second_expiry_reads_back_as_the_microsecond_before(store: &dyn Store) {
    use chrono::{TimeZone, Timelike};
    let leap = Utc
        .with_ymd_and_hms(2016, 12, 31, 23, 59, 59)
        .unwrap()
        .with_nanosecond(1_500_000_000)
        .unwrap();
    let a = store.new_account(1, Some(leap), "").await.unwrap();
    let want =
        Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap() + Duration::microseconds(999_999);
    assert_eq!(a.expiration, Some(want));
    assert_eq!(store.account(a.id).await.unwrap().expiration, Some(want));
    let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
    is_invalid(store.new_account(1, Some(far), "").await, "expiration");
}

/// Quotes, SQL fragments, right-to-left text, emoji and control characters
/// other than NUL are plain text everywhere.
pub async fn hostile_but_valid_text_round_trips(store: &dyn Store) {
    for label in [
        "'; DROP TABLE accounts; --",
        "\"quoted\" \\ back",
        "\u{202e}rtl\u{202c} مرحبا",
        "🦀🔑",
        "tab\tnew\nline\u{1}bell\u{7}",
    ] {
        let a = store.new_account(1, None, label).await.unwrap();
        assert_eq!(store.account(a.id).await.unwrap().label, label);
    }
}
