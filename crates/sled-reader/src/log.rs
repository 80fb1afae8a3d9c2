//! sled's log file, blob files and snapshot, and the recovery that turns
//! them into a page table (docs/sled-format.md §3, §5).
//!
//! The recovery is sled 0.34.7's, step for step, minus every write sled
//! makes while recovering (it zeroes the torn tail and torn segments,
//! writes a new snapshot and deletes blob files): the reader sees the
//! files as they are.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::codec::{Cursor, Short};
use crate::{Damage, Error, Place};

/// Bytes of a segment header: crc, lsn and highest stable lsn.
pub(crate) const SEG_HEADER_LEN: u64 = 20;
/// The longest message header; no message starts closer to a segment's end.
pub(crate) const MAX_MSG_HEADER_LEN: u64 = 32;
/// The segment sizes sled accepts (a power of two in this range); its
/// default is 512 KiB. A whole segment is held in memory while recovering.
const SEGMENT_SIZES: std::ops::RangeInclusive<u64> = 256..=(16 << 20);
/// sled's meta page: tree names and their root pages.
pub(crate) const META_PID: u64 = 0;

/// The kinds of log message (sled's `MessageKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Corrupted,
    Canceled,
    Cap,
    BatchManifest,
    Free,
    Counter,
    InlineMeta,
    BlobMeta,
    InlineNode,
    BlobNode,
    InlineLink,
    BlobLink,
}

impl Kind {
    fn from_byte(b: u8) -> Kind {
        match b {
            1 => Kind::Canceled,
            2 => Kind::Cap,
            3 => Kind::BatchManifest,
            4 => Kind::Free,
            5 => Kind::Counter,
            6 => Kind::InlineMeta,
            7 => Kind::BlobMeta,
            8 => Kind::InlineNode,
            9 => Kind::BlobNode,
            10 => Kind::InlineLink,
            11 => Kind::BlobLink,
            _ => Kind::Corrupted,
        }
    }

    fn is_blob(self) -> bool {
        matches!(self, Kind::BlobMeta | Kind::BlobNode | Kind::BlobLink)
    }

    /// The same kind, stored inline (blob files carry their own kind byte).
    pub(crate) fn inline(self) -> Kind {
        match self {
            Kind::BlobMeta => Kind::InlineMeta,
            Kind::BlobNode => Kind::InlineNode,
            Kind::BlobLink => Kind::InlineLink,
            k => k,
        }
    }
}

/// Where a page's base or change was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) lsn: i64,
    pub(crate) lid: u64,
    /// The blob's id when the message points at a blob file.
    pub(crate) blob: Option<i64>,
    /// The message's length in the log.
    pub(crate) size: u64,
}

/// A page's state after recovery (sled's `PageState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageState {
    Uninitialized,
    Free,
    Present { base: Loc, frags: Vec<Loc> },
}

/// The recovered page table: dense for the ids sled allocates in order,
/// with a sparse overflow so a damaged id cannot allocate memory.
#[derive(Debug, Default)]
pub(crate) struct PageTable {
    dense: Dense,
    sparse: BTreeMap<u64, PageState>,
    /// The length sled's own table would have: page ids below it that hold
    /// no state make sled panic writing its snapshot ([`PageTable::gap`]).
    sled_len: u64,
}

/// Entries per block of [`Dense`].
const BLOCK: usize = 1024;

/// The dense part of the table, in blocks of [`BLOCK`] entries rather than
/// one vector: a vector grown to millions of entries is copied whole at
/// every doubling, the old copy alive beside the new one, and then again
/// to shrink it, which at L set the reader's peak memory (docs/sled-format.md
/// §8). Blocks are allocated once and never move.
#[derive(Debug, Default)]
struct Dense {
    blocks: Vec<Box<[PageState]>>,
    len: usize,
}

impl Dense {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Option<&PageState> {
        (i < self.len).then(|| &self.blocks[i / BLOCK][i % BLOCK])
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut PageState> {
        (i < self.len).then(|| &mut self.blocks[i / BLOCK][i % BLOCK])
    }

