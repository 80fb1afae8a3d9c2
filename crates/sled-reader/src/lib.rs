//! A read-only reader of sled 0.34.7's files.
//!
//! nodestore's key-value databases are sled 0.34.7 databases, and sled is
//! the wrong tool for reading one that no process holds: opening it writes
//! (sled zeroes the log after the last message it accepts, zeroes torn
//! segments, writes a new snapshot and deletes blob files), it panics or
//! spins on some damage, and its page table and cache set a memory floor
//! that grows with the database. This crate reads the same files itself.
//!
//! # The contract
//! - **Never writes.** Every file is opened read-only; nothing in the
//!   directory changes, whatever the files hold.
//! - **Never panics, never hangs.** Every length, offset, count and page id
//!   read from disk is checked before use, and every walk over on-disk
//!   structure is bounded (a cycle of page pointers is an error). Damage is
//!   an [`Error::Damaged`] naming where, never a panic.
//! - **Reads what sled would read.** [`Db::open`] recovers the page table
//!   exactly as sled 0.34.7's open does (snapshot, segment headers, the
//!   unstable tail, the log from the snapshot on), and [`Tree::iter`]
//!   yields every key and value of a tree in key order: on every database
//!   sled opens cleanly, exactly sled's view (tested differentially against
//!   sled itself).
//! - **Salvages.** [`Tree::salvage`] reads past pages it cannot read: it
//!   yields every record of every readable leaf and lists, as typed
//!   [`Damage`], each key range it had to skip and why.
//! - **Bounded memory.** The page table (where each page's base and
//!   changes are in the log, [`OpenReport::page_table_bytes`]) plus one
//!   segment buffer while recovering and one page while reading; records
//!   stream.
//!
//! The format as this reader understands it is described in
//! `docs/sled-format.md`; the comments cite its sections.

mod codec;
mod log;
mod node;
mod recover;
mod separators;
mod snapshot;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{Kind, Log, PageState, PageTable};
use node::{Data, Link, Node};
use separators::Separators;

/// One record of a tree: its key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Where damage was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A byte offset in the log file `db`.
    Log {
        /// The offset.
        offset: u64,
    },
    /// A file beside the log (a snapshot or a blob).
    File {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Log { offset } => write!(f, "log offset {offset}"),
            Place::File { path } => write!(f, "{}", path.display()),
        }
    }
}

/// A range of keys a salvaging read could not read: from `from` (inclusive)
/// to `to` (exclusive; `None` for the end of the tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key that may be missing.
    pub from: Vec<u8>,
    /// The first key known to be readable again, if any.
    pub to: Option<Vec<u8>>,
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keys from {}", hex(&self.from))?;
        match &self.to {
            Some(to) => write!(f, " up to {}", hex(to)),
            None => f.write_str(" to the end of the tree"),
        }
    }
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "the start".into();
    }
    let mut s = String::with_capacity(2 + 2 * b.len().min(32));
    s.push_str("0x");
    for x in b.iter().take(32) {
        s.push_str(&format!("{x:02x}"));
    }
    if b.len() > 32 {
        s.push('…');
    }
    s
}

/// Something the reader could not read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where in the files.
    pub place: Place,
    /// The page, when the damage is in one.
    pub page: Option<u64>,
    /// The tree, when known.
    pub tree: Option<String>,
    /// The keys that could not be read, or not with certainty, when known.
    pub keys: Option<KeyRange>,
    /// What is wrong, in words.
    pub reason: String,
}

impl Error {
    /// A whole file beside the log that does not read (a `conf`, a
    /// snapshot), as [`Error::Damaged`].
    pub(crate) fn damaged_file(path: &Path, reason: impl Into<String>) -> Error {
        Error::Damaged(Box::new(Damage {
            place: Place::File {
                path: path.to_path_buf(),
            },
            page: None,
            tree: None,
            keys: None,
            reason: reason.into(),
        }))
    }
}

