//! Timestamps: UTC, microsecond precision, the same on both backends.
//!
//! PostgreSQL stores `TIMESTAMP WITHOUT TIME ZONE` with microsecond
//! precision; every value nodestore writes is UTC. SQLite has no timestamp
//! type, so nodestore stores the fixed-width text `YYYY-MM-DD HH:MM:SS.ffffff`
//! (always six fraction digits, always a four-digit year). Fixed width makes
//! text order equal time order, so `ORDER BY` and range filters work on the
//! column directly.
//!
//! Both backends truncate (never round) to whole microseconds before binding,
//! so a value written to either reads back identical, and years outside
//! 0001..=9999 are rejected when bound instead of sorting wrongly.

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};

#[cfg(feature = "sqlite")]
const SQLITE_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

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

/// The SQLite text form of a storable timestamp.
#[cfg(feature = "sqlite")]
pub(crate) fn to_sqlite_text(t: NaiveDateTime) -> String {
    t.format(SQLITE_FORMAT).to_string()
}

/// Parses the SQLite text form; also accepts a value without fraction and
/// an ISO `T` separator, which hand-written SQL may produce.
pub(crate) fn parse_sqlite_text(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim_end_matches('Z');
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn text_form_is_fixed_width_and_sorts_in_time_order() {
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
        assert!(texts.iter().all(|t| t.len() == 26), "{texts:?}");
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
}
