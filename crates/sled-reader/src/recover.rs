//! Recovery: the log read from the snapshot on, as sled reads it when it
//! opens a database, into the page table of its view, without writing
//! anything (docs/sled-format.md §4, §6).

use std::collections::BTreeMap;

use crate::log::{Kind, Loc, Log, MAX_MSG_HEADER_LEN, Msg, PageTable, SEG_HEADER_LEN};
use crate::snapshot::Snapshot;
use crate::{Damage, Error, Place};

/// How recovery ended: what sled would have cut off or zeroed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recovery {
    /// Damage that ended the read before the end of the written log.
    pub(crate) stopped: Option<Damage>,
    /// Messages read and applied.
    pub(crate) messages: u64,
    /// A salvaging read's log ranges it could not read, in log order.
    pub(crate) skipped: Vec<Damage>,
}

/// sled's `LogIter`: messages in lsn order over a set of segments.
struct LogIter<'a> {
    log: &'a Log,
    segments: BTreeMap<i64, u64>,
    /// The current segment's bytes and its offset in the file.
    seg: Option<(Vec<u8>, u64)>,
    buf: Vec<u8>,
    max_lsn: Option<i64>,
    cur_lsn: Option<i64>,
    /// In the last stage a corrupt message ends its segment, not the log.
    last_stage: bool,
    /// The first damage met, with the lsn where it was met.
    damage: Option<(i64, u64, String)>,
    /// Salvage: a corrupt message does not end its segment; the read goes
    /// on at the next message that reads whole (docs/sled-format.md §6).
    resync: bool,
    /// Salvage: the log ranges passed over, as (from, to, why) offsets.
    skipped: Vec<(u64, u64, String)>,
}

struct Item {
    kind: Kind,
    pid: u64,
    lsn: i64,
    loc: Loc,
}

