//! Timestamps: UTC, microsecond precision, the same on both backends.
//!
//! PostgreSQL stores `TIMESTAMP WITHOUT TIME ZONE` with microsecond
//! precision; every value nodestore writes is UTC. SQLite has no timestamp
//! type, so nodestore stores text, in the form Lightning Terminal's (litd's)
//! SQLite driver writes and binds: Go's `time.Time.String()` of a UTC time,
//! `2026-08-19 13:25:42.123456 +0000 UTC` (the fraction without trailing
//! zeros, and without the dot when it is zero; always a four-digit year).
//! litd compares these texts byte by byte, so a database both may open
//! holds one form (docs/design.md §3.6). Text order is time order in that
//! form: the fraction's digits compare left to right and the space after
//! it sorts before any digit, so `ORDER BY` and range filters work on the
//! column directly.
//!
//! nodestore wrote `2026-08-19 13:25:42.123456` before (fixed width, six
//! fraction digits); schema step 11 rewrites such values
//! (`convert_sqlite_text`) and both forms are read.
//!
//! Both backends truncate (never round) to whole microseconds before binding,
//! so a value written to either reads back identical, and years outside
//! 0001..=9999 are rejected when bound instead of sorting wrongly.

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};

/// The first and last years a timestamp may have (the data contract's).
pub const YEAR_RANGE: std::ops::RangeInclusive<i32> = store_contract::YEARS;

/// The earliest representable time, `0001-01-01 00:00:00 UTC`: the data
/// contract's [`store_contract::zero_time`], stored to mean "none".
pub use store_contract::zero_time;

/// Drops everything below a microsecond; a leap second becomes the last
/// microsecond before it (the data contract's rule, so every backend reads
/// back the same time).
pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    store_contract::normalise_time(t)
}

/// Checks the year range and truncates to microseconds.
pub(crate) fn for_storage(t: DateTime<Utc>) -> Result<NaiveDateTime, String> {
    if !YEAR_RANGE.contains(&t.year()) {
        return Err(format!(
            "timestamp {t} is outside the storable years {}..={}",
            YEAR_RANGE.start(),
            YEAR_RANGE.end()
        ));
    }
    Ok(truncate_micros(t).naive_utc())
}