impl Damage {
    /// The damage in words without its tree: the keys, why, and where; for
    /// a list that names the tree beside it.
    pub fn what(&self) -> String {
        let keys = match &self.keys {
            Some(k) => format!("{k} lost or in doubt: "),
            None => String::new(),
        };
        match self.page {
            Some(p) => format!("{keys}{} (page {p}, {})", self.reason, self.place),
            None => format!("{keys}{} ({})", self.reason, self.place),
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.tree {
            write!(f, "tree {t}: ")?;
        }
        f.write_str(&self.what())
    }
}

/// Everything that can go wrong reading a database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The directory does not hold a sled database.
    #[error("{path} is not a sled database: {reason}")]
    NotSled {
        /// The directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A sled database this reader does not read.
    #[error("{path} uses {what}, which this reader does not read")]
    Unsupported {
        /// The database.
        path: PathBuf,
        /// What it uses.
        what: String,
    },
    /// The files are damaged where the read needed them.
    #[error("the sled database is damaged: {0}")]
    Damaged(Box<Damage>),
}

/// What opening found: figures for reports and the bench.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// The snapshot file read, if there was one.
    pub snapshot: Option<PathBuf>,
    /// Pages in the page table, free ones included.
    pub pages: usize,
    /// Log messages read after the snapshot.
    pub messages: u64,
    /// Heap bytes the page table holds.
    pub page_table_bytes: usize,
    /// There was no `conf`, or one of 8 bytes or fewer: sled 0.34.7 then
    /// opens the database with its opener's parameters (a node's are
    /// sled's defaults) and so does this reader (docs/sled-format.md §3).
    pub conf_missing: bool,
    /// There was no log file `db`: sled 0.34.7 creates an empty one, so
    /// the database opens empty; this reader reads it as empty.
    pub log_missing: bool,
    /// Damage that ended sled's read of the log before segments that were
    /// written later: those segments are not part of sled's view (nor of
    /// this one). `None` when the log ends where it was last written.
    pub log_cut: Option<Damage>,
    /// What a salvaging open ([`Db::open_salvaging`]) could not read and
    /// went on after: a `conf` that does not read (the log is then read
    /// with sled's defaults), a snapshot that does not read (the whole log
    /// is then recovered without it), then the log ranges, in log order;
    /// empty for [`Db::open`].
    pub skipped: Vec<Damage>,
    /// Why sled itself cannot open this database, when a salvaging open
    /// found that sled's own view of it does not open: its recovery would
    /// leave a page without state, on which sled 0.34.7 panics
    /// (docs/sled-format.md §5), or a strict open fails for the reasons
    /// [`Db::open`] names. A strict open fails with this damage instead.
    pub sled_cannot_open: Option<Damage>,
}

/// A sled database, recovered and open for reading. Cheap to clone: clones
/// share the open files and the page table.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: Log,
    pages: PageTable,
    trees: BTreeMap<Vec<u8>, u64>,
    report: OpenReport,
    /// A salvaging open that read past damage: sled's own view, which the
    /// salvaging iterator reads in key ranges this view cannot
    /// (docs/sled-format.md §6).
    fallback: Option<Db>,
    /// The first page recovery left without state below the highest one
    /// ([`log::PageTable`]'s `gap`).
    gap: Option<u64>,
}

impl Db {
    /// Opens the database in `dir` read-only and recovers its page table
    /// as sled 0.34.7 would (docs/sled-format.md §5).
    ///
    /// # Errors
    /// [`Error::NotSled`] where `dir` holds neither `conf` nor `db`,
    /// [`Error::Unsupported`] for another format version or compression,
    /// [`Error::Io`] when a file cannot be read, and [`Error::Damaged`]
    /// where sled itself would fail or panic (a `conf` that does not parse,
    /// a damaged snapshot, two segments at one position, a meta page that
    /// does not decode, a page its recovery leaves without state).
    pub fn open(dir: impl AsRef<Path>) -> Result<Db, Error> {
        let inner = Inner::open(dir.as_ref(), false)?;
        if let Some(gap) = inner.gap {
            return Err(Error::Damaged(Box::new(inner.gap_damage(gap))));
        }
        Ok(Db {
            inner: Arc::new(inner),
        })
    }

    /// Opens the database in `dir` read-only for salvage. As [`Db::open`],
    /// except where the log is damaged: sled ends its read of a segment at
    /// the first message that does not read whole (and its read of the log
    /// there, when that is in the part written last), losing every change
    /// written after it; this open goes on at the next message that reads
    /// whole (docs/sled-format.md §6). The view is then no longer exactly
    /// sled's: it holds changes sled would drop, and
    /// [`OpenReport::skipped`] names each log range that could not be read
    /// (changes written there are missing). Every record it yields was
    /// written by the database's writer; one that was changed or removed
    /// after the damage shows that later state. Where that view does not
    /// hold together (a key range its salvaging iterator cannot read, or
    /// its meta page), sled's own view is read instead, so it never keeps
    /// less than sled's recovery but what the writer removed later.
    ///
    /// # Errors
    /// As [`Db::open`].
    pub fn open_salvaging(dir: impl AsRef<Path>) -> Result<Db, Error> {
        let dir = dir.as_ref();
        let mut past = match Inner::open(dir, true) {
            Ok(inner) => inner,
            Err(Error::Damaged(_)) => {
                // sled's own view, which a salvage reads even where sled
                // itself would panic after recovering it.
                let mut strict = Inner::open(dir, false)?;
                strict.report.sled_cannot_open = strict.gap.take().map(|g| strict.gap_damage(g));
                return Ok(Db {
                    inner: Arc::new(strict),
                });
            }
            Err(e) => return Err(e),
        };
        if !past.report.skipped.is_empty() || past.gap.is_some() {
            // sled's own view: read where this one cannot, and asked
            // whether sled could open the database at all.
            match Inner::open(dir, false) {
                Ok(mut strict) => {
                    past.report.sled_cannot_open = strict.gap.take().map(|g| strict.gap_damage(g));
                    past.fallback = Some(Db {
                        inner: Arc::new(strict),
                    });
                }
                // Where the strict open fails, sled fails or panics too
                // (`Db::open`).
                Err(Error::Damaged(mut d)) => {
                    d.reason = format!("sled cannot open this database: {}", d.reason);
                    past.report.sled_cannot_open = Some(*d);
                }
                Err(_) => {}
            }
        }
        Ok(Db {
            inner: Arc::new(past),
        })
    }
}

