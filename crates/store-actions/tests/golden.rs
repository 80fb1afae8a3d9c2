//! Golden bytes of the actions store's sled records and keys.
//! See `store-accounts/tests/golden.rs` for the rules.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use store_actions::kv::{INDEX_TREE, decode_action, decode_locator, record};
use store_actions::{Action, ActionLocator, ActionState, AddAction};
use store_sessions::SessionId;

fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/actions")
        .join(name);
    if !path.exists() && std::env::var("NODESTORE_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{}\n", hex::encode(bytes))).unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    hex::decode(text.trim()).unwrap()
}

fn sample() -> Action {
    let session = SessionId([1, 2, 3, 4]);
    Action {
        locator: ActionLocator::from_index(42),
        request: AddAction {
            macaroon_root_key_id: Some(session.macaroon_root_key()),
            session_id: Some(session),
            account_id: Some(store_accounts::AccountId([8; 8])),
            actor_name: "Autopilot".into(),
            feature_name: "AutoFees".into(),
            trigger: "fee too high".into(),
            intent: "lower the fee".into(),
            structured_json_data: r#"{"chan":1}"#.into(),
            rpc_method: "/lnrpc.Lightning/UpdateChannelPolicy".into(),
            rpc_params_json: br#"{"fee":1}"#.to_vec(),
        },
        attempted_at: Utc.with_ymd_and_hms(2026, 11, 21, 6, 30, 0).unwrap()
            + chrono::Duration::microseconds(5),
        state: ActionState::Error,
        error_reason: "peer offline".into(),
    }
}

#[test]
fn action_record_v1() {
    let a = sample();
    let bytes =
        kvcodec::encode(record::ACTION_V1, &record::ActionRecordV1::from_action(&a)).unwrap();
    assert_eq!(bytes, golden("action_v1.hex", &bytes));
    assert_eq!(decode_action(b"k", &bytes).unwrap(), a);
}

#[test]
fn locator_record_v1() {
    let loc = record::LocatorRecordV1 {
        session: [1, 2, 3, 4],
    };
    let bytes = kvcodec::encode(record::LOCATOR_V1, &loc).unwrap();
    assert_eq!(bytes, golden("locator_v1.hex", &bytes));
    assert_eq!(decode_locator(INDEX_TREE, b"k", &bytes).unwrap(), loc);
}
