//! docs/cli.md documents each `--json` output field by field; this test
//! runs the commands and checks the real output against those tables: every
//! field printed is documented with its type, and every documented field is
//! printed whenever the object holding it is.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nodestore::generate::{Scale, generate};
use serde_json::Value;

/// The shapes of docs/cli.md: shape name -> field path -> allowed types.
fn documented() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let text = include_str!("../../../docs/cli.md");
    let mut shapes = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("<!-- json-shape: ")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            current = Some(name.to_owned());
            shapes.insert(name.to_owned(), BTreeMap::new());
            continue;
        }
        let Some(name) = &current else { continue };
        if !line.starts_with('|') {
            if !line.trim().is_empty() {
                current = None;
            }
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(field), Some(types)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(path) = field.strip_prefix('`').and_then(|f| f.strip_suffix('`')) else {
            continue; // the header and its rule
        };
        let types: BTreeSet<String> = types.split(" or ").map(str::to_owned).collect();
        shapes.get_mut(name).unwrap().insert(path.to_owned(), types);
    }
    shapes
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every (path, type) in `v`; array elements under `path[]`.
fn flatten(v: &Value, path: &str, out: &mut Vec<(String, &'static str)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.push((p.clone(), type_of(child)));
                flatten(child, &p, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                let p = format!("{path}[]");
                out.push((p.clone(), type_of(item)));
                flatten(item, &p, out);
            }
        }
        _ => {}
    }
}

/// Checks `samples` of `shape` against the documentation.
fn check(shape: &str, samples: &[Value]) {
    let docs = documented();
    let fields = docs
        .get(shape)
        .unwrap_or_else(|| panic!("docs/cli.md documents no shape {shape}"));
    assert!(!fields.is_empty(), "{shape}: an empty table");
    let mut seen = BTreeSet::new();
    let mut parents_seen = BTreeSet::from([String::new()]);
    for sample in samples {
        let mut flat = Vec::new();
        flatten(sample, "", &mut flat);
        for (path, ty) in flat {
            let allowed = fields
                .get(&path)
                .unwrap_or_else(|| panic!("{shape}: `{path}` is printed but not documented"));
            if ty == "integer" && allowed.contains("number") {
                // A whole number of seconds is still a number.
            } else {
                assert!(
                    allowed.contains(ty),
                    "{shape}: `{path}` is {ty}, documented as {allowed:?}"
                );
            }
            if ty == "object" || ty == "array" {
                parents_seen.insert(path.clone());
            }
            seen.insert(path);
        }
    }
    for path in fields.keys() {
        if path.ends_with("[]") {
            continue; // an array may be empty; its elements' fields are checked when it is not
        }
        let parent = match path.rfind(['.', '[']) {
            Some(i) if path[i..].starts_with('[') => &path[..i],
            Some(i) => &path[..i],
            None => "",
        };
        if parents_seen.contains(parent) {
            assert!(
                seen.contains(path),
                "{shape}: `{path}` is documented but was never printed"
            );
        }
    }
}

fn nodestore(args: &[&str]) -> (i32, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodestore"))
        .args(args)
        .env_remove("NODESTORE_BACKEND")
        .env_remove("NODESTORE_POSTGRES_URL")
        .env_remove("NODESTORE_SQLITE_FILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

async fn kv_at(dir: &Path) -> String {
    let kv = dir.join("kv");
    generate(&kv, Scale::S.shape(), 3, &|_, _, _| {})
        .await
        .unwrap();
    kv.display().to_string()
}

mod sqlite {
    use super::*;

    #[tokio::test]
    async fn every_json_output_matches_docs_cli_md() {
        let dir = tempfile::tempdir().unwrap();
        let kv = kv_at(dir.path()).await;
        let target = format!("sqlite:{}", dir.path().join("node.db").display());
        let other = format!("sqlite:{}", dir.path().join("other.db").display());

        // status before anything: a live key-value database, no SQL file yet.
        let (code, before) =
            nodestore(&["status", "--dir", dir.path().to_str().unwrap(), "--json"]);
        assert_eq!(code, 0);

        let (code, rehearsed) = nodestore(&[
            "migrate",
            "--kv",
            &kv,
            "--to",
            &target,
            "--dry-run",
            "--json",
        ]);
        assert_eq!((code, &rehearsed["kept_nothing"]), (0, &Value::Bool(true)));
        let (code, migrated) = nodestore(&["migrate", "--kv", &kv, "--to", &target, "--json"]);
        assert_eq!((code, &migrated["outcome"]), (0, &Value::from("migrated")));
        let (code, again) = nodestore(&["migrate", "--kv", &kv, "--to", &target, "--json"]);
        assert_eq!(
            (code, &again["outcome"]),
            (0, &Value::from("already_migrated"))
        );
        check("migrate", &[rehearsed, migrated, again]);

        let (code, failed) = nodestore(&["migrate", "--kv", &kv, "--to", &other, "--json"]);
        assert_eq!((code, &failed["data"]), (1, &Value::from("not_written")));
        check("migrate-failed", &[failed]);

        let (code, clean) = nodestore(&["verify", "--kv", &kv, "--sql", &target, "--json"]);
        assert_eq!(code, 0);
        // A difference: one account's balance changed in SQL only.
        let db: sqldb::Db = sqldb::SqliteDb::open(dir.path().join("node.db"), Default::default())
            .await
            .unwrap()
            .into();
        let stores = nodestore::Stores::on_sql(&db, nodestore::OpenReport::default());
        let account = stores.accounts.accounts().await.unwrap().remove(0);
        stores.accounts.credit_account(account.id, 1).await.unwrap();
        db.close().await.unwrap();
        let (code, differing) = nodestore(&["verify", "--kv", &kv, "--sql", &target, "--json"]);
        assert_eq!(code, 2);
        check("verify", &[clean, differing]);

        let (code, after) = nodestore(&["status", "--dir", dir.path().to_str().unwrap(), "--json"]);
        assert_eq!(code, 0);
        assert_eq!(after["kv"]["state"], "tombstoned");
        check("status", &[before, after]);
    }
}