    /// Grows to `len` entries, the new ones uninitialized.
    fn grow_to(&mut self, len: usize) {
        while self.blocks.len() * BLOCK < len {
            self.blocks
                .push(vec![PageState::Uninitialized; BLOCK].into_boxed_slice());
        }
        self.len = Ord::max(self.len, len);
    }

    fn push(&mut self, state: PageState) {
        let i = self.len;
        self.grow_to(i + 1);
        self.blocks[i / BLOCK][i % BLOCK] = state;
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut PageState> {
        let len = self.len;
        self.blocks.iter_mut().flat_map(|b| b.iter_mut()).take(len)
    }

    fn iter(&self) -> impl Iterator<Item = &PageState> {
        self.blocks.iter().flat_map(|b| b.iter()).take(self.len)
    }

    fn heap_bytes(&self) -> usize {
        self.blocks.len() * BLOCK * size_of::<PageState>()
            + self.blocks.capacity() * size_of::<Box<[PageState]>>()
    }
}

impl PageTable {
    pub(crate) fn get(&self, pid: u64) -> Option<&PageState> {
        match usize::try_from(pid).ok().and_then(|i| self.dense.get(i)) {
            Some(s) => Some(s),
            None => self.sparse.get(&pid),
        }
    }

    fn slot(&mut self, pid: u64) -> &mut PageState {
        let i = usize::try_from(pid).unwrap_or(usize::MAX);
        // Grow densely only near the end: sled allocates ids in order.
        if i < self.dense.len() {
            return self.dense_slot(i);
        }
        if i <= self.dense.len().saturating_mul(2).saturating_add(4096) {
            self.dense.grow_to(i + 1);
            // Move any sparse entries the dense part now covers.
            let moved: Vec<u64> = self.sparse.range(..=pid).map(|(k, _)| *k).collect();
            for k in moved {
                if let Some(s) = self.sparse.remove(&k) {
                    *self.dense_slot(k as usize) = s;
                }
            }
            return self.dense_slot(i);
        }
        self.sparse.entry(pid).or_insert(PageState::Uninitialized)
    }

    /// The dense entry `i`; the caller grew the table past it.
    fn dense_slot(&mut self, i: usize) -> &mut PageState {
        &mut self.dense.blocks[i / BLOCK][i % BLOCK]
    }

    /// Gives back the spare capacity recovery's growth left (the table is
    /// only read from now on).
    pub(crate) fn shrink(&mut self) {
        for s in self.dense.iter_mut().chain(self.sparse.values_mut()) {
            if let PageState::Present { frags, .. } = s {
                frags.shrink_to_fit();
            }
        }
    }

    /// The number of page ids, free ones included.
    /// Appends the state of the next page id (a snapshot lists them in
    /// order from 0).
    pub(crate) fn push(&mut self, state: PageState) {
        self.dense.push(state);
        self.sled_len += 1;
    }

    /// The first page id below the length of sled's own table that holds
    /// no state, if any. sled grows its table to every page id a message
    /// names (and, for a change to a page it does not hold, shrinks it by
    /// one again), so ids whose messages were all lost stay uninitialized
    /// below the highest one, and sled 0.34.7 panics writing its snapshot
    /// over them ("tried to serialize Uninitialized"; docs/sled-format.md
    /// §5).
    pub(crate) fn gap(&self) -> Option<u64> {
        let dense = self.dense.len() as u64;
        if let Some(i) = self
            .dense
            .iter()
            .take(usize::try_from(self.sled_len).unwrap_or(usize::MAX))
            .position(|s| *s == PageState::Uninitialized)
        {
            return Some(i as u64);
        }
        let mut next = dense;
        for (pid, state) in &self.sparse {
            if next >= self.sled_len {
                return None;
            }
            if *pid != next || *state == PageState::Uninitialized {
                return Some(next);
            }
            next += 1;
        }
        (next < self.sled_len).then_some(next)
    }

    pub(crate) fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }

