//! An order-independent digest of a set of records, with their count: what
//! the offline copy of the actions compares to prove that the table holds
//! exactly the records it wrote, in one pass over the table after the load
//! instead of one read-back query per chunk (docs/design.md §5.7).
//!
//! Each record is hashed with SHA-256 through its `Hash` implementation and
//! the first 16 bytes of each hash are added modulo 2^128. The sum does not
//! depend on the order records are added in, so the copy can add them in
//! the order it reads the source and the check in the order it reads the
//! table. Unlike an XOR, a record added twice does not cancel out. Two sets
//! that differ give the same sum only by a 128-bit accident; the count is
//! compared too.
//!
//! `Hash` feeds the same bytes for equal values within one process, and
//! std's implementations keep fields apart (a length before every slice, a
//! terminator after every string), so equal digests mean equal records.
//! Both sides of a comparison are computed in the same process, so the
//! platform's byte order and `Hash`'s layout never have to agree across
//! builds: the digest is never stored.

use std::hash::{Hash, Hasher};

use sha2::{Digest as _, Sha256};

/// The count and digest of a set of records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SetDigest {
    /// Records added.
    pub(crate) count: u64,
    sum: u128,
}

impl SetDigest {
    /// Adds one record.
    pub(crate) fn add<T: Hash + ?Sized>(&mut self, record: &T) {
        let mut h = Sha256Hasher(Sha256::new());
        record.hash(&mut h);
        let hash = h.0.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
        self.count += 1;
    }

    /// The digest's first bytes, for a message.
    pub(crate) fn short(&self) -> String {
        format!("{:08x}…", (self.sum >> 96) as u32)
    }
}

/// `Hash` into SHA-256: every byte a record's `Hash` writes is hashed.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Not used by [`SetDigest`], which takes the whole hash; a `Hasher`
    /// must still give a `u64`.
    fn finish(&self) -> u64 {
        let hash = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of<T: Hash>(records: &[T]) -> SetDigest {
        let mut d = SetDigest::default();
        for r in records {
            d.add(r);
        }
        d
    }

    #[test]
    fn the_order_records_are_added_in_does_not_matter() {
        let a = [(1, "a".to_owned()), (2, "b".into()), (3, "c".into())];
        let b = [(3, "c".to_owned()), (1, "a".into()), (2, "b".into())];
        assert_eq!(of(&a), of(&b));
        assert_eq!(of(&a).count, 3);
    }

    #[test]
    fn a_changed_missing_or_repeated_record_changes_it() {
        let base = of(&[(1, "a"), (2, "b")]);
        assert_ne!(base, of(&[(1, "a"), (2, "c")]));
        assert_ne!(base, of(&[(1, "a")]));
        // Added twice, a record does not cancel out as it would in an XOR.
        let twice = of(&[(1, "a"), (2, "b"), (2, "b"), (2, "b")]);
        assert_ne!(base.sum, twice.sum);
    }

    #[test]
    fn fields_are_kept_apart() {
        // The same bytes split differently between two fields.
        assert_ne!(of(&[("ab", "c")]), of(&[("a", "bc")]));
        assert_ne!(
            of(&[(vec![1u8, 2], vec![3u8])]),
            of(&[(vec![1u8], vec![2u8, 3])])
        );
    }
}
