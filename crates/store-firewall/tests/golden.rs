//! Golden bytes of the firewall's sled records and keys. The keys are part
//! of the on-disk format here (nested buckets are encoded into them).
//! See `store-accounts/tests/golden.rs` for the rules.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::PathBuf;

use store_firewall::kv::{decode_privacy, decode_value, record, scope_buckets};
use store_firewall::{Namespace, Scope, path};
use store_sessions::SessionId;

fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/firewall")
        .join(name);
    if !path.exists() && std::env::var("NODESTORE_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{}\n", hex::encode(bytes))).unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    hex::decode(text.trim()).unwrap()
}

#[test]
fn value_record_v1() {
    let bytes = kvcodec::encode(
        record::VALUE_V1,
        &record::ValueRecordV1 {
            value: vec![1, 2, 3],
        },
    )
    .unwrap();
    assert_eq!(bytes, golden("value_v1.hex", &bytes));
    assert_eq!(decode_value(b"k", &bytes).unwrap(), vec![1, 2, 3]);
}

#[test]
fn privacy_value_record_v1() {
    let bytes = kvcodec::encode(
        record::PRIVACY_V1,
        &record::PrivacyValueRecordV1 {
            value: "pseudo-0-0".into(),
        },
    )
    .unwrap();
    assert_eq!(bytes, golden("privacy_value_v1.hex", &bytes));
    assert_eq!(decode_privacy(b"k", &bytes).unwrap(), "pseudo-0-0");
}

#[test]
fn feature_scoped_key() {
    let ns = Namespace::new("test-rule", SessionId([1, 2, 3, 4]), "test-feature");
    let key = path::encode(&scope_buckets(&ns, Scope::LocalTemp), b"test-entry-key").unwrap();
    assert_eq!(key, golden("feature_key.hex", &key));
    assert_eq!(
        path::decode(&key).unwrap().display(),
        "temp/test-rule/session-kv-store/0x01020304/feature-kv-store/test-feature/test-entry-key"
    );
}