    /// Bytes this table holds, for the memory figures.
    pub(crate) fn heap_bytes(&self) -> usize {
        let frags: usize = self
            .dense
            .iter()
            .chain(self.sparse.values())
            .map(|s| match s {
                PageState::Present { frags, .. } => frags.capacity() * size_of::<Loc>(),
                _ => 0,
            })
            .sum();
        self.dense.heap_bytes() + self.sparse.len() * (size_of::<PageState>() + 32) + frags
    }

    /// sled's `Snapshot::apply`.
    pub(crate) fn apply(&mut self, kind: Kind, pid: u64, loc: Loc) {
        self.sled_len = match kind {
            // A change to a page beyond sled's table: sled grows the table
            // to hold it, finds no page, and takes back only the last id.
            Kind::InlineLink | Kind::BlobLink => self.sled_len.max(pid),
            Kind::Corrupted | Kind::Canceled | Kind::Cap | Kind::BatchManifest => self.sled_len,
            _ => self.sled_len.max(pid.saturating_add(1)),
        };
        match kind {
            Kind::Free => *self.slot(pid) = PageState::Free,
            Kind::Counter
            | Kind::InlineMeta
            | Kind::BlobMeta
            | Kind::InlineNode
            | Kind::BlobNode => {
                *self.slot(pid) = PageState::Present {
                    base: loc,
                    frags: Vec::new(),
                }
            }
            Kind::InlineLink | Kind::BlobLink => {
                // A change to a page not present is skipped (sled's
                // "dangling append").
                let present = match usize::try_from(pid)
                    .ok()
                    .and_then(|i| self.dense.get_mut(i))
                {
                    Some(s) => Some(s),
                    None => self.sparse.get_mut(&pid),
                };
                if let Some(PageState::Present { base, frags }) = present {
                    let last = frags.last().map_or(base.lsn, |f| f.lsn);
                    if last < loc.lsn {
                        frags.push(loc);
                    }
                }
            }
            Kind::Corrupted | Kind::Canceled | Kind::Cap | Kind::BatchManifest => {}
        }
    }
}

/// The storage parameters sled keeps in `conf`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conf {
    pub(crate) segment_size: u64,
}

impl Conf {
    /// sled 0.34.7's defaults, which a node opens its database with.
    pub(crate) const SLED_DEFAULT: Conf = Conf {
        segment_size: 512 * 1024,
    };
}

/// Whether `dir` holds a sled database: its `conf` or its log `db` is
/// there (sled opens a log without `conf`, and a `conf` without a log as
/// an empty database).
pub(crate) fn holds_database(dir: &Path) -> bool {
    dir.join("conf").is_file() || dir.join("db").is_file()
}

/// The parameters in `dir`'s `conf`; `None` where sled 0.34.7 uses the
/// opener's own (a node's: [`Conf::SLED_DEFAULT`]) and writes them: no
/// file, or one of 8 bytes or fewer. A file that does not parse is
/// [`Error::Damaged`]: sled refuses to open the database.
pub(crate) fn read_conf(dir: &Path) -> Result<Option<Conf>, Error> {
    let path = dir.join("conf");
    let bytes = match read_small(&path, 4096) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if bytes.len() <= 8 {
        return Ok(None);
    }
    let damaged = |reason: String| {
        Error::damaged_file(
            &path,
            format!("sled's configuration file does not read: {reason}"),
        )
    };
    // sled only warns on a wrong checksum here and parses the text anyway;
    // the text itself is checked field by field below.
    let text = std::str::from_utf8(&bytes[..bytes.len() - 4])
        .map_err(|_| damaged("it is not text".into()))?;
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split(": ");
        match (parts.next(), parts.next()) {
            (Some(k), Some(v)) => {
                fields.insert(k, v);
            }
            _ => return Err(damaged(format!("the line {line:?} is not \"name: value\""))),
        }
    }
    let field = |name: &str| {
        fields
            .get(name)
            .copied()
            .ok_or_else(|| damaged(format!("it has no {name}")))
    };
    let segment_size: u64 = field("segment_size")?
        .parse()
        .map_err(|_| damaged("its segment_size is not a number".into()))?;
    let compression: bool = field("use_compression")?
        .parse()
        .map_err(|_| damaged("its use_compression is not true or false".into()))?;
    let version = field("version")?;
    // sled reads the first two dot-separated numbers.
    let mut numbers = version.split('.').map(str::parse::<usize>);
    let (Some(Ok(major)), Some(Ok(minor))) = (numbers.next(), numbers.next()) else {
        return Err(damaged(format!(
            "its version {version:?} is not two numbers"
        )));
    };
    if (major, minor) != (0, 34) {
        return Err(Error::Unsupported {
            path: dir.to_path_buf(),
            what: format!("sled format version {version} (this reader reads 0.34)"),
        });
    }
    if compression {
        return Err(Error::Unsupported {
            path: dir.to_path_buf(),
            what: "zstd compression (use_compression: true)".into(),
        });
    }
    if !SEGMENT_SIZES.contains(&segment_size) || !segment_size.is_power_of_two() {
        return Err(Error::Unsupported {
            path: dir.to_path_buf(),
            what: format!("a segment size of {segment_size} bytes"),
        });
    }
    Ok(Some(Conf { segment_size }))
}

