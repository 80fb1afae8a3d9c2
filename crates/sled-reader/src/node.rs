//! sled's tree nodes and the changes ("links") appended to them
//! (docs/sled-format.md §4).

use crate::codec::{Cursor, Short};

/// A decoded node: a leaf (keys and values) or an index (keys and child
/// page ids). Keys are stored without the first `prefix_len` bytes of `lo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) next: Option<u64>,
    pub(crate) merging_child: Option<u64>,
    pub(crate) merging: bool,
    pub(crate) prefix_len: u8,
    pub(crate) lo: Vec<u8>,
    pub(crate) hi: Vec<u8>,
    pub(crate) keys: Vec<Vec<u8>>,
    pub(crate) data: Data,
}

/// What a node holds beside its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    Leaf(Vec<Vec<u8>>),
    Index(Vec<u64>),
}

impl Default for Data {
    fn default() -> Self {
        Data::Leaf(Vec::new())
    }
}

/// A change appended to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    Set(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    ParentMergeIntention(u64),
    ParentMergeConfirm,
    ChildMergeCap,
}

/// Why a link could not be applied: the page is not what sled would have
/// built, so its contents cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApplyError {
    SetOnIndex,
    DelOnIndex,
    MergeOnLeaf,
    DoubleMergeIntention,
    NoMergeIntention,
    UnknownChild(u64),
    AfterMerge,
    PastUpperBound,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyError::SetOnIndex => "a key set on an index node",
            ApplyError::DelOnIndex => "a key removed from an index node",
            ApplyError::MergeOnLeaf => "a merge confirmed on a leaf",
            ApplyError::DoubleMergeIntention => "a second merge begun before the first ended",
            ApplyError::NoMergeIntention => "a merge confirmed that was never begun",
            ApplyError::UnknownChild(_) => "a merge of a child the node does not hold",
            ApplyError::AfterMerge => "a change to a node already merged away",
            ApplyError::PastUpperBound => "a key set at or above the node's upper bound",
        })
    }
}

/// The longest key or value sled can have written inside one segment-sized
/// buffer is bounded by the buffer it came from; sequences are bounded by
/// the bytes left, so a damaged count cannot allocate more than the input.
fn seq_len(c: &Cursor<'_>, n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX).min(c.remaining())
}

impl Node {
    /// Decodes a node as sled 0.34.7 serialises it: `next`, `merging_child`
    /// (shifted options), `merging`, `prefix_len`, `lo`, `hi`, then the data
    /// tag, the count, the keys and the values or child ids.
    pub(crate) fn decode(buf: &[u8]) -> Result<Node, Short> {
        let mut c = Cursor::new(buf);
        let next = non_zero(c.varint()?);
        let merging_child = non_zero(c.varint()?);
        let merging = c.u8()? != 0;
        let prefix_len = c.u8()?;
        let lo = c.bytes()?.to_vec();
        let hi = c.bytes()?.to_vec();
        let tag = c.u8()?;
        let n = c.varint()?;
        // sled reads at most `n` items and stops early at the end of the
        // bytes; the same here, so a short sequence decodes as sled's does.
        let cap = seq_len(&c, n);
        let mut keys = Vec::with_capacity(cap);
        while (keys.len() as u64) < n && !c.is_empty() {
            keys.push(c.bytes()?.to_vec());
        }
        let data = match tag {
            0 => {
                let mut values = Vec::with_capacity(keys.len());
                while (values.len() as u64) < n && !c.is_empty() {
                    values.push(c.bytes()?.to_vec());
                }
                Data::Leaf(values)
            }
            1 => {
                let mut ptrs = Vec::with_capacity(keys.len());
                while (ptrs.len() as u64) < n && !c.is_empty() {
                    ptrs.push(c.varint()?);
                }
                Data::Index(ptrs)
            }
            t => return Err(Short::BadTag(t)),
        };
        Ok(Node {
            next,
            merging_child,
            merging,
            prefix_len,
            lo,
            hi,
            keys,
            data,
        })
    }

    /// True when the node is a leaf.
    pub(crate) fn is_leaf(&self) -> bool {
        matches!(self.data, Data::Leaf(_))
    }

