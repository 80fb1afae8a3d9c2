//! Nested buckets as flat sled keys.
//!
//! LiT keeps the firewall's data in nested bbolt buckets. sled has
//! flat trees, so a bucket path and a leaf key are encoded into one sled key:
//! each bucket as `0x01 ‖ u16 BE length ‖ name`, then the leaf key as
//! `0x02 ‖ key`. The tags keep a bucket and a key of the same name apart
//! (a group-level entry may be called `feature-kv-store`), every entry of a
//! bucket shares the bucket's prefix (so a bucket is one prefix scan or
//! prefix delete), and decoding is strict, so the migration can refuse an
//! unexpected shape and say where.

const BUCKET: u8 = 0x01;
const KEY: u8 = 0x02;

/// The prefix of every entry inside the bucket path `buckets`.
pub fn prefix(buckets: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buckets.iter().map(|b| b.len() + 3).sum::<usize>() + 1);
    for b in buckets {
        out.push(BUCKET);
        // Names longer than u16::MAX are refused by `encode`'s callers.
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// The sled key of `key` inside the bucket path `buckets`, or `None` when a
/// bucket name is longer than 65535 bytes.
pub fn encode(buckets: &[&[u8]], key: &[u8]) -> Option<Vec<u8>> {
    if buckets.iter().any(|b| b.len() > usize::from(u16::MAX)) {
        return None;
    }
    Some(key_in(prefix(buckets), key))
}

/// The sled key of `key` inside the bucket whose [`prefix`] is given.
pub fn key_in(mut prefix: Vec<u8>, key: &[u8]) -> Vec<u8> {
    prefix.push(KEY);
    prefix.extend_from_slice(key);
    prefix
}

/// A decoded sled key: its bucket path and leaf key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Bucket names, outermost first.
    pub buckets: Vec<Vec<u8>>,
    /// The leaf key.
    pub key: Vec<u8>,
}

impl Path {
    /// The path for messages: buckets and key, `/`-separated, non-text
    /// names in hex.
    pub fn display(&self) -> String {
        let show = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) if !s.is_empty() && s.chars().all(|c| !c.is_control()) => s.to_owned(),
            _ => format!("0x{}", hex::encode(b)),
        };
        let mut parts: Vec<String> = self.buckets.iter().map(|b| show(b)).collect();
        parts.push(show(&self.key));
        parts.join("/")
    }
}

/// Decodes a sled key; the error says what is malformed.
pub fn decode(bytes: &[u8]) -> Result<Path, String> {
    let mut buckets = Vec::new();
    let mut i = 0;
    loop {
        match bytes.get(i) {
            Some(&BUCKET) => {
                let len = bytes
                    .get(i + 1..i + 3)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                    .ok_or("truncated bucket length")?;
                let name = bytes
                    .get(i + 3..i + 3 + len)
                    .ok_or("truncated bucket name")?;
                buckets.push(name.to_vec());
                i += 3 + len;
            }
            Some(&KEY) => {
                return Ok(Path {
                    buckets,
                    key: bytes[i + 1..].to_vec(),
                });
            }
            Some(other) => return Err(format!("unknown segment tag {other:#04x} at byte {i}")),
            None => return Err("a bucket path without a leaf key".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_keep_buckets_and_keys_apart() {
        let k = encode(
            &[b"perm", b"rule", b"session-kv-store", &[1, 2, 3, 4]],
            b"feature-kv-store",
        )
        .unwrap();
        let p = decode(&k).unwrap();
        assert_eq!(p.buckets.len(), 4);
        assert_eq!(p.key, b"feature-kv-store");
        let nested = encode(
            &[
                b"perm",
                b"rule",
                b"session-kv-store",
                &[1, 2, 3, 4],
                b"feature-kv-store",
                b"f",
            ],
            b"k",
        )
        .unwrap();
        assert_ne!(decode(&nested).unwrap().buckets.len(), p.buckets.len());
        assert!(k.starts_with(&prefix(&[b"perm", b"rule"])));
        assert!(
            !k.starts_with(&prefix(&[b"perm", b"rul"])),
            "a prefix of a name is not a prefix of the path"
        );
        assert_eq!(
            decode(&k).unwrap().display(),
            "perm/rule/session-kv-store/0x01020304/feature-kv-store"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(decode(b"").is_err());
        assert!(decode(&[0x01, 0, 5, b'a']).is_err());
        assert!(decode(&[0x07]).is_err());
        assert!(decode(&prefix(&[b"x"])).is_err());
    }
}
