//! Field-by-field differences between a key-value record and its SQL copy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// Collects the fields that differ, one line each.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    lines: Vec<String>,
}

impl Diff {
    /// Compares one field.
    pub(crate) fn field<T: PartialEq + Debug>(&mut self, name: &str, kv: &T, sql: &T) {
        if kv != sql {
            self.lines.push(format!("  {name}: kv {kv:?}, sql {sql:?}"));
        }
    }

    /// Compares two sets, listing what each side lacks.
    pub(crate) fn set<T: Ord + Debug>(&mut self, name: &str, kv: &BTreeSet<T>, sql: &BTreeSet<T>) {
        let missing: Vec<_> = kv.difference(sql).collect();
        let extra: Vec<_> = sql.difference(kv).collect();
        if !missing.is_empty() {
            self.lines
                .push(format!("  {name}: missing in sql {missing:?}"));
        }
        if !extra.is_empty() {
            self.lines.push(format!("  {name}: only in sql {extra:?}"));
        }
    }

    /// Compares two maps entry by entry.
    pub(crate) fn map<K: Ord + Debug, V: PartialEq + Debug>(
        &mut self,
        name: &str,
        kv: &BTreeMap<K, V>,
        sql: &BTreeMap<K, V>,
    ) {
        for (k, v) in kv {
            match sql.get(k) {
                None => self.lines.push(format!("  {name}[{k:?}]: missing in sql")),
                Some(s) if s != v => self
                    .lines
                    .push(format!("  {name}[{k:?}]: kv {v:?}, sql {s:?}")),
                Some(_) => {}
            }
        }
        for k in sql.keys().filter(|k| !kv.contains_key(*k)) {
            self.lines.push(format!("  {name}[{k:?}]: only in sql"));
        }
    }

    /// The differences, or `None` when there are none.
    pub(crate) fn finish(self) -> Option<String> {
        (!self.lines.is_empty()).then(|| self.lines.join("\n"))
    }
}

/// The rows a chunk wrote (SQL ids `first..=last`), read back by `load`,
/// checked to be as many as were `written`; the caller compares them record
/// by record. `what` names the records in errors (`"actions"`).
pub(crate) async fn read_back<T, E: std::fmt::Display>(
    what: &str,
    first: i64,
    last: i64,
    written: usize,
    load: impl std::future::Future<Output = Result<Vec<T>, E>>,
) -> Result<Vec<T>, crate::Error> {
    let read = load.await.map_err(|e| crate::Error::Invalid {
        record: format!("{what} {first}..={last} read back"),
        reason: e.to_string(),
    })?;
    if read.len() != written {
        return Err(crate::Error::Mismatch {
            record: format!("{what} {first}..={last}"),
            diff: format!("  {written} written, {} read back", read.len()),
        });
    }
    Ok(read)
}