    /// Applies one link as sled's `Node::apply` does, with every case sled
    /// asserts on turned into an error.
    pub(crate) fn apply(&mut self, link: Link) -> Result<(), ApplyError> {
        if self.merging {
            return Err(ApplyError::AfterMerge);
        }
        match link {
            Link::Set(k, v) => {
                // sled's `set_leaf` asserts this (keys are stored without
                // the node's prefix, and so is the bound compared).
                if !self.hi.is_empty() {
                    let hi = self.hi.get(usize::from(self.prefix_len)..);
                    if hi.is_none_or(|hi| k.as_slice() >= hi) {
                        return Err(ApplyError::PastUpperBound);
                    }
                }
                let Data::Leaf(values) = &mut self.data else {
                    return Err(ApplyError::SetOnIndex);
                };
                match self.keys.binary_search(&k) {
                    Ok(i) => values[i] = v,
                    Err(i) => {
                        self.keys.insert(i, k);
                        values.insert(i, v);
                    }
                }
            }
            Link::Del(k) => {
                let Data::Leaf(values) = &mut self.data else {
                    return Err(ApplyError::DelOnIndex);
                };
                if let Ok(i) = self.keys.binary_search(&k) {
                    self.keys.remove(i);
                    values.remove(i);
                }
            }
            Link::ParentMergeIntention(pid) => {
                if self.merging_child.is_some() {
                    return Err(ApplyError::DoubleMergeIntention);
                }
                self.merging_child = non_zero(pid);
            }
            Link::ParentMergeConfirm => {
                let child = self
                    .merging_child
                    .take()
                    .ok_or(ApplyError::NoMergeIntention)?;
                let Data::Index(ptrs) = &mut self.data else {
                    return Err(ApplyError::MergeOnLeaf);
                };
                let i = ptrs
                    .iter()
                    .position(|p| *p == child)
                    .ok_or(ApplyError::UnknownChild(child))?;
                ptrs.remove(i);
                self.keys.remove(i);
            }
            Link::ChildMergeCap => self.merging = true,
        }
        Ok(())
    }

    /// The bytes every stored key of this node starts with.
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.lo[..usize::from(self.prefix_len).min(self.lo.len())]
    }

    /// The full key of stored key `i`.
    pub(crate) fn full_key(&self, i: usize) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix().len() + self.keys[i].len());
        k.extend_from_slice(self.prefix());
        k.extend_from_slice(&self.keys[i]);
        k
    }

    /// Checks what every later step relies on: as many values or children
    /// as keys, keys sorted and unique, the prefix inside `lo` and `hi`.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let n = match &self.data {
            Data::Leaf(v) => v.len(),
            Data::Index(p) => p.len(),
        };
        if n != self.keys.len() {
            return Err("the node holds a different number of keys and values");
        }
        if usize::from(self.prefix_len) > self.lo.len()
            || (!self.hi.is_empty() && usize::from(self.prefix_len) > self.hi.len())
        {
            return Err("the node's key prefix is longer than its bounds");
        }
        if !self.hi.is_empty() && self.lo >= self.hi {
            return Err("the node's lower bound is not below its upper bound");
        }
        if self.keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err("the node's keys are not in order");
        }
        Ok(())
    }

    /// For an index node: the child whose range holds `key`, as sled's
    /// `index_next_node` picks it (the last separator not above the key).
    pub(crate) fn child_for(&self, key: &[u8]) -> Option<(usize, u64)> {
        let Data::Index(ptrs) = &self.data else {
            return None;
        };
        let p = usize::from(self.prefix_len);
        let suffix = key.get(p..).unwrap_or(&[]);
        let pos = match self.keys.binary_search_by(|k| k.as_slice().cmp(suffix)) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        ptrs.get(pos).map(|c| (pos, *c))
    }
}

impl Link {
    /// Decodes a link: a tag byte, then its fields.
    pub(crate) fn decode(buf: &[u8]) -> Result<Link, Short> {
        let mut c = Cursor::new(buf);
        Ok(match c.u8()? {
            0 => {
                let k = c.bytes()?.to_vec();
                Link::Set(k, c.bytes()?.to_vec())
            }
            1 => Link::Del(c.bytes()?.to_vec()),
            2 => Link::ParentMergeIntention(c.varint()?),
            3 => Link::ParentMergeConfirm,
            4 => Link::ChildMergeCap,
            t => return Err(Short::BadTag(t)),
        })
    }
}

/// Decodes the meta page: a sequence of (tree name, root page id) pairs up
/// to the end of the bytes.
pub(crate) fn decode_meta(buf: &[u8]) -> Result<Vec<(Vec<u8>, u64)>, Short> {
    let mut c = Cursor::new(buf);
    let mut out = Vec::new();
    while !c.is_empty() {
        let name = c.bytes()?.to_vec();
        out.push((name, c.varint()?));
    }
    Ok(out)
}

fn non_zero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}