/// Whether `dir` holds a sled database: sled's configuration file `conf`
/// or its log `db` is there. sled 0.34.7 opens a log whose `conf` is gone
/// (it writes a new one), and a `conf` without a log as an empty database,
/// so either is a database, perhaps a damaged one.
pub fn holds_database(dir: impl AsRef<Path>) -> bool {
    log::holds_database(dir.as_ref())
}

/// A snapshot sled stopped writing in `dir` (killed between creating
/// `snap.*.generating` and renaming it), if the last snapshot file is one
/// that does not read whole. sled 0.34.7 picks it and refuses to open the
/// database; this reader passes over it (docs/sled-format.md §3), and a
/// writer about to open the database with sled removes it first.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed.
pub fn unfinished_snapshot(dir: impl AsRef<Path>) -> Result<Option<PathBuf>, Error> {
    snapshot::unfinished_snapshot(dir.as_ref())
}

impl Inner {
    /// Recovers the page table and reads the meta page; `salvage` reads
    /// the log past damage.
    fn open(dir: &Path, salvage: bool) -> Result<Inner, Error> {
        if !log::holds_database(dir) {
            return Err(Error::NotSled {
                path: dir.to_path_buf(),
                reason: "it holds neither sled's configuration file conf nor its log db".into(),
            });
        }
        // A conf that does not read: a salvage reads the log as a node's
        // sled would have written it, and names the file.
        let mut skipped = Vec::new();
        let conf = match log::read_conf(dir) {
            Ok(conf) => conf,
            Err(Error::Damaged(d)) if salvage => {
                skipped.push(*d);
                None
            }
            Err(e) => return Err(e),
        };
        let conf_missing = conf.is_none() && skipped.is_empty();
        let log = Log::open(dir, conf.unwrap_or(log::Conf::SLED_DEFAULT))?;
        // A snapshot that does not read: sled refuses the database; a
        // salvage recovers the whole log without it, as sled does once the
        // file is removed (docs/sled-format.md §6).
        let (snapshot, snap) = match snapshot::read_snapshot(&log) {
            Ok(read) => read,
            Err(Error::Damaged(d)) if salvage => {
                skipped.push(*d);
                (None, snapshot::Snapshot::default())
            }
            Err(e) => return Err(e),
        };
        let (pages, rec) = recover::recover(&log, snap, salvage)?;
        skipped.extend(rec.skipped);
        let mut db = Inner {
            report: OpenReport {
                snapshot,
                pages: pages.len(),
                messages: rec.messages,
                page_table_bytes: pages.heap_bytes(),
                conf_missing,
                log_missing: log.missing(),
                log_cut: rec.stopped,
                skipped,
                sled_cannot_open: None,
            },
            log,
            pages,
            trees: BTreeMap::new(),
            fallback: None,
            gap: None,
        };
        db.gap = db.pages.gap();
        db.trees = match (db.read_meta(), db.gap) {
            (Ok(trees), _) => trees,
            // sled panics over the gap before it reads any page.
            (Err(Error::Damaged(_)), Some(gap)) if !salvage => {
                return Err(Error::Damaged(Box::new(db.gap_damage(gap))));
            }
            (Err(e), _) => return Err(e),
        };
        Ok(db)
    }

    /// The damage of a page sled's recovery leaves without state.
    fn gap_damage(&self, pid: u64) -> Damage {
        Damage {
            place: Place::File {
                path: self.log.dir.join("db"),
            },
            page: Some(pid),
            tree: None,
            keys: None,
            reason: "every write of the page was lost from the log, and a page written after it \
                     survives: sled 0.34.7 panics on opening this database (\"tried to serialize \
                     Uninitialized\", after writing to its log), so no node can open it"
                .into(),
        }
    }
}

