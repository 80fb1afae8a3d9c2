//! Golden bytes of every record kind the sessions store writes to sled.
//! See `store-accounts/tests/golden.rs` for the rules.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use store_sessions::kv::{decode_session, record};
use store_sessions::{
    Caveat, MacaroonRecipe, Permission, PrivacyFlag, PrivacyFlags, Secret, Session, SessionId,
    SessionState, SessionType,
};

fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/sessions")
        .join(name);
    if !path.exists() && std::env::var("NODESTORE_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{}\n", hex::encode(bytes))).unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    hex::decode(text.trim()).unwrap()
}

fn full_session() -> Session {
    let mut key = [0u8; 33];
    key[0] = 2;
    for (i, b) in key.iter_mut().enumerate().skip(1) {
        *b = i as u8;
    }
    let id = SessionId::from_public_key(&key);
    Session {
        id,
        label: "full".into(),
        state: SessionState::Revoked,
        session_type: SessionType::MacaroonAccount,
        expiry: Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap(),
        created_at: Utc.with_ymd_and_hms(2026, 11, 21, 6, 0, 0).unwrap()
            + chrono::Duration::microseconds(7),
        revoked_at: Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
        server_addr: "mailbox.terminal.lightning.today:443".into(),
        dev_server: true,
        macaroon_root_key: id.macaroon_root_key(),
        macaroon_recipe: Some(MacaroonRecipe {
            permissions: vec![Permission {
                entity: "lnd".into(),
                action: "read".into(),
            }],
            caveats: vec![
                Caveat {
                    id: b"lnd-custom account 0102030405060708".to_vec(),
                    verification_id: None,
                    location: String::new(),
                },
                Caveat {
                    id: b"third".to_vec(),
                    verification_id: Some(vec![]),
                    location: "there".into(),
                },
            ],
        }),
        pairing_secret: Secret([7; 14]),
        local_private_key: Secret([9; 32]),
        local_public_key: key,
        remote_public_key: Some([3; 33]),
        feature_config: Some(BTreeMap::from([
            ("AutoFees".to_owned(), vec![1, 2]),
            ("Empty".to_owned(), vec![]),
        ])),
        with_privacy_mapper: true,
        privacy_flags: PrivacyFlags::of([
            PrivacyFlag::ClearPubkeys,
            PrivacyFlag::ClearNetworkAddresses,
        ]),
        group_id: SessionId([0xaa, 0xbb, 0xcc, 0xdd]),
        account_id: Some(store_accounts::AccountId([1, 2, 3, 4, 5, 6, 7, 8])),
    }
}

fn minimal_session() -> Session {
    let s = full_session();
    Session {
        state: SessionState::Reserved,
        revoked_at: None,
        macaroon_recipe: None,
        remote_public_key: None,
        feature_config: None,
        with_privacy_mapper: false,
        privacy_flags: PrivacyFlags::EMPTY,
        group_id: s.id,
        account_id: None,
        ..s
    }
}

fn check(name: &str, s: Session) {
    let bytes = kvcodec::encode(
        record::SESSION_V1,
        &record::SessionRecordV1::from_session(&s),
    )
    .unwrap();
    let golden = golden(name, &bytes);
    assert_eq!(bytes, golden, "the encoding of a session changed");
    assert_eq!(decode_session(&s.local_public_key, &golden).unwrap(), s);
}

#[test]
fn session_record_v1_with_every_option() {
    check("session_v1.hex", full_session());
}

#[test]
fn session_record_v1_without_options() {
    check("session_v1_minimal.hex", minimal_session());
}

#[test]
fn index_records_v1() {
    let idx = record::IdIndexRecordV1 {
        key: vec![2; 33],
        group: [1, 2, 3, 4],
    };
    let bytes = kvcodec::encode(record::ID_INDEX_V1, &idx).unwrap();
    assert_eq!(bytes, golden("id_index_v1.hex", &bytes));
    assert_eq!(
        kvcodec::decode::<record::IdIndexRecordV1>(&bytes, record::ID_INDEX_V1).unwrap(),
        idx
    );
    let member = record::GroupMemberRecordV1 {
        session: [5, 6, 7, 8],
    };
    let bytes = kvcodec::encode(record::GROUP_MEMBER_V1, &member).unwrap();
    assert_eq!(bytes, golden("group_member_v1.hex", &bytes));
    assert_eq!(
        kvcodec::decode::<record::GroupMemberRecordV1>(&bytes, record::GROUP_MEMBER_V1).unwrap(),
        member
    );
}

#[test]
fn a_record_under_another_key_or_with_unknown_flags_is_refused() {
    let s = full_session();
    let bytes = kvcodec::encode(
        record::SESSION_V1,
        &record::SessionRecordV1::from_session(&s),
    )
    .unwrap();
    let err = decode_session(&[3; 33], &bytes).unwrap_err().to_string();
    assert!(err.contains("tree session"), "{err}");
    let mut rec = record::SessionRecordV1::from_session(&s);
    rec.privacy_flags = 1 << 9;
    let bytes = kvcodec::encode(record::SESSION_V1, &rec).unwrap();
    assert!(matches!(
        decode_session(&s.local_public_key, &bytes),
        Err(store_sessions::Error::UnknownPrivacyFlag { bits: 512 })
    ));
}

#[test]
fn an_undecodable_session_names_the_tree_the_key_and_why() {
    let err = decode_session(&[3; 33], b"\x01\xff")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("tree session, key {}", "03".repeat(33))),
        "{err}"
    );
    assert!(err.contains("invalid value of"), "{err}");
    let err = decode_session(&[3; 33], b"\x07").unwrap_err().to_string();
    assert!(err.contains("record version 7, expected 1"), "{err}");
}