impl<'a> LogIter<'a> {
    /// An iterator over `segments` up to `max_lsn`; `last_stage` and
    /// `resync` as the fields say.
    fn new(
        log: &'a Log,
        segments: BTreeMap<i64, u64>,
        max_lsn: Option<i64>,
        last_stage: bool,
        resync: bool,
    ) -> LogIter<'a> {
        LogIter {
            log,
            segments,
            seg: None,
            buf: Vec::new(),
            max_lsn,
            cur_lsn: None,
            last_stage,
            damage: None,
            resync,
            skipped: Vec::new(),
        }
    }

    fn valid_entry(&self, lsn: i64) -> bool {
        let s = self.log.segment_size as i64;
        let off = lsn.rem_euclid(s);
        off >= SEG_HEADER_LEN as i64 && off <= s - MAX_MSG_HEADER_LEN as i64
    }

    fn note(&mut self, lsn: i64, lid: u64, why: String) {
        if self.damage.is_none() {
            self.damage = Some((lsn, lid, why));
        }
    }

    /// sled's `read_segment`; `false` ends the iteration.
    fn read_segment(&mut self) -> Result<bool, Error> {
        let Some((&lsn, &lid)) = self.segments.iter().next() else {
            return Ok(false);
        };
        if self.max_lsn.is_some_and(|m| lsn > m) {
            return Ok(false);
        }
        let s = self.log.segment_size;
        let Some(h) = self.log.seg_header(lid)? else {
            return Ok(false);
        };
        if lid % s != 0 || h.lsn.rem_euclid(s as i64) != 0 || h.lsn != lsn {
            self.note(lsn, lid, "a torn segment header".into());
            return Ok(false);
        }
        self.buf.resize(s as usize, 0);
        let mut b = std::mem::take(&mut self.buf);
        let n = self.log.read_upto(&mut b, lid)?;
        b.truncate(n);
        if let Some((old, _)) = self.seg.take() {
            self.buf = old;
        }
        self.seg = Some((b, lid));
        self.cur_lsn = Some(h.lsn + SEG_HEADER_LEN as i64);
        self.segments.remove(&lsn);
        Ok(true)
    }

    /// Salvage: the lsn of the first message after `lsn`, in the current
    /// segment, that reads whole (right kind, length, segment number and
    /// crc). Every offset is tried; the segment number and the crc make a
    /// false find as unlikely as a crc collision on bytes that also carry
    /// this segment's number.
    fn next_whole(&self, lsn: i64) -> Option<i64> {
        let s = self.log.segment_size as i64;
        let (seg, base) = self.seg.as_ref()?;
        let start = lsn.rem_euclid(s);
        let expected = u64::try_from(lsn).ok()? / self.log.segment_size;
        (start + 1..=s - MAX_MSG_HEADER_LEN as i64).find_map(|off| {
            let window = seg.get(off as usize..)?;
            match self.log.decode_message(window, base + off as u64, expected) {
                Ok(Msg::Corrupted(_)) | Err(_) => None,
                Ok(_) => Some(lsn - start + off),
            }
        })
    }

    /// Whether a segment this read will reach follows the current one.
    fn more_to_read(&self) -> bool {
        self.segments
            .keys()
            .next()
            .is_some_and(|l| self.max_lsn.is_none_or(|m| *l <= m))
    }

    /// Salvage: passes over what cannot be read at `lsn`; `true` when the
    /// read goes on in this segment.
    fn pass_over(&mut self, lsn: i64, lid: u64, why: String) -> bool {
        let s = self.log.segment_size;
        if let Some(next) = self.next_whole(lsn) {
            let to = lid + (next - lsn) as u64;
            self.skipped.push((lid, to, why));
            self.cur_lsn = Some(next);
            return true;
        }
        // Nothing reads in the rest of the segment: the end of what was
        // written, unless later segments show that more was.
        if self.more_to_read() {
            self.skipped.push((lid, lid / s * s + s, why));
        }
        self.drop_segment();
        false
    }

    fn drop_segment(&mut self) {
        if let Some((old, _)) = self.seg.take() {
            self.buf = old;
        }
    }

    fn next(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if !self.valid_entry(self.cur_lsn.unwrap_or(0)) {
                self.drop_segment();
            }
            if self.seg.is_none() && !self.read_segment()? {
                return Ok(None);
            }
            let lsn = self.cur_lsn.unwrap_or(0);
            if self.max_lsn.is_some_and(|m| lsn > m) {
                return Ok(None);
            }
            let s = self.log.segment_size;
            let Some((seg, base)) = self.seg.as_ref() else {
                return Ok(None);
            };
            let base = *base;
            let off = lsn.rem_euclid(s as i64) as usize;
            let lid = base + off as u64;
            let expected = u64::try_from(lsn).unwrap_or(u64::MAX) / s;
            // A segment read short (the file ends inside it): sled fails the
            // read, which ends the iteration.
            let Some(window) = seg.get(off..) else {
                self.note(lsn, lid, "the log file ends inside a segment".into());
                return Ok(None);
            };
            match self.log.decode_message(window, lid, expected) {
                Ok(Msg::Data {
                    kind,
                    pid,
                    blob,
                    len,
                    ..
                }) => {
                    self.cur_lsn = Some(lsn + len as i64);
                    return Ok(Some(Item {
                        kind,
                        pid,
                        lsn,
                        loc: Loc {
                            lsn,
                            lid,
                            blob,
                            size: len,
                        },
                    }));
                }
                Ok(Msg::BatchManifest(last, len)) => {
                    if self.max_lsn.is_some_and(|m| last > m) {
                        self.note(lsn, lid, "a batch of writes that was not finished".into());
                        return Ok(None);
                    }
                    self.cur_lsn = Some(lsn + len as i64);
                }
                Ok(Msg::Canceled(len)) | Ok(Msg::DanglingBlob(len)) => {
                    self.cur_lsn = Some(lsn + len as i64);
                }
                Ok(Msg::Corrupted(why)) if self.resync => {
                    self.note(lsn, lid, why.into());
                    self.pass_over(lsn, lid, why.into());
                }
                Err(e) if self.resync => {
                    self.note(lsn, lid, e.to_string());
                    self.pass_over(lsn, lid, e.to_string());
                }
                Ok(Msg::Corrupted(why)) => {
                    self.note(lsn, lid, why.into());
                    if self.last_stage {
                        self.drop_segment();
                    } else {
                        return Ok(None);
                    }
                }
                Ok(Msg::Cap) => self.drop_segment(),
                Err(e) => {
                    self.note(lsn, lid, e.to_string());
                    return Ok(None);
                }
            }
        }
    }
}