impl Db {
    /// What opening found.
    pub fn report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// sled's own view of the database (docs/sled-format.md §5): this one,
    /// unless it is a salvaging open that read past damage, which keeps
    /// sled's view beside it; `None` when that view could not be opened.
    pub fn sled_view(&self) -> Option<Db> {
        match &self.inner.fallback {
            Some(strict) => Some(strict.clone()),
            None => self.inner.report.skipped.is_empty().then(|| self.clone()),
        }
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.inner.log.dir
    }

    /// The names of every tree, sled's default tree included, in byte order.
    pub fn tree_names(&self) -> impl Iterator<Item = &[u8]> {
        self.inner.trees.keys().map(Vec::as_slice)
    }

    /// The tree `name`, if the database has it.
    pub fn tree(&self, name: &[u8]) -> Option<Tree> {
        self.inner.trees.get(name).map(|root| Tree {
            db: Arc::clone(&self.inner),
            name: String::from_utf8_lossy(name).into_owned(),
            raw_name: name.to_vec(),
            root: *root,
        })
    }
}

impl Inner {
    fn damaged(&self, pid: Option<u64>, reason: impl Into<String>) -> Error {
        let place = pid
            .and_then(|p| match self.pages.get(p) {
                Some(PageState::Present { base, .. }) => Some(Place::Log { offset: base.lid }),
                _ => None,
            })
            .unwrap_or(Place::File {
                path: self.log.path.clone(),
            });
        Error::Damaged(Box::new(Damage {
            place,
            page: pid,
            tree: None,
            keys: None,
            reason: reason.into(),
        }))
    }

    /// The meta page: every tree's name and root page. An empty page table
    /// is a database sled never finished creating: it has no trees.
    fn read_meta(&self) -> Result<BTreeMap<Vec<u8>, u64>, Error> {
        match self.pages.get(log::META_PID) {
            None => Ok(BTreeMap::new()),
            Some(PageState::Present { base, .. }) => {
                let (kind, body) = self.log.read_page_part(log::META_PID, base)?;
                if kind.inline() != Kind::InlineMeta {
                    return Err(self.damaged(Some(0), "the meta page holds something else"));
                }
                let pairs = node::decode_meta(&body).map_err(|e| {
                    self.damaged(Some(0), format!("the meta page does not decode: {e}"))
                })?;
                Ok(pairs.into_iter().collect())
            }
            Some(_) => Err(self.damaged(Some(0), "the meta page is missing from the page table")),
        }
    }

    /// Loads page `pid`: its base node with every change applied, checked.
    fn load(&self, pid: u64) -> Result<Node, Error> {
        let Some(PageState::Present { base, frags }) = self.pages.get(pid) else {
            return Err(self.damaged(Some(pid), "a tree points at a page that is free or missing"));
        };
        let (kind, body) = self.log.read_page_part(pid, base)?;
        if kind.inline() != Kind::InlineNode {
            return Err(self.damaged(Some(pid), "a tree points at a page that is not a node"));
        }
        let mut node = Node::decode(&body)
            .map_err(|e| self.damaged(Some(pid), format!("the node does not decode: {e}")))?;
        for f in frags {
            let (kind, body) = self.log.read_page_part(pid, f)?;
            if kind.inline() != Kind::InlineLink {
                return Err(self.damaged(Some(pid), "a change to the node holds something else"));
            }
            let link = Link::decode(&body).map_err(|e| {
                self.damaged(
                    Some(pid),
                    format!("a change to the node does not decode: {e}"),
                )
            })?;
            node.apply(link).map_err(|e| {
                self.damaged(
                    Some(pid),
                    format!("a change to the node is impossible: {e}"),
                )
            })?;
        }
        node.check().map_err(|e| self.damaged(Some(pid), e))?;
        Ok(node)
    }

    /// The most pages any walk may visit: every page once.
    fn step_limit(&self) -> usize {
        self.pages.len() + 1
    }
}

/// One tree of a [`Db`] (it keeps the database open).
#[derive(Debug, Clone)]
pub struct Tree {
    db: Arc<Inner>,
    name: String,
    raw_name: Vec<u8>,
    root: u64,
}

impl Tree {
    /// The tree's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every key and value in key order, as sled's `Tree::iter` yields them.
    /// The first page that cannot be read ends the iteration with an error.
    pub fn iter(&self) -> Iter {
        Iter::new(self.clone(), false)
    }

    /// Every readable key and value in key order: pages that cannot be read
    /// are skipped and listed by [`Iter::damage`], with the key range each
    /// one covered as far as the tree's index tells.
    pub fn salvage(&self) -> Iter {
        Iter::new(self.clone(), true)
    }

