//! Compares every record of a key-value database with a SQL database, as
//! the migration's rules say the SQL side must hold it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::Result;
use crate::dump::{Dump, as_migrated};

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The record, e.g. `account 0011…` or `action 42`.
    pub record: String,
    /// What differs: `only in kv`, `only in sql`, or the fields.
    pub detail: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records compared (each side's records, counted once).
    pub records: u64,
    /// Every difference.
    pub differences: Vec<Difference>,
}

impl VerifyReport {
    /// True when the two sides hold the same data.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares the key-value database at `kv` with `sql`; works on a
/// tombstoned key-value database too (it only reads).
pub async fn verify(kv: &Path, sql: &sqldb::Db) -> Result<VerifyReport> {
    verify_observed(kv, sql, None).await
}

/// [`verify`], telling `observer` how far each side's reading has come.
pub async fn verify_observed(
    kv: &Path,
    sql: &sqldb::Db,
    observer: crate::dump::Observer,
) -> Result<VerifyReport> {
    let want = as_migrated(&crate::dump::dump_kv_observed(kv, observer.clone()).await?)?;
    let got = crate::dump::dump_sql_observed(sql, observer).await?;
    Ok(compare(&want, &got))
}

fn keyed<T: Serialize>(items: &[T], key: impl Fn(&T) -> String) -> BTreeMap<String, Value> {
    items
        .iter()
        .map(|i| (key(i), serde_json::to_value(i).unwrap_or(Value::Null)))
        .collect()
}

/// Fields of a record that hold secrets: a difference is reported, the
/// values never are.
const SECRET_FIELDS: [&str; 2] = ["pairing_secret", "local_private_key"];

/// A short fingerprint of a secret, to tell two apart without showing them.
fn fingerprint(v: &Value) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(v.to_string().as_bytes());
    format!("sha256:{}", hex::encode(&digest[..4]))
}

/// A value for a message: shortened when long.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => store_contract::shown(s),
        other => {
            let text = other.to_string();
            if text.len() > 80 {
                store_contract::shown(&text)
            } else {
                text
            }
        }
    }
}

fn fields(a: &Value, b: &Value) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut names: Vec<&String> = x.keys().chain(y.keys()).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .filter(|n| x.get(*n) != y.get(*n))
                .map(|n| {
                    let (kv, sql) = (
                        x.get(n).unwrap_or(&Value::Null),
                        y.get(n).unwrap_or(&Value::Null),
                    );
                    if SECRET_FIELDS.contains(&n.as_str()) {
                        format!(
                            "{n}: differs (kv {}, sql {})",
                            fingerprint(kv),
                            fingerprint(sql)
                        )
                    } else {
                        format!("{n}: kv {}, sql {}", shown(kv), shown(sql))
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
        _ => format!("kv {}, sql {}", shown(a), shown(b)),
    }
}

/// One section of a dump: its records by key, as JSON.
type Records = BTreeMap<String, Value>;

/// Compares two dumps record by record.
pub fn compare(kv: &Dump, sql: &Dump) -> VerifyReport {
    let mut report = VerifyReport::default();
    let sections: [(&str, Records, Records); 6] = [
        (
            "account",
            keyed(&kv.accounts, |a| a.id.clone()),
            keyed(&sql.accounts, |a| a.id.clone()),
        ),
        (
            "last indexes",
            keyed(kv.last_indexes.as_slice(), |_| String::new()),
            keyed(sql.last_indexes.as_slice(), |_| String::new()),
        ),
        (
            "session",
            keyed(&kv.sessions, |s| s.id.clone()),
            keyed(&sql.sessions, |s| s.id.clone()),
        ),
        (
            "kv entry",
            keyed(&kv.kv_entries, |e| {
                format!(
                    "{}/{}/{:?}/{:?}/{}",
                    if e.perm { "perm" } else { "temp" },
                    e.rule,
                    e.group,
                    e.feature,
                    e.key
                )
            }),
            keyed(&sql.kv_entries, |e| {
                format!(
                    "{}/{}/{:?}/{:?}/{}",
                    if e.perm { "perm" } else { "temp" },
                    e.rule,
                    e.group,
                    e.feature,
                    e.key
                )
            }),
        ),
        (
            "privacy pair",
            keyed(&kv.privacy_pairs, |p| format!("{}/{}", p.group, p.real)),
            keyed(&sql.privacy_pairs, |p| format!("{}/{}", p.group, p.real)),
        ),
        (
            "action",
            keyed(&kv.actions, |a| a.locator.to_string()),
            keyed(&sql.actions, |a| a.locator.to_string()),
        ),
    ];
    for (name, a, b) in sections {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            report.records += 1;
            let record = if k.is_empty() {
                name.to_owned()
            } else {
                format!("{name} {k}")
            };
            match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) if x == y => {}
                (Some(x), Some(y)) => report.differences.push(Difference {
                    record,
                    detail: fields(x, y),
                }),
                (Some(_), None) => report.differences.push(Difference {
                    record,
                    detail: "only in kv".into(),
                }),
                (None, Some(_)) => report.differences.push(Difference {
                    record,
                    detail: "only in sql".into(),
                }),
                (None, None) => {}
            }
        }
    }
    report
}