/// Reads a whole file that should be small, refusing one larger than `max`.
pub(crate) fn read_small(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    let mut out = Vec::new();
    f.take(max + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() as u64 > max {
        return Err(Error::damaged_file(
            path,
            format!("the file is larger than {max} bytes"),
        ));
    }
    Ok(out)
}

/// What reading one message found (sled's `LogRead`).
#[derive(Debug)]
pub(crate) enum Msg {
    /// A page base or change: inline bytes, or a blob's bytes.
    Data {
        kind: Kind,
        pid: u64,
        body: Vec<u8>,
        blob: Option<i64>,
        len: u64,
    },
    Canceled(u64),
    Cap,
    Corrupted(&'static str),
    DanglingBlob(u64),
    BatchManifest(i64, u64),
}

/// The log file and the blob directory, open for reading only.
#[derive(Debug)]
pub(crate) struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    /// `None` where there is no log file: sled would create an empty one.
    file: Option<File>,
    pub(crate) len: u64,
    pub(crate) segment_size: u64,
}

/// A header read from the start of a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegHeader {
    pub(crate) lsn: i64,
    pub(crate) max_stable_lsn: i64,
    pub(crate) ok: bool,
}

fn parse_seg_header(b: &[u8; SEG_HEADER_LEN as usize]) -> SegHeader {
    let crc = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) ^ 0xFFFF_FFFF;
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[4..12]);
    let lsn = i64::from_le_bytes(a) ^ 0x7FFF_FFFF_FFFF_FFFF;
    a.copy_from_slice(&b[12..20]);
    let max_stable_lsn = i64::from_le_bytes(a) ^ 0x7FFF_FFFF_FFFF_FFFF;
    SegHeader {
        lsn,
        max_stable_lsn,
        ok: crc32fast::hash(&b[4..20]) == crc,
    }
}