    fn tag(&self, e: Error) -> Error {
        match e {
            Error::Damaged(mut d) => {
                d.tree.get_or_insert_with(|| self.name.clone());
                Error::Damaged(d)
            }
            e => e,
        }
    }

    /// The value of `key`, found by descending from the root as sled does.
    ///
    /// # Errors
    /// [`Error::Damaged`] when a page on the way cannot be read.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let leaf = self.leaf_for(key).map_err(|e| self.tag(e))?;
        let suffix = key.get(usize::from(leaf.prefix_len)..).unwrap_or(&[]);
        Ok(
            match (
                &leaf.data,
                leaf.keys.binary_search_by(|k| k.as_slice().cmp(suffix)),
            ) {
                (Data::Leaf(values), Ok(i)) => values.get(i).cloned(),
                _ => None,
            },
        )
    }

    /// The leaf whose range holds `key`.
    fn leaf_for(&self, key: &[u8]) -> Result<Node, Error> {
        self.leaf_pid_for(key).map(|(_, node)| node)
    }

    /// The leaf whose range holds `key`, and its page id.
    fn leaf_pid_for(&self, key: &[u8]) -> Result<(u64, Node), Error> {
        let db = &self.db;
        let mut pid = self.root;
        for _ in 0..db.step_limit() {
            let node = db.load(pid)?;
            if !node.hi.is_empty() && key >= node.hi.as_slice() {
                pid = node.next.ok_or_else(|| {
                    db.damaged(
                        Some(pid),
                        "a node ends before the tree does and has no right sibling",
                    )
                })?;
                continue;
            }
            match node.data {
                Data::Leaf(_) => return Ok((pid, node)),
                Data::Index(_) => {
                    pid = node
                        .child_for(key)
                        .ok_or_else(|| {
                            db.damaged(
                                Some(pid),
                                "an index node without a child for a key in its range",
                            )
                        })?
                        .1;
                }
            }
        }
        Err(db.damaged(Some(pid), "the tree's pages form a cycle"))
    }

    /// The last key and its value (descends the right edge; walks the tree
    /// when the last leaf is empty).
    ///
    /// # Errors
    /// [`Error::Damaged`] when a page on the way cannot be read.
    pub fn last(&self) -> Result<Option<Entry>, Error> {
        let db = &self.db;
        let mut pid = self.root;
        let mut steps = 0;
        let leaf = loop {
            steps += 1;
            if steps > db.step_limit() {
                return Err(self.tag(db.damaged(Some(pid), "the tree's pages form a cycle")));
            }
            let node = db.load(pid).map_err(|e| self.tag(e))?;
            if !node.hi.is_empty() {
                match node.next {
                    Some(n) => {
                        pid = n;
                        continue;
                    }
                    None => {
                        return Err(self.tag(db.damaged(
                            Some(pid),
                            "a node ends before the tree does and has no right sibling",
                        )));
                    }
                }
            }
            match &node.data {
                Data::Leaf(_) => break node,
                Data::Index(p) => {
                    pid = *p.last().ok_or_else(|| {
                        self.tag(db.damaged(Some(pid), "an index node without children"))
                    })?;
                }
            }
        };
        match &leaf.data {
            Data::Leaf(values) if !values.is_empty() => {
                let i = values.len() - 1;
                Ok(Some((leaf.full_key(i), values[i].clone())))
            }
            _ => {
                let mut last = None;
                for item in self.iter() {
                    last = Some(item?);
                }
                Ok(last)
            }
        }
    }

    /// For leaf `pid`, which ends the chain of leaves (it has no upper
    /// bound): where the tree's index bounds it instead, if anywhere.
    /// Descending from the root towards the leaf's first key, the index
    /// nodes passed bound the keys sent to it. `None` when nothing bounds
    /// it, or the way down does not reach it.
    fn index_bound(&self, pid: u64, leaf: &Node) -> Option<Vec<u8>> {
        let db = &self.db;
        let key = leaf.lo.as_slice();
        let mut bound: Option<Vec<u8>> = None;
        let mut tighten = |b: Vec<u8>| {
            if bound.as_ref().is_none_or(|old| b < *old) {
                bound = Some(b);
            }
        };
        let mut cur = self.root;
        for _ in 0..db.step_limit() {
            let node = db.load(cur).ok()?;
            if !node.hi.is_empty() && key >= node.hi.as_slice() {
                cur = node.next?;
                continue;
            }
            if !node.hi.is_empty() {
                tighten(node.hi.clone());
            }
            match &node.data {
                Data::Leaf(_) => return bound.filter(|_| cur == pid),
                Data::Index(children) => {
                    let (pos, child) = node.child_for(key)?;
                    if pos + 1 < children.len() {
                        tighten(node.full_key(pos + 1));
                    }
                    cur = child;
                }
            }
        }
        None
    }

    /// Whether the index sends `at`, a key inside leaf `pid`'s range, to
    /// another leaf that starts there and is not being merged: then the
    /// leaf's split at `at` was lost from the log (its half before `at` and
    /// its link to the other half; docs/sled-format.md §6). Returns the
    /// other leaf's page id. `None` when the index agrees with the leaf, or
    /// cannot be read.
    fn split_lost_at(&self, pid: u64, at: &[u8]) -> Option<u64> {
        let (other, node) = self.leaf_pid_for(at).ok()?;
        (other != pid && node.lo == at && !node.merging).then_some(other)
    }

    /// The first leaf at or after `key` that can be read, found through the
    /// index: the leaf holding `key` if it reads, else the leftmost leaf of
    /// the nearest subtree to the right of it. `None` when nothing to the
    /// right can be read.
    fn seek_readable(&self, key: &[u8], skip: &HashSet<u64>) -> Option<(u64, Node)> {
        let db = &self.db;
        // Right neighbours met on the way down, deepest last.
        let mut right: Vec<u64> = Vec::new();
        let mut pid = self.root;
        for _ in 0..db.step_limit() {
            let node = match db.load(pid) {
                Ok(n) if !skip.contains(&pid) => n,
                _ => break,
            };
            if !node.hi.is_empty() && key >= node.hi.as_slice() {
                match node.next {
                    Some(n) => {
                        pid = n;
                        continue;
                    }
                    None => break,
                }
            }
            match &node.data {
                Data::Leaf(_) => return Some((pid, node)),
                Data::Index(ptrs) => {
                    let Some((pos, child)) = node.child_for(key) else {
                        break;
                    };
                    if let Some(r) = ptrs.get(pos + 1) {
                        right.push(*r);
                    } else if let Some(n) = node.next {
                        right.push(n);
                    }
                    pid = child;
                }
            }
        }
        // Descend the leftmost path of the nearest readable right subtree.
        while let Some(start) = right.pop() {
            let mut pid = start;
            for _ in 0..db.step_limit() {
                if skip.contains(&pid) {
                    break;
                }
                let Ok(node) = db.load(pid) else { break };
                match &node.data {
                    Data::Leaf(_) if node.lo.as_slice() > key => return Some((pid, node)),
                    Data::Leaf(_) => break,
                    Data::Index(ptrs) => match ptrs.first() {
                        Some(c) => pid = *c,
                        None => break,
                    },
                }
            }
        }
        None
    }
}

