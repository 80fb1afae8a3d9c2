//! The data contract every nodestore store enforces at its API, identically
//! on sled, SQLite and PostgreSQL (docs/design.md §4.1).
//!
//! Without one contract, each backend refuses what its engine refuses: a
//! NUL character is stored by sled and SQLite and refused by PostgreSQL, a
//! long value in an indexed column by PostgreSQL's index only, a leap
//! second reads back differently. So the stores check every value here,
//! before any backend sees it, and a value is accepted or refused the same
//! way everywhere, with the same error naming the field.
//!
//! # The rules
//! - **Text** is UTF-8 (Rust strings are) without the NUL character.
//! - **Keys**: text that is a key or sits in an index (labels, rule and
//!   feature names, kv-store keys, privacy values) holds at most
//!   [`MAX_KEY_BYTES`] bytes, which every engine's index takes.
//! - **Values**: any other text or bytes holds at most [`MAX_VALUE_BYTES`].
//! - **Amounts and indexes** are stored as signed 64-bit numbers: a `u64`
//!   above `i64::MAX` is refused, never wrapped.
//! - **Times** are UTC with microsecond precision in years 1 to 9999; a
//!   leap second (`23:59:60`) is read as the last microsecond before it
//!   (`23:59:59.999999`), on every backend.
//! - **Empty** text means "none" where a field is optional (a label, a
//!   feature of an action); a field that names something (a kv-store
//!   entry's feature, a privacy value) may not be empty.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The most bytes of text a key or an indexed field may hold.
pub const MAX_KEY_BYTES: usize = 1024;

/// The most bytes any other text or binary value may hold.
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// The first and last years a time may have.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Why a value breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Text holding the NUL character.
    #[error("contains the NUL character (at byte {at})")]
    Nul {
        /// Where.
        at: usize,
    },
    /// A key longer than [`MAX_KEY_BYTES`] or a value longer than
    /// [`MAX_VALUE_BYTES`].
    #[error("is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// Empty where a name is needed.
    #[error("must not be empty")]
    Empty,
    /// A number above `i64::MAX`.
    #[error("{value} exceeds the largest storable number ({})", i64::MAX)]
    TooLarge {
        /// The number.
        value: u64,
    },
    /// A time outside years 1 to 9999.
    #[error("{time} is outside the years 1 to 9999")]
    YearOutOfRange {
        /// The time.
        time: String,
    },
}

fn no_nul(s: &str) -> Result<(), Violation> {
    match s.bytes().position(|b| b == 0) {
        Some(at) => Err(Violation::Nul { at }),
        None => Ok(()),
    }
}

fn at_most(len: usize, max: usize) -> Result<(), Violation> {
    if len > max {
        Err(Violation::TooLong { len, max })
    } else {
        Ok(())
    }
}

/// Text that is a key or sits in an index.
pub fn key(s: &str) -> Result<(), Violation> {
    no_nul(s)?;
    at_most(s.len(), MAX_KEY_BYTES)
}

/// A key that names something and may not be empty.
pub fn name(s: &str) -> Result<(), Violation> {
    if s.is_empty() {
        return Err(Violation::Empty);
    }
    key(s)
}

/// Any other text.
pub fn text(s: &str) -> Result<(), Violation> {
    no_nul(s)?;
    at_most(s.len(), MAX_VALUE_BYTES)
}

/// A binary value.
pub fn bytes(b: &[u8]) -> Result<(), Violation> {
    at_most(b.len(), MAX_VALUE_BYTES)
}

/// An amount or index, as every backend stores it.
pub fn number(v: u64) -> Result<i64, Violation> {
    i64::try_from(v).map_err(|_| Violation::TooLarge { value: v })
}

/// A time as every backend stores it: checked for its year, a leap second
/// read as the microsecond before it, truncated to microseconds.
pub fn time(t: DateTime<Utc>) -> Result<DateTime<Utc>, Violation> {
    if !YEARS.contains(&t.year()) {
        return Err(Violation::YearOutOfRange {
            time: t.to_rfc3339(),
        });
    }
    Ok(normalise_time(t))
}

/// A time truncated to microseconds, a leap second read as the microsecond
/// before it. Never fails; [`time`] also checks the year.
pub fn normalise_time(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    let nanos = if nanos >= 1_000_000_000 {
        999_999_000
    } else {
        nanos / 1_000 * 1_000
    };
    t.with_nanosecond(nanos).unwrap_or(t)
}

/// The earliest storable time, `0001-01-01 00:00:00 UTC`. The SQL schema
/// keeps some timestamp columns `NOT NULL` and stores this value to mean
/// "none" (an account without expiry), so every backend reads it as none.
pub fn zero_time() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(*YEARS.start(), 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Text for an error message: at most 64 characters of it, then how long
/// it was; a message never repeats a whole value.
pub fn shown(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn text_and_keys() {
        assert_eq!(text("a\0b"), Err(Violation::Nul { at: 1 }));
        assert!(text("quotes ' \" -- ; DROP TABLE x; 🦀 \u{202e}rtl\t\n").is_ok());
        assert!(key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert_eq!(
            key(&"k".repeat(MAX_KEY_BYTES + 1)),
            Err(Violation::TooLong {
                len: MAX_KEY_BYTES + 1,
                max: MAX_KEY_BYTES
            })
        );
        assert_eq!(name(""), Err(Violation::Empty));
        assert!(key("").is_ok());
    }

    #[test]
    fn numbers() {
        assert_eq!(number(i64::MAX as u64), Ok(i64::MAX));
        assert!(number(u64::MAX).is_err());
    }

    #[test]
    fn times() {
        let leap = Utc
            .with_ymd_and_hms(2016, 12, 31, 23, 59, 59)
            .unwrap()
            .with_nanosecond(1_500_000_000)
            .unwrap();
        let t = time(leap).unwrap();
        assert_eq!(t.nanosecond(), 999_999_000);
        assert_eq!(t.second(), 59);
        let ns = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(1_999);
        assert_eq!(time(ns).unwrap().nanosecond(), 1_000);
        assert!(time(Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap()).is_err());
    }

    #[test]
    fn shown_values_are_short() {
        assert_eq!(shown("ab"), "\"ab\"");
        let long = "x".repeat(1 << 20);
        let s = shown(&long);
        assert!(s.len() < 100 && s.ends_with("(1048576 bytes)"), "{s}");
    }
}