/// Recovers the page table as sled 0.34.7 would on open
/// (`read_snapshot_or_default`), without writing anything.
///
/// With `salvage`, a corrupt or unreadable message does not end the log or
/// its segment: the read goes on at the next message that reads whole, the
/// bound of the log is the end of the last message of any segment after
/// the highest stable lsn (a gap in the segments does not end it either),
/// and every range passed over is listed in [`Recovery::skipped`]
/// (docs/sled-format.md §6).
pub(crate) fn recover(
    log: &Log,
    snap: Snapshot,
    salvage: bool,
) -> Result<(PageTable, Recovery), Error> {
    let min = log.normalize(snap.stable_lsn.unwrap_or(0));
    let Segments {
        ordering,
        max_stable,
        unplaced,
    } = segment_order(log, min, salvage)?;
    let (tail, missing) = unstable_tail(&ordering, log.normalize(max_stable).max(0), log, salvage);
    // Where the log ends: past the last message of the unstable tail.
    let mut it = LogIter::new(log, tail, missing, salvage, salvage);
    while it.next()?.is_some() {}
    let end_of_last = it.cur_lsn.unwrap_or(0) - 1;
    let tail_damage = it.damage.take();
    // The main pass, from the snapshot on.
    let segments: BTreeMap<i64, u64> = ordering.range(min..).map(|(a, b)| (*a, *b)).collect();
    let mut it = LogIter::new(log, segments, Some(end_of_last), true, salvage);
    let mut pages = snap.pages;
    let mut messages = 0;
    let stable = snap.stable_lsn.unwrap_or(-1);
    while let Some(item) = it.next()? {
        if item.lsn < stable {
            continue;
        }
        if item.lsn >= end_of_last {
            let at = at_offset(item.loc.lid, "a message past the end of the log".into());
            return Err(Error::Damaged(Box::new(Damage {
                page: Some(item.pid),
                ..at
            })));
        }
        messages += 1;
        pages.apply(item.kind, item.pid, item.loc);
    }
    let main_damage = it.damage.take();
    pages.shrink();
    let unread = ordering
        .range(end_of_last.max(min)..)
        .filter(|(lsn, _)| **lsn > end_of_last)
        .count();
    // Damage that cut the log short: a stop before segments that exist.
    let stopped = tail_damage
        .or(main_damage)
        .filter(|_| unread > 0 || missing.is_some())
        .map(|(_, lid, why)| {
            at_offset(
                lid,
                format!(
                    "{why}; sled stops reading the log here, and the {unread} segment(s) written \
                     after it are not part of its view"
                ),
            )
        });
    let mut skipped: Vec<Damage> = it
        .skipped
        .into_iter()
        .map(|(from, to, why)| {
            at_offset(
                from,
                format!(
                    "{why}: the log from offset {from} to {to} could not be read, and the \
                     changes written there are missing (the read went on after it)"
                ),
            )
        })
        .collect();
    if salvage {
        // sled leaves out a segment whose header is unreadable, and its view
        // ends before it; a salvage reads the segments after it, so it must
        // say what it left out.
        skipped.extend(unplaced.into_iter().map(|lid| {
            let to = lid + log.segment_size;
            at_offset(
                lid,
                format!(
                    "the segment's header does not match its checksum: the log from offset \
                     {lid} to {to} could not be read, and the changes written there are \
                     missing (the read went on after it)"
                ),
            )
        }));
    }
    let recovery = Recovery {
        stopped,
        messages,
        skipped,
    };
    Ok((pages, recovery))
}