/// The records of a tree in key order ([`Tree::iter`], [`Tree::salvage`]).
#[derive(Debug)]
pub struct Iter {
    tree: Tree,
    salvage: bool,
    /// The leaf being read and the position in it.
    leaf: Option<(u64, Node, usize)>,
    started: bool,
    done: bool,
    last_key: Option<Vec<u8>>,
    visited: HashSet<u64>,
    /// The index level above the leaves, walked beside them to find
    /// splits missing from the log; `None` once it cannot be read on.
    separators: Option<Separators>,
    damage: Vec<Damage>,
    /// Salvage past damage in the log: the same tree in sled's own view,
    /// read in step for the key ranges this view cannot read, with the
    /// entry it read ahead.
    fallback: Option<(Box<Iter>, Option<Entry>)>,
    /// Entries of the fallback waiting to be yielded.
    pending: VecDeque<Entry>,
}

impl Iter {
    fn new(tree: Tree, salvage: bool) -> Self {
        let fallback = if salvage {
            tree.db
                .fallback
                .as_ref()
                .and_then(|db| db.tree(&tree.raw_name))
                .map(|t| (Box::new(Iter::new(t, true)), None))
        } else {
            None
        };
        Iter {
            tree,
            salvage,
            leaf: None,
            started: false,
            done: false,
            last_key: None,
            visited: HashSet::new(),
            separators: None,
            damage: Vec::new(),
            fallback,
            pending: VecDeque::new(),
        }
    }

    /// Salvage past damage in the log: queues sled's own view of the keys
    /// in `range`, which this view could not read. They are the state
    /// before the damage: a change written in the damaged part of the log
    /// and after is missing from them, so the damage stays listed.
    fn fill_from_fallback(&mut self, range: &KeyRange) -> usize {
        let Some((fb, ahead)) = self.fallback.as_mut() else {
            return 0;
        };
        let mut n = 0;
        loop {
            let entry = match ahead.take() {
                Some(e) => e,
                None => match fb.next() {
                    Some(Ok(e)) => e,
                    _ => break,
                },
            };
            let after_last = self.last_key.as_ref().is_none_or(|l| entry.0 > *l);
            if entry.0 < range.from || !after_last {
                continue;
            }
            if range.to.as_ref().is_some_and(|to| entry.0 >= *to) {
                *ahead = Some(entry);
                break;
            }
            self.pending.push_back(entry);
            n += 1;
        }
        n
    }

