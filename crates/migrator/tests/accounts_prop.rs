//! Property: any key-value accounts store migrates into SQL so that every
//! account reads back equal through the `Store` trait, on both SQL backends.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::{Kv, Snapshot};
use proptest::prelude::*;
use store_accounts::{
    Account, AccountId, AccountType, Hash, LastIndexes, PaymentEntry, PaymentStatus, SqlStore,
    Store,
};
use testkit::sql::SqlFixture;

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // 1970..2100, with nanoseconds, which the SQL side truncates.
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().unwrap())
}

fn payment() -> impl Strategy<Value = PaymentEntry> {
    (
        proptest::sample::select(PaymentStatus::ALL.to_vec()),
        0..=i64::MAX as u64,
    )
        .prop_map(|(status, full_amount_msat)| PaymentEntry {
            status,
            full_amount_msat,
        })
}

/// An account without id and label (made unique per store below).
fn account() -> impl Strategy<Value = Account> {
    (
        0..=i64::MAX as u64,
        any::<i64>(),
        time(),
        proptest::option::of(time()),
        proptest::collection::btree_set(any::<[u8; 32]>().prop_map(Hash), 0..200),
        proptest::collection::btree_map(any::<[u8; 32]>().prop_map(Hash), payment(), 0..200),
        any::<bool>(),
    )
        .prop_map(
            |(initial, current, last_update, expiration, invoices, payments, labelled)| Account {
                id: AccountId([0; 8]),
                account_type: AccountType::InitialBalance,
                initial_balance_msat: initial,
                current_balance_msat: current,
                last_update,
                expiration,
                label: if labelled {
                    "label".into()
                } else {
                    String::new()
                },
                invoices,
                payments,
            },
        )
}

fn store() -> impl Strategy<Value = (Vec<Account>, Option<LastIndexes>)> {
    (
        proptest::collection::btree_map(any::<[u8; 8]>(), account(), 0..8),
        proptest::option::of((0..=i64::MAX as u64, 0..=i64::MAX as u64)),
    )
        .prop_map(|(by_id, idx)| {
            let accounts = by_id
                .into_iter()
                .enumerate()
                .map(|(i, (id, a))| Account {
                    id: AccountId(id),
                    label: if a.label.is_empty() {
                        String::new()
                    } else {
                        format!("{}-{i} ünïcode", a.label)
                    },
                    ..a
                })
                .collect();
            (
                accounts,
                idx.map(|(add_index, settle_index)| LastIndexes {
                    add_index,
                    settle_index,
                }),
            )
        })
}

async fn check(
    fx: SqlFixture,
    accounts: Vec<Account>,
    idx: Option<LastIndexes>,
) -> Result<(), TestCaseError> {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        for a in accounts {
            s.import_accounts(vec![a]).await.unwrap();
        }
        if let Some(i) = idx {
            s.store_last_indexes(i).await.unwrap();
        }
    })
    .await;
    let expected = kv.snapshot().await.normalised();
    let db = fx.open().await;
    migrator::migrate(
        &kv.path,
        &db,
        &migrator::Options {
            chunk_size: 3,
            ..Default::default()
        },
        None,
    )
    .await
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let sql = SqlStore::new(db);
    prop_assert_eq!(Snapshot::of(&sql).await, expected.clone());
    for a in &expected.accounts {
        prop_assert_eq!(&sql.account(a.id).await.unwrap(), a);
    }
    Ok(())
}

fn run(backend: &'static str, cases: u32) {
    common::run_property(
        backend,
        "random_account_stores_read_back_equal",
        cases,
        store(),
        |fx, (accounts, idx)| check(fx, accounts, idx),
    );
}

mod sqlite {
    #[test]
    fn random_account_stores_read_back_equal() {
        super::run("sqlite", 24);
    }
}

mod postgres {
    #[test]
    fn random_account_stores_read_back_equal() {
        super::run("postgres", 16);
    }
}
