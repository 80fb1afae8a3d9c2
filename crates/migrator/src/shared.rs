//! Helpers every part of the migration uses; a leaf that imports no other
//! module of the crate.

use std::time::Instant;

pub(crate) fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
