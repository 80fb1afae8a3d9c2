//! Golden bytes of every record kind the accounts store writes to sled.
//!
//! If one of these tests fails, a change made existing databases
//! unreadable: give the record a new version instead of editing it. The
//! files are written only when `NODESTORE_BLESS=1` and the file is missing;
//! an existing golden file is never rewritten.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use store_accounts::kv::{Entry, LAST_ADD_INDEX_KEY, LAST_SETTLE_INDEX_KEY, decode_entry, record};
use store_accounts::{Account, AccountId, AccountType, Hash, PaymentEntry, PaymentStatus};

fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/accounts")
        .join(name);
    if !path.exists() && std::env::var("NODESTORE_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{}\n", hex::encode(bytes))).unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    hex::decode(text.trim()).unwrap()
}

fn sample_account() -> Account {
    let id = AccountId([0x80, 1, 2, 3, 4, 5, 6, 7]);
    Account {
        id,
        account_type: AccountType::InitialBalance,
        initial_balance_msat: 100_000,
        current_balance_msat: -2_500,
        last_update: Utc.with_ymd_and_hms(2026, 11, 21, 6, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(123_456_789),
        expiration: Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()),
        label: "alice's account".into(),
        invoices: BTreeSet::from([Hash([1; 32]), Hash([2; 32])]),
        payments: BTreeMap::from([
            (
                Hash([3; 32]),
                PaymentEntry {
                    status: PaymentStatus::Succeeded,
                    full_amount_msat: 1_000,
                },
            ),
            (
                Hash([4; 32]),
                PaymentEntry {
                    status: PaymentStatus::Initiated,
                    full_amount_msat: u64::MAX,
                },
            ),
        ]),
    }
}

#[test]
fn account_record_v1() {
    let account = sample_account();
    let bytes = kvcodec::encode(
        record::ACCOUNT_V1,
        &record::AccountRecordV1::from_account(&account),
    )
    .unwrap();
    let golden = golden("account_v1.hex", &bytes);
    assert_eq!(bytes, golden, "the encoding of an account changed");
    assert_eq!(
        decode_entry(&account.id.0, &golden).unwrap(),
        Entry::Account(account)
    );
}

#[test]
fn account_record_v1_without_expiry_or_label() {
    let account = Account {
        expiration: None,
        label: String::new(),
        ..sample_account()
    };
    let bytes = kvcodec::encode(
        record::ACCOUNT_V1,
        &record::AccountRecordV1::from_account(&account),
    )
    .unwrap();
    let golden = golden("account_v1_minimal.hex", &bytes);
    assert_eq!(bytes, golden);
    assert_eq!(
        decode_entry(&account.id.0, &golden).unwrap(),
        Entry::Account(account)
    );
}

#[test]
fn index_record_v1() {
    let bytes =
        kvcodec::encode(record::INDEX_V1, &record::IndexRecordV1 { value: 1 << 40 }).unwrap();
    let golden = golden("index_v1.hex", &bytes);
    assert_eq!(bytes, golden);
    assert_eq!(
        decode_entry(LAST_ADD_INDEX_KEY, &golden).unwrap(),
        Entry::LastAddIndex(1 << 40)
    );
    assert_eq!(
        decode_entry(LAST_SETTLE_INDEX_KEY, &golden).unwrap(),
        Entry::LastSettleIndex(1 << 40)
    );
}

#[test]
fn undecodable_entries_name_the_tree_and_key() {
    let err = decode_entry(&[9; 8], b"\x01garbage")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tree accounts, key 0909090909090909"), "{err}");
    let err = decode_entry(b"surprise", b"\x01").unwrap_err().to_string();
    assert!(err.contains("tree accounts"), "{err}");
    // A record stored under another id's key is refused.
    let account = sample_account();
    let bytes = kvcodec::encode(
        record::ACCOUNT_V1,
        &record::AccountRecordV1::from_account(&account),
    )
    .unwrap();
    assert!(decode_entry(&[0; 8], &bytes).is_err());
}

#[test]
fn a_payment_beyond_the_contract_is_named_with_its_account() {
    // The sample holds a payment of u64::MAX msat, which no backend stores.
    let account = sample_account();
    let err = account.check().unwrap_err();
    let hash = Hash([4; 32]);
    assert!(
        matches!(
            &err,
            store_accounts::Error::InvalidInput { record, field: "full_amount_msat", .. }
                if *record == format!("account {}, payment {hash}", account.id)
        ),
        "{err}"
    );
    let mut fine = account;
    fine.payments.remove(&hash);
    fine.check().unwrap();
}
