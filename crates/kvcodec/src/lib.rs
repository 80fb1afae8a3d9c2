//! The value codec of nodestore's key-value (sled) databases.
//!
//! Every value a KV store writes is one byte of record version followed by
//! the record serialised with serde and bincode 2 in the fixed
//! [`config()`]: the standard (varint, little-endian) encoding with a 64 MiB
//! limit on what one value may allocate while decoding.
//!
//! # Contract
//! - The configuration never changes: a different one would make existing
//!   databases unreadable. Each store keeps golden byte files of every record
//!   kind in `testdata/` and a test decodes them.
//! - A record type, once released under a version, is never edited. A new
//!   shape gets a new version number, and readers keep decoding the old ones.
//! - Decoding checks the version byte against the one the caller expects
//!   and refuses trailing bytes, so a value of the wrong kind fails loudly
//!   instead of decoding into garbage.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Decoding never allocates more than this for one value.
pub const DECODE_LIMIT: usize = 64 << 20;

/// The bincode configuration of every value: fixed forever.
pub fn config() -> Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Why a value did not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The value has no bytes at all.
    #[error("empty value")]
    Empty,
    /// The version byte is not the one expected.
    #[error("record version {found}, expected {expected}")]
    Version {
        /// The version byte found.
        found: u8,
        /// The version the reader supports.
        expected: u8,
    },
    /// The payload is not a valid record of the expected shape.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The record decoded but bytes were left over.
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
    /// The record could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(String),
}

/// Encodes `value` as record version `version`.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// The version byte of an encoded value.
pub fn version_of(bytes: &[u8]) -> Result<u8, CodecError> {
    bytes.first().copied().ok_or(CodecError::Empty)
}

/// A point in time inside a record: seconds and nanoseconds since the Unix
/// epoch. Shared by every store's records; its encoding never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeV1 {
    /// Whole seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl TimeV1 {
    /// The record form of a time.
    pub fn from_time(t: DateTime<Utc>) -> TimeV1 {
        TimeV1 {
            secs: t.timestamp(),
            nanos: t.timestamp_subsec_nanos(),
        }
    }

    /// The time, if the record holds a valid one.
    pub fn to_time(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_opt(self.secs, self.nanos).single()
    }
}

/// Decodes a value that must be record version `expected`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], expected: u8) -> Result<T, CodecError> {
    let found = version_of(bytes)?;
    if found != expected {
        return Err(CodecError::Version { found, expected });
    }
    let (value, used) = bincode::serde::decode_from_slice(&bytes[1..], config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    let left = bytes.len() - 1 - used;
    if left != 0 {
        return Err(CodecError::TrailingBytes(left));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: [u8; 8],
        balance: i64,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        label: String,
        when: Option<(i64, u32)>,
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            any::<[u8; 8]>(),
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            ".{0,40}",
            any::<Option<(i64, u32)>>(),
        )
            .prop_map(|(id, balance, blob, label, when)| Sample {
                id,
                balance,
                blob,
                label,
                when,
            })
    }

    proptest! {
        #[test]
        fn every_value_round_trips(v in sample(), version in any::<u8>()) {
            let bytes = encode(version, &v).unwrap();
            prop_assert_eq!(bytes[0], version);
            prop_assert_eq!(decode::<Sample>(&bytes, version).unwrap(), v);
        }

        #[test]
        fn truncated_values_fail_without_panicking(v in sample(), cut in 0usize..64) {
            let bytes = encode(1, &v).unwrap();
            let cut = cut.min(bytes.len() - 1);
            let short = &bytes[..bytes.len() - 1 - cut];
            prop_assert!(decode::<Sample>(short, 1).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<Sample>(&bytes, 1);
        }
    }

    #[test]
    fn a_wrong_version_or_trailing_bytes_are_refused() {
        let bytes = encode(2, &7u32).unwrap();
        assert_eq!(
            decode::<u32>(&bytes, 1),
            Err(CodecError::Version {
                found: 2,
                expected: 1
            })
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode::<u32>(&long, 2), Err(CodecError::TrailingBytes(1)));
        assert_eq!(decode::<u32>(&[], 2), Err(CodecError::Empty));
    }

    #[test]
    fn the_configuration_is_pinned() {
        // Varint little-endian: these bytes must never change.
        assert_eq!(
            encode(1, &(300u32, -1i64, "ab")).unwrap(),
            vec![1, 251, 44, 1, 1, 2, b'a', b'b']
        );
    }
}