    /// What a salvaging read skipped so far (complete once it has ended).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// Takes what a salvaging read skipped.
    pub fn take_damage(&mut self) -> Vec<Damage> {
        std::mem::take(&mut self.damage)
    }

    fn fail(&mut self, e: Error, from: &[u8]) -> Option<Result<Entry, Error>> {
        let e = self.tree.tag(e);
        if !self.salvage {
            self.done = true;
            return Some(Err(e));
        }
        // Salvage: record the damage, then continue at the next leaf the
        // index can still reach.
        let mut d = match e {
            Error::Damaged(d) => *d,
            other => {
                self.done = true;
                return Some(Err(other));
            }
        };
        let found = self.tree.seek_readable(from, &self.visited);
        match found {
            Some((pid, node)) => {
                // Keys from `from` up to the found leaf's start are lost; a
                // leaf that already covers `from` loses none.
                let lost_to = (node.lo.as_slice() > from).then(|| node.lo.clone());
                d.keys = lost_to.map(|to| KeyRange {
                    from: from.to_vec(),
                    to: Some(to),
                });
                self.fall_back(&mut d);
                self.damage.push(d);
                let start = (0..node.keys.len())
                    .find(|i| node.full_key(*i).as_slice() >= from)
                    .unwrap_or(node.keys.len());
                self.visited.insert(pid);
                if let Err(e) = self.enter(pid, node, start) {
                    // Entering fails only for a strict read, which stops
                    // before it seeks; kept for the type.
                    self.done = true;
                    return Some(Err(e));
                }
            }
            None => {
                d.keys = Some(KeyRange {
                    from: from.to_vec(),
                    to: None,
                });
                self.fall_back(&mut d);
                self.damage.push(d);
                self.done = true;
            }
        }
        None
    }

    /// Fills the range `d` lost from sled's own view, if this read has
    /// one, and says so in `d`.
    fn fall_back(&mut self, d: &mut Damage) {
        let Some(range) = d.keys.clone() else { return };
        let n = self.fill_from_fallback(&range);
        if n > 0 {
            d.reason = format!(
                "{}; {n} record(s) of this range are read as they were before the damage in the log",
                d.reason
            );
        }
    }

    /// Starts reading leaf `pid` at position `start`. A leaf whose range
    /// holds a key at which the tree's index starts another leaf
    /// ([`Iter::lost_split`]) breaks the tree: a strict read fails there; a
    /// salvage takes the leaf's keys before that key, goes on at the leaf
    /// the index sends the rest to (as sled's reads, which descend from the
    /// root, find them), and records the damage.
    fn enter(&mut self, pid: u64, mut node: Node, start: usize) -> Result<(), Error> {
        if node.is_leaf()
            && let Some((at, other)) = self.lost_split(pid, &node)
        {
            let e = self.tree.db.damaged(
                Some(pid),
                format!(
                    "the leaf's range holds the keys from {} on, but the tree's index sends them \
                     to page {other}, which starts there: the leaf's split is missing from the log",
                    hex(&at)
                ),
            );
            if !self.salvage {
                return Err(e);
            }
            let mut d = match self.tree.tag(e) {
                Error::Damaged(d) => *d,
                other => return Err(other),
            };
            // What sled's own view holds below the split: the leaf as
            // loaded, cut there. The changes appended after the split are
            // in it; when the split lengthened the prefix its bounds share
            // (sled stores keys without it), they hold keys shortened by
            // more than this version says, and name other keys, which the
            // range named here covers.
            d.reason = format!(
                "{}; the leaf's keys below it are read as sled's own view holds them, and \
                 changes made to them since the split may be missing",
                d.reason
            );
            // Keys outside the left half's range (a change's key read in
            // the wrong prefix can sort below it too) are not kept.
            let first = |bound: &[u8]| {
                (0..node.keys.len())
                    .find(|i| node.full_key(*i).as_slice() >= bound)
                    .unwrap_or(node.keys.len())
            };
            let from = first(&node.lo);
            let keep = from..first(&at).max(from);
            node.keys = node.keys.drain(keep.clone()).collect();
            if let Data::Leaf(values) = &mut node.data {
                *values = values.drain(keep).collect();
            }
            d.keys = Some(KeyRange {
                from: node.lo.clone(),
                to: Some(at.clone()),
            });
            node.hi = at;
            node.next = Some(other);
            self.damage.push(d);
        }
        self.leaf = Some((pid, node, start));
        Ok(())
    }