impl Log {
    pub(crate) fn open(dir: &Path, conf: Conf) -> Result<Log, Error> {
        let path = dir.join("db");
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        // Read-only: the reader never writes (docs/sled-format.md §1).
        // sled creates a missing log: an empty one.
        let file = match File::open(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let len = match &file {
            Some(f) => f.metadata().map_err(io)?.len(),
            None => 0,
        };
        Ok(Log {
            dir: dir.to_path_buf(),
            path,
            file,
            len,
            segment_size: conf.segment_size,
        })
    }

    /// Whether there was no log file to open (read as an empty log).
    pub(crate) fn missing(&self) -> bool {
        self.file.is_none()
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads up to `buf.len()` bytes at `at`, stopping at the end of the
    /// file; returns how many were read.
    pub(crate) fn read_upto(&self, buf: &mut [u8], at: u64) -> Result<usize, Error> {
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], at + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(done)
    }

    pub(crate) fn seg_header(&self, lid: u64) -> Result<Option<SegHeader>, Error> {
        let mut b = [0u8; SEG_HEADER_LEN as usize];
        if self.read_upto(&mut b, lid)? < b.len() {
            return Ok(None);
        }
        Ok(Some(parse_seg_header(&b)))
    }

    pub(crate) fn normalize(&self, lsn: i64) -> i64 {
        let s = self.segment_size as i64;
        lsn.div_euclid(s) * s
    }

    /// Reads the blob file `id` (sled's `read_blob`): its crc, its kind byte
    /// and its bytes. `Ok(None)` when the file does not exist.
    pub(crate) fn read_blob(&self, id: i64) -> Result<Option<(Kind, Vec<u8>)>, BlobError> {
        let path = self.dir.join("blobs").join(id.to_string());
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BlobError::Io(path, e)),
        };
        let len = f
            .metadata()
            .map_err(|e| BlobError::Io(path.clone(), e))?
            .len();
        // A blob is one page or change; sled writes those only for values
        // that fit in memory, and the file's own length bounds the read.
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
        (&f).take(1 << 32)
            .read_to_end(&mut buf)
            .map_err(|e| BlobError::Io(path.clone(), e))?;
        if buf.len() < 5 {
            return Err(BlobError::Bad(path, "the file is shorter than its header"));
        }
        let want = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if crc32fast::hash(&buf[4..]) != want {
            return Err(BlobError::Bad(
                path,
                "its checksum does not match its bytes",
            ));
        }
        let kind = Kind::from_byte(buf[4]);
        buf.drain(..5);
        Ok(Some((kind, buf)))
    }

    /// Decodes the message at `lid` from `window` (the bytes from `lid` to
    /// the end of its segment or of the file), as sled's `read_message`
    /// does. `Err` is what sled reports as an error rather than a corrupt
    /// message: a read past the end, or a blob that fails its check.
    pub(crate) fn decode_message(
        &self,
        window: &[u8],
        lid: u64,
        expected_segment: u64,
    ) -> Result<Msg, MsgError> {
        let seg_start = lid / self.segment_size * self.segment_size;
        let ceiling = seg_start + self.segment_size;
        let mut head = [0u8; 128];
        let n = window.len().min(128);
        head[..n].copy_from_slice(&window[..n]);
        let mut c = Cursor::new(&head);
        let parsed = (|| -> Result<_, Short> {
            let crc = c.u32_le()?;
            let kind = c.u8()?;
            let len = c.varint()?;
            let seg = c.varint()?;
            let pid = c.varint()?;
            Ok((crc, kind, len, seg, pid))
        })();
        let Ok((crc, kind_byte, len, segment_number, pid)) = parsed else {
            return Err(MsgError::Short);
        };
        let header_len = 128 - c.remaining();
        let max_len = ceiling.saturating_sub(lid + header_len as u64);
        if len > max_len {
            return Ok(Msg::Corrupted("a message longer than its segment"));
        }
        let kind = Kind::from_byte(kind_byte);
        if kind == Kind::Corrupted {
            return Ok(Msg::Corrupted("a message of no known kind"));
        }
        let body_len = len as usize;
        let body: &[u8] = if body_len <= c.remaining() {
            &head[header_len..header_len + body_len]
        } else {
            window
                .get(header_len..header_len + body_len)
                .ok_or(MsgError::Short)?
        };
        // Checked before the crc (both make the message corrupt, as in
        // sled): it is the cheap test a salvage's search for the next
        // message relies on.
        if segment_number != expected_segment {
            return Ok(Msg::Corrupted("a message from another segment"));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(body);
        h.update(&head[4..header_len]);
        if h.finalize() ^ 0xFFFF_FFFF != crc {
            return Ok(Msg::Corrupted("a message whose checksum does not match"));
        }
        let inline_len = header_len as u64 + len;
        Ok(match kind {
            Kind::Canceled => Msg::Canceled(inline_len),
            Kind::Cap => Msg::Cap,
            Kind::BatchManifest => {
                let Ok(b) = <[u8; 8]>::try_from(body) else {
                    return Err(MsgError::Malformed("a batch manifest that is not 8 bytes"));
                };
                Msg::BatchManifest(i64::from_le_bytes(b), inline_len)
            }
            k if k.is_blob() => {
                let Ok(b) = <[u8; 8]>::try_from(body) else {
                    return Err(MsgError::Malformed("a blob pointer that is not 8 bytes"));
                };
                let id = i64::from_le_bytes(b);
                match self.read_blob(id) {
                    Ok(Some((bk, bytes))) => {
                        // sled asserts the blob's kind equals the message's.
                        if bk != k {
                            return Err(MsgError::Malformed(
                                "a blob of another kind than its message",
                            ));
                        }
                        Msg::Data {
                            kind: k,
                            pid,
                            body: bytes,
                            blob: Some(id),
                            len: inline_len,
                        }
                    }
                    Ok(None) => Msg::DanglingBlob(inline_len),
                    Err(e) => return Err(MsgError::Blob(e)),
                }
            }
            k => Msg::Data {
                kind: k,
                pid,
                body: body.to_vec(),
                blob: None,
                len: inline_len,
            },
        })
    }

    /// Reads a page's base or change from where the page table says it is,
    /// as sled's `pull` does: the message at its offset, or the blob file.
    pub(crate) fn read_page_part(&self, pid: u64, loc: &Loc) -> Result<(Kind, Vec<u8>), Error> {
        let damaged = |what: String| {
            Error::Damaged(Box::new(Damage {
                place: Place::Log { offset: loc.lid },
                page: Some(pid),
                tree: None,
                keys: None,
                reason: what,
            }))
        };
        if let Some(id) = loc.blob {
            return match self.read_blob(id) {
                Ok(Some((kind, body))) => Ok((kind, body)),
                Ok(None) => Err(damaged(format!("its blob file blobs/{id} is missing"))),
                Err(e) => Err(damaged(e.to_string())),
            };
        }
        let seg_start = loc.lid / self.segment_size * self.segment_size;
        if loc.lid < seg_start + SEG_HEADER_LEN
            || seg_start + self.segment_size - loc.lid < MAX_MSG_HEADER_LEN
        {
            return Err(damaged(
                "the page table points outside a segment's messages".into(),
            ));
        }
        let want = (loc.size.max(128)).min(seg_start + self.segment_size - loc.lid);
        let mut window = vec![0u8; want as usize];
        let n = self.read_upto(&mut window, loc.lid)?;
        window.truncate(n);
        let expected = u64::try_from(loc.lsn).unwrap_or(u64::MAX) / self.segment_size;
        match self.decode_message(&window, loc.lid, expected) {
            Ok(Msg::Data {
                kind, pid: p, body, ..
            }) if p == pid => Ok((kind, body)),
            Ok(Msg::Data { pid: p, .. }) => {
                Err(damaged(format!("the message there belongs to page {p}")))
            }
            Ok(Msg::Corrupted(why)) => Err(damaged(why.into())),
            Ok(_) => Err(damaged("the message there holds no page".into())),
            Err(e) => Err(damaged(e.to_string())),
        }
    }
}

/// Why a blob file could not be read.
#[derive(Debug)]
pub(crate) enum BlobError {
    Io(PathBuf, std::io::Error),
    Bad(PathBuf, &'static str),
}

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobError::Io(p, e) => write!(f, "cannot read the blob file {}: {e}", p.display()),
            BlobError::Bad(p, why) => write!(f, "the blob file {} is damaged: {why}", p.display()),
        }
    }
}

/// A message sled would fail on rather than skip.
#[derive(Debug)]
pub(crate) enum MsgError {
    Short,
    Malformed(&'static str),
    Blob(BlobError),
}

impl std::fmt::Display for MsgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MsgError::Short => f.write_str("the log ends inside a message"),
            MsgError::Malformed(w) => f.write_str(w),
            MsgError::Blob(b) => b.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes docs/sled-format.md §8 states for the page table.
    #[test]
    fn page_table_entry_sizes() {
        assert_eq!(size_of::<Loc>(), 40);
        assert_eq!(size_of::<PageState>(), 64);
    }
}