/// The SQLite text form of a storable timestamp: Go's `String()` of the
/// UTC time (see the module docs).
#[cfg(feature = "sqlite")]
pub(crate) fn to_sqlite_text(t: NaiveDateTime) -> String {
    use chrono::Timelike;
    let mut out = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos > 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

/// Parses SQLite text: Go's form (any offset, its zone's name after it,
/// and a monotonic clock reading `m=±…` after that, which Go's `String()`
/// adds to a time read from the clock); nodestore's earlier form; and an
/// ISO `T` separator or `Z`, which hand-written SQL may produce.
pub(crate) fn parse_sqlite_text(s: &str) -> Option<DateTime<Utc>> {
    let s = s.split(" m=").next().unwrap_or(s).trim();
    // Go's form: "<date> <time> <offset> <zone name>".
    let mut parts = s.rsplitn(2, ' ');
    if let (Some(zone), Some(rest)) = (parts.next(), parts.next())
        && zone
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '+' || c == '-' || c.is_ascii_digit())
        && let Ok(t) = DateTime::parse_from_str(rest, "%Y-%m-%d %H:%M:%S%.f %z")
    {
        return Some(t.with_timezone(&Utc));
    }
    let s = s.trim_end_matches('Z');
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// Every timestamp column of nodestore's schema, as (table, column).
/// lnd's `migration_tracker` is left as lnd wrote it: nodestore never
/// orders by it.
const TIME_COLUMNS: &[(&str, &str)] = &[
    ("nodestore_schema_steps", "applied_at"),
    ("nodestore_kv_migrations", "migrated_at"),
    ("accounts", "last_updated"),
    ("accounts", "expiration"),
    ("sessions", "expiry"),
    ("sessions", "created_at"),
    ("sessions", "revoked_at"),
    ("actions", "created_at"),
    ("nodestore_online_staging", "staged_at"),
];

/// Schema step 11 on SQLite: every timestamp in nodestore's earlier text
/// form (`YYYY-MM-DD HH:MM:SS.ffffff`) rewritten to Go's, in the step's one
/// transaction, proved by counting the values of each column in each form
/// before and after: afterwards none is in the earlier form and Go's form
/// holds all that either held. A value in neither form is refused, naming
/// its table and column (it would sort among the others wrongly). Nothing
/// on PostgreSQL, whose timestamps are typed.
pub(crate) async fn convert_sqlite_text(tx: &mut dyn crate::tx::Tx) -> Result<(), crate::BoxError> {
    use crate::tx::{Dialect, Sql};
    if tx.dialect() != Dialect::Sqlite {
        return Ok(());
    }
    for (table, column) in TIME_COLUMNS {
        if !crate::migrate::table_exists(tx, Dialect::Sqlite, table).await? {
            continue;
        }
        // Identifiers from the list above, never values.
        let earlier = format!(
            "(length({column}) = 26 AND substr({column}, 11, 1) = ' ' \
             AND substr({column}, 20, 1) = '.' AND {column} NOT LIKE '% UTC')"
        );
        // Go's form with any offset (litd writes UTC; a zone of its own
        // is left as it is, in Go's form still).
        let go = format!("({column} GLOB '* [+-][0-9][0-9][0-9][0-9] *')");
        let count = format!(
            "SELECT count(*) FILTER (WHERE {earlier}), count(*) FILTER (WHERE {go}), \
             count({column}) FROM {table}"
        );
        let counts = |rows: Vec<crate::row::Row>| -> Result<(i64, i64, i64), crate::DbError> {
            let r = rows.first().ok_or_else(|| {
                crate::DbError::new(
                    "sqlite",
                    crate::error::ErrorKind::Other,
                    "a count without a row",
                )
            })?;
            Ok((r.i64(0)?, r.i64(1)?, r.i64(2)?))
        };
        let count = Sql {
            text: count,
            values: sea_query::Values(Vec::new()),
        };
        let (before_earlier, before_go, all) = counts(tx.query_sql(count.clone()).await?)?;
        if before_earlier + before_go != all {
            return Err(format!(
                "{table}.{column} holds {} timestamp(s) in neither nodestore's earlier text form \
                 nor Go's; they cannot be put in time order with the others: correct them by hand",
                all - before_earlier - before_go
            )
            .into());
        }
        if before_earlier == 0 {
            continue;
        }
        let fraction = format!("rtrim(substr({column}, 21, 6), '0')");
        tx.execute_script(&format!(
            "UPDATE {table} SET {column} = substr({column}, 1, 19) || \
             CASE WHEN {fraction} = '' THEN '' ELSE '.' || {fraction} END || ' +0000 UTC' \
             WHERE {earlier}"
        ))
        .await?;
        let (after_earlier, after_go, _) = counts(tx.query_sql(count).await?)?;
        if after_earlier != 0 || after_go != before_go + before_earlier {
            return Err(format!(
                "{table}.{column}: converting {before_earlier} timestamp(s) to Go's text form \
                 left {after_earlier} in the earlier form and {after_go} in Go's (expected 0 and {})",
                before_go + before_earlier
            )
            .into());
        }
        tracing::info!(
            table,
            column,
            converted = before_earlier,
            "timestamps rewritten in Go's text form"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    #[cfg(feature = "sqlite")]
    fn text_form_is_gos_and_sorts_in_time_order() {
        let times = [
            zero_time(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 21, 5, 53, 20).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 21, 5, 53, 20).unwrap()
                + chrono::Duration::microseconds(1),
            Utc.with_ymd_and_hms(2026, 11, 21, 5, 53, 20).unwrap()
                + chrono::Duration::milliseconds(500),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
        ];
        let texts: Vec<String> = times
            .iter()
            .map(|t| to_sqlite_text(for_storage(*t).unwrap()))
            .collect();
        assert_eq!(texts[0], "0001-01-01 00:00:00 +0000 UTC");
        assert_eq!(texts[2], "2026-11-21 05:53:20 +0000 UTC");
        assert_eq!(texts[3], "2026-11-21 05:53:20.000001 +0000 UTC");
        assert_eq!(texts[4], "2026-11-21 05:53:20.5 +0000 UTC");
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(sorted, texts);
        for (t, text) in times.iter().zip(&texts) {
            assert_eq!(parse_sqlite_text(text), Some(*t));
        }
    }

    #[test]
    fn storage_truncates_to_microseconds() {
        let t = Utc.with_ymd_and_hms(2020, 5, 6, 7, 8, 9).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let stored = for_storage(t).unwrap();
        assert_eq!(stored.nanosecond(), 123_456_000);
        // Before the Unix epoch too: truncation, never rounding.
        let old =
            Utc.with_ymd_and_hms(1960, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::nanoseconds(999);
        assert_eq!(for_storage(old).unwrap().nanosecond(), 0);
    }

    #[test]
    fn years_outside_the_range_are_refused() {
        let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        assert!(for_storage(far).is_err());
        assert!(for_storage(zero_time()).is_ok());
    }

    #[test]
    fn every_form_litd_and_nodestore_wrote_is_read() {
        let t = Utc.with_ymd_and_hms(2026, 8, 19, 13, 25, 42).unwrap();
        for (text, want) in [
            (
                "2026-08-19 13:25:42.123456789 +0000 UTC",
                t + chrono::Duration::nanoseconds(123_456_789),
            ),
            ("2026-08-19 13:25:42 +0000 UTC", t),
            (
                "2026-08-19 15:25:42.5 +0200 CEST",
                t + chrono::Duration::milliseconds(500),
            ),
            (
                "2026-08-19 13:25:42.25 +0000 UTC m=+0.001",
                t + chrono::Duration::milliseconds(250),
            ),
            ("2026-08-19 13:25:42.000000", t),
            ("2026-08-19T13:25:42Z", t),
        ] {
            assert_eq!(parse_sqlite_text(text), Some(want), "{text}");
        }
        assert_eq!(parse_sqlite_text("not a time"), None);
    }

    /// Random times: Go's text sorts as the times do, and reads back.
    #[cfg(feature = "sqlite")]
    mod order {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn text_order_is_time_order(a in 0i64..253_402_300_799_000_000, b in 0i64..253_402_300_799_000_000) {
                let base = zero_time();
                let (ta, tb) = (base + chrono::Duration::microseconds(a), base + chrono::Duration::microseconds(b));
                let (xa, xb) = (to_sqlite_text(for_storage(ta).unwrap()), to_sqlite_text(for_storage(tb).unwrap()));
                prop_assert_eq!(xa.cmp(&xb), ta.cmp(&tb), "{} {}", xa, xb);
                prop_assert_eq!(parse_sqlite_text(&xa), Some(ta));
            }
        }
    }
}