    /// Where leaf `pid`'s split was lost, if it was, and the page the index
    /// sends the keys from there to. The candidate is the first separator
    /// of the index level above the leaves inside the leaf's range (cheap:
    /// that level is walked once beside the leaves); for the leaf that
    /// ends the chain, when that walk has stopped, the bound the index
    /// puts on it on the way down (one descent per tree). A candidate is
    /// confirmed by descending to it ([`Tree::split_lost_at`]), so a
    /// separator the index level holds but the index does not use is
    /// never taken for a split.
    fn lost_split(&mut self, pid: u64, leaf: &Node) -> Option<(Vec<u8>, u64)> {
        let below_hi = |at: &Vec<u8>| leaf.hi.is_empty() || *at < leaf.hi;
        let mut candidate = None;
        if let Some(seps) = self.separators.as_mut() {
            match seps.first_above(&self.tree.db, &leaf.lo) {
                Some(at) => candidate = Some(at).filter(below_hi),
                None => self.separators = None,
            }
        }
        if self.separators.is_none() && leaf.hi.is_empty() {
            candidate = self.tree.index_bound(pid, leaf);
        }
        let at = candidate?;
        let other = self.tree.split_lost_at(pid, &at)?;
        Some((at, other))
    }

    /// Moves to the first leaf (leftmost path from the root), and starts
    /// the walk of the index level above the leaves at the index node
    /// passed last.
    fn first_leaf(&mut self) -> Result<(), Error> {
        let db = Arc::clone(&self.tree.db);
        let mut pid = self.tree.root;
        let mut parent = None;
        for _ in 0..db.step_limit() {
            let node = db.load(pid)?;
            match &node.data {
                Data::Leaf(_) => {
                    if !node.lo.is_empty() {
                        return Err(db.damaged(
                            Some(pid),
                            "the tree's first leaf does not start at the first key",
                        ));
                    }
                    self.visited.insert(pid);
                    self.separators = parent.map(Separators::new);
                    return self.enter(pid, node, 0);
                }
                Data::Index(children) => {
                    let first = *children
                        .first()
                        .ok_or_else(|| db.damaged(Some(pid), "an index node without children"))?;
                    parent = Some(node);
                    pid = first;
                }
            }
        }
        Err(db.damaged(Some(pid), "the tree's pages form a cycle"))
    }

    /// Moves from a finished leaf to its right sibling.
    fn next_leaf(&mut self, pid: u64, node: &Node) -> Result<bool, Error> {
        let db = &self.tree.db;
        if node.hi.is_empty() {
            return Ok(false);
        }
        let next = node.next.ok_or_else(|| {
            db.damaged(
                Some(pid),
                "a leaf ends before the tree does and has no right sibling",
            )
        })?;
        if !self.visited.insert(next) || self.visited.len() > db.step_limit() {
            return Err(db.damaged(Some(next), "the tree's leaves form a cycle"));
        }
        let sib = db.load(next)?;
        if !sib.is_leaf() {
            return Err(db.damaged(Some(next), "a leaf's right sibling is not a leaf"));
        }
        if sib.lo != node.hi {
            return Err(db.damaged(
                Some(next),
                "a leaf's right sibling does not start where the leaf ends",
            ));
        }
        self.enter(next, sib, 0)?;
        Ok(true)
    }
}

impl Iterator for Iter {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                self.last_key = Some(entry.0.clone());
                return Some(Ok(entry));
            }
            if self.done {
                return None;
            }
            if !self.started {
                self.started = true;
                if let Err(e) = self.first_leaf()
                    && let Some(r) = self.fail(e, &[])
                {
                    return Some(r);
                }
                continue;
            }
            let Some((pid, node, pos)) = self.leaf.take() else {
                self.done = true;
                return None;
            };
            if let Data::Leaf(values) = &node.data
                && pos < node.keys.len()
            {
                let key = node.full_key(pos);
                let value = values[pos].clone();
                let in_range = key >= node.lo && (node.hi.is_empty() || key < node.hi);
                let ordered = self.last_key.as_ref().is_none_or(|l| *l < key);
                if !(in_range && ordered) {
                    let from = self.last_key.clone().unwrap_or_default();
                    let e = self.tree.db.damaged(
                        Some(pid),
                        "a leaf holds a key outside its range or out of order",
                    );
                    if let Some(r) = self.fail(e, &from) {
                        return Some(r);
                    }
                    continue;
                }
                self.last_key = Some(key.clone());
                self.leaf = Some((pid, node, pos + 1));
                return Some(Ok((key, value)));
            }
            match self.next_leaf(pid, &node) {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    let from = node.hi.clone();
                    if let Some(r) = self.fail(e, &from) {
                        return Some(r);
                    }
                }
            }
        }
    }
}
