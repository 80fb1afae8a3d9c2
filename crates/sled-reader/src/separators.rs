//! The tree's index level just above the leaves, walked beside the chain
//! of leaves: the keys at which the index says a leaf starts, in key
//! order (docs/sled-format.md §6, "A lost split").

use crate::Inner;
use crate::node::{Data, Node};

/// A cursor over the separators of the lowest index level: the index
/// nodes whose children are leaves, followed through their right
/// siblings as the leaves are.
#[derive(Debug)]
pub(crate) struct Separators {
    node: Node,
    pos: usize,
    steps: usize,
}

impl Separators {
    /// Starts at `node`, the leftmost index node of the lowest level.
    pub(crate) fn new(node: Node) -> Self {
        Separators {
            node,
            pos: 0,
            steps: 0,
        }
    }

    /// The first separator above `key` inside its node's range whose child
    /// is not being merged away, passing over every separator at or below
    /// `key` (the walk only moves right, as the leaves do). `None` when the
    /// level ends, or when its next node cannot be read or does not start
    /// where the last one ended: the caller stops consulting it then, and
    /// the chain of leaves alone is read.
    pub(crate) fn first_above(&mut self, db: &Inner, key: &[u8]) -> Option<Vec<u8>> {
        loop {
            let Data::Index(children) = &self.node.data else {
                return None;
            };
            while let Some(child) = children.get(self.pos).copied() {
                let sep = self.node.full_key(self.pos);
                if !self.node.hi.is_empty() && sep >= self.node.hi {
                    break;
                }
                // A child being merged is absorbed by its left sibling,
                // whose range then covers its separator (sled's merge
                // marks the parent first and removes the separator last).
                if sep.as_slice() <= key
                    || sep < self.node.lo
                    || self.node.merging_child == Some(child)
                {
                    self.pos += 1;
                    continue;
                }
                return Some(sep);
            }
            if self.node.hi.is_empty() {
                return None;
            }
            self.steps += 1;
            if self.steps > db.step_limit() {
                return None;
            }
            let sibling = db.load(self.node.next?).ok()?;
            if sibling.is_leaf() || sibling.lo != self.node.hi {
                return None;
            }
            self.node = sibling;
            self.pos = 0;
        }
    }
}
