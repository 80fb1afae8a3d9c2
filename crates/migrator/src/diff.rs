//! Field-by-field differences between a key-value record and its SQL copy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// How a record read back from SQL differs from its key-value original:
/// the differences, one a field (shown one a line, indented).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Differences(Vec<Difference>);

impl Differences {
    /// One difference.
    pub fn one(d: Difference) -> Differences {
        Differences(vec![d])
    }

    /// Every difference.
    pub fn all(&self) -> &[Difference] {
        &self.0
    }
}

impl std::fmt::Display for Differences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// One field (or the record itself) as each side holds it; values are
/// shown as Rust writes them (`Debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Difference {
    /// Both sides hold the field, with other values.
    Field {
        /// The field (`label`, `payments[…]`).
        field: String,
        /// The key-value side's value.
        kv: String,
        /// The SQL side's value.
        sql: String,
    },
    /// The key-value side has it and SQL does not.
    MissingInSql {
        /// The field, or `None` for the whole record.
        field: Option<String>,
        /// What is missing, when it is a part of the field.
        what: Option<String>,
    },
    /// SQL has it and the key-value side does not.
    OnlyInSql {
        /// The field, or `None` for the whole record.
        field: Option<String>,
        /// What is extra, when it is a part of the field.
        what: Option<String>,
    },
    /// A chunk read back as another number of rows than it wrote.
    Count {
        /// Rows written.
        written: usize,
        /// Rows read back.
        read: usize,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |f: &mut std::fmt::Formatter<'_>,
                    field: &Option<String>,
                    where_: &str,
                    what: &Option<String>| {
            if let Some(field) = field {
                write!(f, "{field}: ")?;
            }
            f.write_str(where_)?;
            match what {
                Some(w) => write!(f, " {w}"),
                None => Ok(()),
            }
        };
        match self {
            Difference::Field { field, kv, sql } => write!(f, "{field}: kv {kv}, sql {sql}"),
            Difference::MissingInSql { field, what } => side(f, field, "missing in sql", what),
            Difference::OnlyInSql { field, what } => side(f, field, "only in sql", what),
            Difference::Count { written, read } => {
                write!(f, "{written} written, {read} read back")
            }
        }
    }
}

/// Compares the named fields of two records of one type, in order (one
/// [`Diff::field`] each).
macro_rules! diff_fields {
    ($d:expr, $kv:expr, $sql:expr, [$($f:ident),* $(,)?]) => {
        $( $d.field(stringify!($f), &$kv.$f, &$sql.$f); )*
    };
}
pub(crate) use diff_fields;

/// Collects the fields that differ.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    found: Vec<Difference>,
}

impl Diff {
    /// Compares one field.
    pub(crate) fn field<T: PartialEq + Debug>(&mut self, name: &str, kv: &T, sql: &T) {
        if kv != sql {
            self.found.push(Difference::Field {
                field: name.to_owned(),
                kv: format!("{kv:?}"),
                sql: format!("{sql:?}"),
            });
        }
    }

    /// Compares two sets, listing what each side lacks.
    pub(crate) fn set<T: Ord + Debug>(&mut self, name: &str, kv: &BTreeSet<T>, sql: &BTreeSet<T>) {
        let missing: Vec<_> = kv.difference(sql).collect();
        let extra: Vec<_> = sql.difference(kv).collect();
        if !missing.is_empty() {
            self.found.push(Difference::MissingInSql {
                field: Some(name.to_owned()),
                what: Some(format!("{missing:?}")),
            });
        }
        if !extra.is_empty() {
            self.found.push(Difference::OnlyInSql {
                field: Some(name.to_owned()),
                what: Some(format!("{extra:?}")),
            });
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
                None => self.found.push(Difference::MissingInSql {
                    field: Some(format!("{name}[{k:?}]")),
                    what: None,
                }),
                Some(s) if s != v => self.field(&format!("{name}[{k:?}]"), v, s),
                Some(_) => {}
            }
        }
        for k in sql.keys().filter(|k| !kv.contains_key(*k)) {
            self.found.push(Difference::OnlyInSql {
                field: Some(format!("{name}[{k:?}]")),
                what: None,
            });
        }
    }

    /// The differences, or `None` when there are none.
    pub(crate) fn finish(self) -> Option<Differences> {
        (!self.found.is_empty()).then_some(Differences(self.found))
    }
}

/// The rows a chunk wrote (SQL ids `first..=last`), read back by `load`,
/// checked to be as many as were `written`; the caller compares them record
/// by record. `what` names the records in errors (`"actions"`).
async fn read_back<T, E: std::error::Error + Send + Sync + 'static>(
    what: &str,
    first: i64,
    last: i64,
    written: usize,
    load: impl std::future::Future<Output = Result<Vec<T>, E>>,
) -> Result<Vec<T>, crate::Error> {
    let read = load.await.map_err(|e| crate::Error::ReadBack {
        records: format!("{what} {first}..={last}"),
        source: Box::new(e),
    })?;
    if read.len() != written {
        return Err(crate::Error::Mismatch {
            record: format!("{what} {first}..={last}"),
            diff: Differences::one(Difference::Count {
                written,
                read: read.len(),
            }),
        });
    }
    Ok(read)
}

/// Reads back what a chunk wrote (SQL ids `first..=last`, by `load`) and
/// compares it with `written`, record by record in order: `check` refuses
/// a pair that differs ([`crate::Error::Mismatch`], naming the record).
/// Every store's copy and replay verifies through this one loop.
pub(crate) async fn verify_written<'a, T: 'a, E: std::error::Error + Send + Sync + 'static>(
    what: &str,
    written: impl ExactSizeIterator<Item = &'a T>,
    (first, last): (i64, i64),
    load: impl std::future::Future<Output = Result<Vec<T>, E>>,
    check: impl Fn(&T, &T) -> Result<(), crate::Error>,
) -> Result<(), crate::Error> {
    let read = read_back(what, first, last, written.len(), load).await?;
    written.zip(&read).try_for_each(|(kv, sql)| check(kv, sql))
}