/// Damage at a log offset.
fn at_offset(offset: u64, reason: String) -> Damage {
    Damage {
        place: Place::Log { offset },
        page: None,
        tree: None,
        keys: None,
        reason,
    }
}

/// The log's segments, as their headers place them.
struct Segments {
    /// Every segment sled would use (a whole header, from `min` on), by lsn.
    ordering: BTreeMap<i64, u64>,
    /// The highest stable lsn their headers name.
    max_stable: i64,
    /// The offsets of the segments whose header does not match its
    /// checksum but which hold something sled wrote (their bytes are not
    /// one value repeated); looked for only by a salvage.
    unplaced: Vec<u64>,
}

/// Reads every segment's header ([`Segments`]); only a salvage
/// (`salvage`) looks for segments left out.
///
/// sled overwrites a segment it no longer uses with one byte value (its
/// "corrupted" message kind, at every open) and the header of such a
/// segment fails its checksum, so that alone is not damage.
fn segment_order(log: &Log, min: i64, salvage: bool) -> Result<Segments, Error> {
    let s = log.segment_size;
    let count = log.len / s + u64::from(log.len % s >= SEG_HEADER_LEN);
    let mut ordering: BTreeMap<i64, u64> = BTreeMap::new();
    let mut max_stable = min;
    let mut unplaced = Vec::new();
    for idx in 0..count {
        let lid = idx * s;
        let Some(h) = log.seg_header(lid)? else {
            continue;
        };
        if salvage && !h.ok && !uniform(log, lid)? {
            unplaced.push(lid);
        }
        if !(h.ok && h.lsn >= min) {
            continue;
        }
        max_stable = max_stable.max(h.max_stable_lsn);
        if let Some(other) = ordering.insert(h.lsn, lid) {
            // sled panics here ("duplicate segment LSN").
            return Err(Error::Damaged(Box::new(at_offset(
                lid,
                format!(
                    "two segments (at offsets {other} and {lid}) claim the same position in the log"
                ),
            ))));
        }
    }
    Ok(Segments {
        ordering,
        max_stable,
        unplaced,
    })
}

/// Whether the segment at `lid` (as much of it as the file holds) is one
/// byte value repeated. Read a block at a time: a segment is up to a few
/// MiB, and only segments with a bad header are read.
fn uniform(log: &Log, lid: u64) -> Result<bool, Error> {
    let mut block = [0u8; 4096];
    let mut first = None;
    let mut at = lid;
    let end = lid.saturating_add(log.segment_size);
    while at < end {
        let want = usize::try_from((end - at).min(block.len() as u64)).unwrap_or(block.len());
        let got = log.read_upto(&mut block[..want], at)?;
        let byte = *first.get_or_insert(block[0]);
        if block[..got].iter().any(|b| *b != byte) {
            return Ok(false);
        }
        if got < want {
            break;
        }
        at += got as u64;
    }
    Ok(true)
}

/// The unstable tail: the segments from `lowest` on that follow each other
/// without a gap (every one after `lowest`, when salvaging), and the first
/// position a segment is missing from, if one is.
fn unstable_tail(
    ordering: &BTreeMap<i64, u64>,
    lowest: i64,
    log: &Log,
    salvage: bool,
) -> (BTreeMap<i64, u64>, Option<i64>) {
    let mut expected = lowest;
    let mut tail = BTreeMap::new();
    for (&lsn, &lid) in ordering.range(lowest..) {
        if lsn != expected && !salvage {
            return (tail, Some(expected));
        }
        tail.insert(lsn, lid);
        expected = lsn + log.segment_size as i64;
    }
    (tail, None)
}
