//! Arbitrary damage over real databases (docs/sled-format.md §7): the
//! reader never panics, never hangs, never writes, and a salvaging read
//! never yields a record that was not in the database.
//!
//! `SLED_READER_CASES` sets the number of cases (default 24); a failure
//! prints its seed (`PROPTEST_RNG_SEED` repeats a run).
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]
#![allow(clippy::print_stderr, reason = "a test prints the seed of each case")]

mod common;
use common::{cases, copy_dir, hash_dir, wait_released};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;

/// A database written once per run: three trees, some blob-sized values,
/// several segments, a snapshot.
struct Base {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// The bases: segments of 1 KiB, segments of 64 KiB, and sled's default
/// segments (512 KiB) with keys padded to up to 1,200 bytes ([`key_of`]),
/// so nodes hold long keys and few of them.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Small,
    Large,
    Wide,
}

impl Shape {
    const fn segment(self) -> usize {
        match self {
            Shape::Small => 1024,
            Shape::Large => 65536,
            Shape::Wide => 512 * 1024,
        }
    }

    fn wide(self) -> bool {
        matches!(self, Shape::Wide)
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![Just(Shape::Small), Just(Shape::Large), Just(Shape::Wide)]
}

fn base(shape: Shape) -> &'static Base {
    static BASES: OnceLock<Vec<Base>> = OnceLock::new();
    let bases = BASES.get_or_init(|| {
        [Shape::Small, Shape::Large, Shape::Wide]
            .into_iter()
            .map(build)
            .collect()
    });
    &bases[shape as usize]
}

/// The key of record `i` of tree `t`: the tree's name and the number, and
/// on the wide base as many `~` as [`pad`] says.
fn key_of(t: &str, i: u32, wide: bool) -> Vec<u8> {
    let mut k = format!("{t}{i:06}").into_bytes();
    if wide {
        k.resize(k.len() + pad(i), b'~');
    }
    k
}

/// The padding of record `i`'s key on the wide base.
fn pad(i: u32) -> usize {
    (i as usize * 37) % 1200
}

/// Opens the database at `path` with sled (segments of `segment` bytes),
/// inserts the actions numbered `ids` in that order (their keys padded
/// when `wide`), flushes and closes it.
fn insert_actions(
    path: &std::path::Path,
    segment: usize,
    wide: bool,
    ids: impl IntoIterator<Item = u32>,
) {
    let db = sled::Config::new()
        .path(path)
        .segment_size(segment)
        .open()
        .unwrap();
    let tree = db.open_tree("actions").unwrap();
    for i in ids {
        tree.insert(key_of("actions", i, wide), value(i)).unwrap();
    }
    db.flush().unwrap();
}

fn build(shape: Shape) -> Base {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv");
    {
        let db = sled::Config::new()
            .path(&path)
            .segment_size(shape.segment())
            .open()
            .unwrap();
        for t in ["accounts", "sessions", "actions"] {
            let tree = db.open_tree(t).unwrap();
            for i in 0..1500u32 {
                tree.insert(key_of(t, i, shape.wide()), value(i)).unwrap();
                if i % 5 == 0 {
                    tree.remove(key_of(t, i / 2, shape.wide())).unwrap();
                }
            }
        }
        db.flush().unwrap();
    }
    wait_released(&path);
    // Reopened: sled writes a snapshot; then more writes after it.
    insert_actions(&path, shape.segment(), shape.wide(), 1500..1900);
    wait_released(&path);
    assert!(find(&path, "snap.").is_some(), "the base has a snapshot");
    let records = read_all(&path).unwrap();
    assert!(records.iter().all(written) && records.len() > 3000);
    Base { _dir: dir, path }
}

#[derive(Debug, Clone)]
enum Hurt {
    /// Random bytes over `len` bytes at a fraction of the log.
    Random { at: f64, len: usize, seed: u8 },
    /// Zeros over `len` bytes at a fraction of the log.
    Zero { at: f64, len: usize },
    /// Single bytes flipped at fractions of the log.
    Flip(Vec<(f64, u8)>),
    /// The log cut at a fraction of its length.
    Truncate(f64),
    /// A file removed: the snapshot, a blob, the configuration, the log.
    Remove(&'static str),
    /// The configuration's bytes damaged.
    Conf { at: f64, seed: u8 },
    /// The snapshot's bytes damaged.
    Snapshot { at: f64, seed: u8 },
    /// A blob file's bytes damaged.
    Blob { at: f64, seed: u8 },
}

fn hurt() -> impl Strategy<Value = Hurt> {
    let frac = 0.0f64..1.0;
    prop_oneof![
        (frac.clone(), 1usize..8192, any::<u8>()).prop_map(|(at, len, seed)| Hurt::Random {
            at,
            len,
            seed
        }),
        (frac.clone(), 1usize..8192).prop_map(|(at, len)| Hurt::Zero { at, len }),
        proptest::collection::vec((frac.clone(), 1u8..=255), 1..32).prop_map(Hurt::Flip),
        frac.clone().prop_map(Hurt::Truncate),
        prop_oneof![Just("snap"), Just("blob"), Just("conf"), Just("db")].prop_map(Hurt::Remove),
        (frac.clone(), any::<u8>()).prop_map(|(at, seed)| Hurt::Conf { at, seed }),
        (frac.clone(), any::<u8>()).prop_map(|(at, seed)| Hurt::Snapshot { at, seed }),
        (frac, any::<u8>()).prop_map(|(at, seed)| Hurt::Blob { at, seed }),
    ]
}

fn find(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    v.sort();
    v.pop()
}

fn scribble(path: &Path, at: f64, len: usize, byte: impl Fn(usize) -> u8) {
    // Removed or emptied by an earlier hurt: nothing to damage.
    let Ok(mut b) = std::fs::read(path) else {
        return;
    };
    if b.is_empty() {
        return;
    }
    let start = ((b.len() as f64 * at) as usize).min(b.len() - 1);
    for (i, x) in b.iter_mut().skip(start).take(len).enumerate() {
        *x = byte(i);
    }
    std::fs::write(path, b).unwrap();
}

fn apply(dir: &Path, h: &Hurt) {
    let db = dir.join("db");
    match h {
        Hurt::Random { at, len, seed } => scribble(&db, *at, *len, |i| {
            (i as u8).wrapping_mul(151).wrapping_add(*seed)
        }),
        Hurt::Zero { at, len } => scribble(&db, *at, *len, |_| 0),
        Hurt::Flip(flips) => {
            for (at, x) in flips {
                let Ok(mut b) = std::fs::read(&db) else {
                    return;
                };
                if b.is_empty() {
                    return;
                }
                let i = ((b.len() as f64 * at) as usize).min(b.len() - 1);
                b[i] ^= x;
                std::fs::write(&db, b).unwrap();
            }
        }
        Hurt::Truncate(at) => {
            let Ok(meta) = std::fs::metadata(&db) else {
                return;
            };
            let len = meta.len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .unwrap()
                .set_len((len as f64 * at) as u64)
                .unwrap();
        }
        Hurt::Remove(what) => {
            let p = match *what {
                "snap" => find(dir, "snap."),
                "blob" => find(&dir.join("blobs"), ""),
                "db" => Some(dir.join("db")),
                _ => Some(dir.join("conf")),
            };
            if let Some(p) = p {
                // Removed twice: the second time there is nothing to remove.
                let _ = std::fs::remove_file(p);
            }
        }
        Hurt::Conf { at, seed } => {
            let p = dir.join("conf");
            if p.exists() {
                scribble(&p, *at, 2, |i| (i as u8) ^ seed ^ 0x21);
            }
        }
        Hurt::Snapshot { at, seed } => {
            if let Some(p) = find(dir, "snap.") {
                scribble(&p, *at, 16, |i| (i as u8) ^ seed);
            }
        }
        Hurt::Blob { at, seed } => {
            if let Some(p) = find(&dir.join("blobs"), "") {
                scribble(&p, *at, 64, |i| (i as u8) ^ seed ^ 0x5a);
            }
        }
    }
}

/// Reads everything, strictly and salvaging; returns the salvaged records.
fn read_all(dir: &Path) -> Option<BTreeSet<Record>> {
    read_with(sled_reader::Db::open(dir).ok()?)
}

/// As [`read_all`], opened for salvage ([`sled_reader::Db::open_salvaging`]).
fn salvage_all(dir: &Path) -> Option<BTreeSet<Record>> {
    read_with(sled_reader::Db::open_salvaging(dir).ok()?)
}

fn read_with(db: sled_reader::Db) -> Option<BTreeSet<Record>> {
    let mut out = BTreeSet::new();
    for name in db.tree_names().map(<[u8]>::to_vec).collect::<Vec<_>>() {
        let tree = db.tree(&name).unwrap();
        for r in tree.iter() {
            if r.is_err() {
                break;
            }
        }
        let _ = tree.last();
        let _ = tree.get(b"sessions000100");
        let mut it = tree.salvage();
        for r in it.by_ref() {
            match r {
                Ok((k, v)) => {
                    out.insert((name.clone(), k, v));
                }
                Err(_) => break,
            }
        }
        for d in it.damage() {
            // Every damage names where it is, in words.
            assert!(!d.to_string().is_empty());
        }
    }
    Some(out)
}

/// A record: its tree, key and value.
type Record = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Whether `r` lies in the key range of a leaf whose split is missing from
/// the log, as a salvaging read of `dir` names it. There the salvage yields
/// what sled's own view holds, and that view can name keys nobody wrote
/// (docs/sled-format.md §6, "A lost split"): the range is named as lost or
/// in doubt, and only there may a record differ from what was written.
fn in_lost_split((tree, k, _): &Record, dir: &Path, salvaging: bool) -> bool {
    let db = if salvaging {
        sled_reader::Db::open_salvaging(dir)
    } else {
        sled_reader::Db::open(dir)
    };
    let Some(tree) = db.ok().and_then(|db| db.tree(tree)) else {
        return false;
    };
    let mut it = tree.salvage();
    for _ in it.by_ref() {}
    it.damage().iter().any(|d| {
        d.reason.contains("split is missing")
            && d.keys
                .as_ref()
                .is_some_and(|r| *k >= r.from && r.to.as_ref().is_none_or(|to| k < to))
    })
}

/// The number of a record's key, when the key is one the history writes
/// (the tree's name, six digits, and no padding or the wide base's).
fn index_of(tree: &[u8], k: &[u8]) -> Option<u32> {
    let t = std::str::from_utf8(tree).ok()?;
    if !["accounts", "sessions", "actions"].contains(&t) {
        return None;
    }
    let rest = k.strip_prefix(t.as_bytes())?;
    let (digits, padding) = rest.split_at_checked(6)?;
    let i: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let padded = padding.iter().all(|b| *b == b'~') && padding.len() == pad(i);
    (padding.is_empty() || padded).then_some(i)
}

/// Whether a record is one the history wrote at some point: a damaged log
/// may recover an earlier state, never a record nobody wrote.
fn written((tree, k, v): &(Vec<u8>, Vec<u8>, Vec<u8>)) -> bool {
    index_of(tree, k).is_some_and(|i| *v == value(i))
}

/// Whether the base history removed this record's key at some point: the
/// only way a record of sled's view may be missing from a salvage that read
/// past the damage (the history writes one value per key).
fn removed((tree, k, _): &Record) -> bool {
    let Some(i) = index_of(tree, k) else {
        return false;
    };
    [2 * i, 2 * i + 1].iter().any(|j| j % 5 == 0 && *j < 1500)
}

fn value(i: u32) -> Vec<u8> {
    let len = if i.is_multiple_of(97) {
        3000
    } else {
        30 + (i % 50) as usize
    };
    vec![(i % 251) as u8; len]
}

proptest! {
    #![proptest_config(common::config())]

    /// Any damage: no panic, no hang (the read runs on a thread that must
    /// finish within a minute), no write, and nothing salvaged that the
    /// database did not hold.
    #[test]
    fn damage_never_panics_hangs_writes_or_invents(
        shape in shape(),
        hurts in proptest::collection::vec(hurt(), 1..4),
    ) {
        let base = base(shape);
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("kv");
        copy_dir(&base.path, &dir);
        for h in &hurts {
            apply(&dir, h);
        }
        let before = hash_dir(&dir);
        let d = dir.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| read_all(&d));
            let _ = tx.send(r);
        });
        let got = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the read did not finish within a minute")
            .expect("the reader panicked");
        prop_assert!(before == hash_dir(&dir), "the reader changed a file");
        if let Some(got) = got {
            let invented: Vec<_> = got
                .iter()
                .filter(|r| !written(r) && !in_lost_split(r, &dir, false))
                .take(3)
                .collect();
            prop_assert!(invented.is_empty(), "salvaged records the database never held: {:?}", invented);
        }
        // Opened for salvage (reading past a cut log): the same rules, and
        // it keeps every record the strict open salvaged but those the
        // history removed later.
        let d = dir.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| (read_all(&d), salvage_all(&d)));
            let _ = tx.send(r);
        });
        let (strict, past) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the salvaging read did not finish within a minute")
            .expect("the salvaging reader panicked");
        prop_assert!(before == hash_dir(&dir), "the salvaging reader changed a file");
        if let Some(past) = past {
            let invented: Vec<_> = past
                .iter()
                .filter(|r| !written(r) && !in_lost_split(r, &dir, true))
                .take(3)
                .collect();
            prop_assert!(invented.is_empty(), "salvaged past the cut records the database never held: {:?}", invented);
            let lost: Vec<_> = strict
                .unwrap_or_default()
                .into_iter()
                .filter(|r| !past.contains(r) && !removed(r))
                .take(3)
                .collect();
            prop_assert!(lost.is_empty(), "reading past the cut lost records: {:?}", lost);
        }
    }
}

/// Damage inside the log: sled ends its read of the segment there, losing
/// the changes written after it; a salvaging open goes on at the next whole
/// message, so it reads records sled loses, names the range it passed
/// over, and never changes a file. The strict open still gives sled's view.
#[test]
fn salvage_reads_past_damage_in_the_log() {
    // One session, no snapshot: every segment is read from the log, so
    // damage anywhere in it is damage sled's recovery meets.
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("kv");
    insert_actions(&path, 1024, false, 0..1500);
    wait_released(&path);
    assert!(find(&path, "snap.").is_none());
    let len = std::fs::metadata(path.join("db")).unwrap().len();
    let (mut more, mut tried) = (0, 0);
    for step in 1..40u32 {
        let at = f64::from(step) / 40.0;
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("kv");
        copy_dir(&path, &dir);
        apply(&dir, &Hurt::Zero { at, len: 40 });
        // Where the damage took every write of a page that later pages
        // outlive, sled panics on opening (docs/sled-format.md §5) and
        // keeps nothing: the salvage gives back more than sled then too.
        let (sled_panics, strict) = match sled_reader::Db::open(&dir) {
            Ok(strict) => (false, Some(strict)),
            Err(sled_reader::Error::Damaged(d)) if d.reason.contains("panics on opening") => {
                (true, None)
            }
            Err(_) => continue,
        };
        if let Some(strict) = &strict {
            assert!(strict.report().skipped.is_empty());
        }
        let before = hash_dir(&dir);
        let Ok(past) = sled_reader::Db::open_salvaging(&dir) else {
            continue;
        };
        assert_eq!(
            past.report().sled_cannot_open.is_some(),
            sled_panics,
            "at {at}: the salvage's report and the strict open disagree"
        );
        assert!(
            before == hash_dir(&dir),
            "opening for salvage changed a file"
        );
        tried += 1;
        let skipped: Vec<String> = past
            .report()
            .skipped
            .iter()
            .map(|d| d.to_string())
            .collect();
        let mine = read_with(past).unwrap();
        let sleds = match strict {
            Some(strict) => read_with(strict).unwrap(),
            None => BTreeSet::new(),
        };
        assert!(mine.iter().all(written), "at {at}: a record nobody wrote");
        let lost: Vec<_> = sleds
            .iter()
            .filter(|r| !removed(r) && !mine.contains(*r))
            .take(3)
            .collect();
        assert!(lost.is_empty(), "at {at}: salvage lost {lost:?}");
        if mine.len() > sleds.len() {
            more += 1;
            assert!(
                skipped.iter().any(|s| s.contains("could not be read")),
                "at {at}: more records read, but no range named as skipped"
            );
        }
        eprintln!(
            "zeros at {at:.3} of {len} bytes: sled's view {} records, salvage {} ({} ranges skipped)",
            sleds.len(),
            mine.len(),
            skipped.len()
        );
    }
    assert!(
        more > 0,
        "of {tried} damaged logs, none gave back records that sled loses"
    );
}

/// A snapshot sled stopped writing (killed between creating
/// `snap.*.generating` and renaming it; sled 0.34.7 then refuses to open
/// the database) is passed over for the one before it, and the records
/// read are the database's; a whole one is read as sled reads it.
/// A segment whose header is destroyed: sled leaves the segment out, and
/// when it lies in the log's unstable tail its view ends before it. A
/// salvaging open reads every other segment, so it keeps at least sled's
/// view, and whenever it misses a record the undamaged database holds, it
/// names the segment it could not read. Every segment of the log but the
/// first is tried in turn (where random damage lands on a header depends
/// on how sled batched its writes, which differs run to run, so a test
/// over fractions of the file met this only in some runs).
#[test]
fn a_destroyed_segment_header_is_named_by_a_salvage() {
    const SEGMENT: u64 = Shape::Small.segment() as u64;
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("kv");
    insert_actions(&path, SEGMENT as usize, false, 0..600);
    wait_released(&path);
    let whole = read_all(&path).unwrap();
    let len = std::fs::metadata(path.join("db")).unwrap().len();
    let mut named_losses = 0;
    for lid in (SEGMENT..len).step_by(SEGMENT as usize) {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("kv");
        copy_dir(&path, &dir);
        let mut b = std::fs::read(dir.join("db")).unwrap();
        for x in b.iter_mut().skip(lid as usize).take(40) {
            *x = 0;
        }
        std::fs::write(dir.join("db"), b).unwrap();
        let Ok(past) = sled_reader::Db::open_salvaging(&dir) else {
            continue;
        };
        let named = past.report().skipped.iter().any(|d| {
            d.place == sled_reader::Place::Log { offset: lid }
                && d.to_string().contains("could not be read")
        });
        let mine = read_with(past).unwrap();
        let sleds = read_all(&dir).unwrap_or_default();
        assert!(
            mine.iter().all(written),
            "header at {lid}: a record nobody wrote"
        );
        let lost: Vec<_> = sleds.difference(&mine).take(3).collect();
        assert!(
            lost.is_empty(),
            "header at {lid}: salvage lost {lost:?}, which sled read"
        );
        if mine != whole {
            assert!(
                named,
                "header at {lid} of {len}: salvage read {} of {} records (sled's view {}), \
                 and the segment it could not read is not named",
                mine.len(),
                whole.len(),
                sleds.len()
            );
            named_losses += 1;
        }
    }
    assert!(
        named_losses > 0,
        "no destroyed header of {len} bytes of log lost a record"
    );
}

#[test]
fn an_unfinished_snapshot_is_passed_over() {
    let base = base(Shape::Large);
    let want = read_all(&base.path).unwrap();
    let snap = find(&base.path, "snap.").unwrap();
    let bytes = std::fs::read(&snap).unwrap();
    for (cut, whole) in [(0, false), (bytes.len() / 2, false), (bytes.len(), true)] {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("kv");
        copy_dir(&base.path, &dir);
        let generating = dir.join("snap.FFFFFFFFFFFFFFF0.generating");
        std::fs::write(&generating, &bytes[..cut]).unwrap();
        let before = hash_dir(&dir);
        let found = sled_reader::unfinished_snapshot(&dir).unwrap();
        assert_eq!(found.is_some(), !whole, "cut at {cut}");
        let db = sled_reader::Db::open(&dir).unwrap();
        let used = db.report().snapshot.clone().unwrap();
        assert_eq!(
            used == generating,
            whole,
            "cut at {cut}: read {}",
            used.display()
        );
        assert_eq!(read_all(&dir).unwrap(), want, "cut at {cut}");
        assert!(before == hash_dir(&dir), "reading changed a file");
    }
}

/// sled 0.34.7 opens a log whose `conf` is gone or holds 8 bytes or fewer
/// with its opener's parameters (a node's: the defaults): so does the
/// reader, and says so.
#[test]
fn a_missing_conf_is_read_with_sleds_defaults() {
    let base = base(Shape::Wide);
    let want = read_all(&base.path).unwrap();
    for short in [None, Some(&b""[..]), Some(&b"segment_"[..])] {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("kv");
        copy_dir(&base.path, &dir);
        match short {
            None => std::fs::remove_file(dir.join("conf")).unwrap(),
            Some(b) => std::fs::write(dir.join("conf"), b).unwrap(),
        }
        let before = hash_dir(&dir);
        assert!(sled_reader::holds_database(&dir));
        let db = sled_reader::Db::open(&dir).unwrap();
        assert!(db.report().conf_missing, "conf {short:?}");
        assert_eq!(read_all(&dir).unwrap(), want, "conf {short:?}");
        assert_eq!(salvage_all(&dir).unwrap(), want, "conf {short:?}");
        assert!(before == hash_dir(&dir), "reading changed a file");
    }
}

/// A `conf` that does not parse makes sled refuse the database: a strict
/// open fails naming the file; a salvage names it, reads the log with the
/// defaults and reports that sled cannot open the database.
#[test]
fn a_conf_that_does_not_parse_is_damage_a_salvage_reads_past() {
    let base = base(Shape::Wide);
    let want = read_all(&base.path).unwrap();
    let clean = std::fs::read(base.path.join("conf")).unwrap();
    let text = String::from_utf8_lossy(&clean[..clean.len() - 4]).into_owned();
    for bad in [
        text.replace(": ", ":"),
        text.replace("524288", "52x288"),
        text.replace("false", "nope"),
        text.replace("0.34", "0.x"),
        text.replace("segment_size", "segment_sise"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("kv");
        copy_dir(&base.path, &dir);
        let mut bytes = bad.clone().into_bytes();
        bytes.extend_from_slice(&clean[clean.len() - 4..]);
        std::fs::write(dir.join("conf"), bytes).unwrap();
        let before = hash_dir(&dir);
        match sled_reader::Db::open(&dir) {
            Err(sled_reader::Error::Damaged(d)) => {
                assert_eq!(
                    d.place,
                    sled_reader::Place::File {
                        path: dir.join("conf")
                    },
                    "{bad:?}: {d}"
                );
            }
            other => panic!("{bad:?}: a strict open gave {other:?}"),
        }
        let db = sled_reader::Db::open_salvaging(&dir).unwrap();
        let report = db.report();
        assert!(
            matches!(&report.skipped[..], [d] if d.place == sled_reader::Place::File { path: dir.join("conf") }),
            "{bad:?}: {:?}",
            report.skipped
        );
        assert!(report.sled_cannot_open.is_some(), "{bad:?}");
        assert_eq!(salvage_all(&dir).unwrap(), want, "{bad:?}");
        assert!(before == hash_dir(&dir), "reading changed a file");
    }
}

/// A snapshot whose bytes are damaged makes sled refuse the database: a
/// strict open fails naming it; a salvage names it and recovers the whole
/// log without it, as sled does once the snapshot is removed.
#[test]
fn a_damaged_snapshot_is_passed_over_by_a_salvage() {
    for shape in [Shape::Small, Shape::Large, Shape::Wide] {
        let base = base(shape);
        let want = read_all(&base.path).unwrap();
        let snap = find(&base.path, "snap.").unwrap();
        let len = std::fs::metadata(&snap).unwrap().len() as usize;
        for (at, cut) in [(0.0, false), (0.5, false), (0.99, false), (0.5, true)] {
            let work = tempfile::tempdir().unwrap();
            let dir = work.path().join("kv");
            copy_dir(&base.path, &dir);
            let hurt = dir.join(snap.file_name().unwrap());
            if cut {
                let bytes = std::fs::read(&hurt).unwrap();
                std::fs::write(&hurt, &bytes[..(len as f64 * at) as usize]).unwrap();
            } else {
                scribble(&hurt, at, 8.min(len), |i| (i as u8) ^ 0xA5);
            }
            let case = format!("{shape:?}, snapshot hurt at {at} (cut: {cut})");
            let before = hash_dir(&dir);
            match sled_reader::Db::open(&dir) {
                Err(sled_reader::Error::Damaged(d)) => assert_eq!(
                    d.place,
                    sled_reader::Place::File { path: hurt.clone() },
                    "{case}: {d}"
                ),
                other => panic!("{case}: a strict open gave {other:?}"),
            }
            let db = sled_reader::Db::open_salvaging(&dir).unwrap();
            let report = db.report();
            assert!(
                report
                    .skipped
                    .first()
                    .is_some_and(|d| d.place == sled_reader::Place::File { path: hurt.clone() }),
                "{case}: {:?}",
                report.skipped
            );
            assert!(report.snapshot.is_none(), "{case}");
            assert!(report.sled_cannot_open.is_some(), "{case}");
            assert_eq!(salvage_all(&dir).unwrap(), want, "{case}");
            assert!(before == hash_dir(&dir), "{case}: reading changed a file");
        }
    }
}

/// A `conf` without its log: sled creates an empty log, so the database
/// opens empty (damaged, where a snapshot points into the lost log); so
/// does the reader. A directory with neither is no database.
#[test]
fn a_missing_log_reads_as_an_empty_database() {
    let base = base(Shape::Wide);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("kv");
    copy_dir(&base.path, &dir);
    std::fs::remove_file(dir.join("db")).unwrap();
    assert!(matches!(
        sled_reader::Db::open(&dir),
        Err(sled_reader::Error::Damaged(_))
    ));
    std::fs::remove_file(find(&dir, "snap.").unwrap()).unwrap();
    let db = sled_reader::Db::open(&dir).unwrap();
    assert!(db.report().log_missing);
    assert_eq!(read_all(&dir).unwrap(), BTreeSet::new());
    assert!(!dir.join("db").exists(), "reading created the log");
    std::fs::remove_file(dir.join("conf")).unwrap();
    assert!(!sled_reader::holds_database(&dir));
    assert!(matches!(
        sled_reader::Db::open(&dir),
        Err(sled_reader::Error::NotSled { .. })
    ));
}

/// The child of [`salvage_keeps_what_sled_recovers`]: opens a database with
/// sled and writes every record it reads to a file (run in its own process,
/// since sled may panic or spin on damage).
fn sled_child(dir: &Path, out: &Path) -> ! {
    let mut lines = Vec::new();
    let segment: usize = std::fs::read(dir.join("conf"))
        .ok()
        .and_then(|c| {
            String::from_utf8_lossy(&c)
                .lines()
                .find_map(|l| l.strip_prefix("segment_size: ")?.parse().ok())
        })
        .unwrap_or(512 * 1024);
    let Ok(db) = sled::Config::new().path(dir).segment_size(segment).open() else {
        // sled refused the database: a failure, told apart from an open
        // that read nothing.
        std::process::exit(3)
    };
    // Opened: a node could run on it, whatever its reads do next.
    std::fs::write(out.with_extension("opened"), b"").unwrap();
    {
        for name in db.tree_names() {
            let Ok(tree) = db.open_tree(&name) else {
                continue;
            };
            for item in tree.iter() {
                let Ok((k, v)) = item else { break };
                lines.push(format!("{}\t{}\t{}", hexs(&name), hexs(&k), hexs(&v)));
            }
        }
    }
    std::fs::write(out, lines.join("\n")).unwrap();
    std::process::exit(0)
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// On damage sled survives, the salvaging reader keeps at least every
/// record sled's own recovery keeps (sled runs in a child process on a
/// copy, killed if it spins).
#[test]
fn salvage_keeps_what_sled_recovers() {
    if let (Ok(dir), Ok(out)) = (
        std::env::var("SLED_READER_SLED_DIR"),
        std::env::var("SLED_READER_SLED_OUT"),
    ) {
        sled_child(Path::new(&dir), Path::new(&out));
    }
    let seed: u64 = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5a17);
    let rounds = (cases() / 4).max(6);
    let mut compared = 0;
    for round in 0..u64::from(rounds) {
        // splitmix64 of the seed and the round.
        let mut x = seed.wrapping_add(round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let base = base([Shape::Small, Shape::Large, Shape::Wide][(x % 3) as usize]);
        let at = (x >> 8) as f64 / (1u64 << 56) as f64;
        let hurt = match (x >> 4) % 4 {
            0 => Hurt::Zero { at, len: 4096 },
            1 => Hurt::Random {
                at,
                len: 4096,
                seed: x as u8,
            },
            2 => Hurt::Flip(vec![(at, 0x5a), ((at + 0.3) % 1.0, 0xa5)]),
            _ => Hurt::Truncate(0.5 + at / 2.0),
        };
        eprintln!("salvage case {round}: seed {seed}, {hurt:?}");
        let work = tempfile::tempdir().unwrap();
        let mine_dir = work.path().join("mine");
        let theirs_dir = work.path().join("theirs");
        copy_dir(&base.path, &mine_dir);
        apply(&mine_dir, &hurt);
        copy_dir(&mine_dir, &theirs_dir);
        let out = work.path().join("sled.txt");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "salvage_keeps_what_sled_recovers", "--nocapture"])
            .env("SLED_READER_SLED_DIR", &theirs_dir)
            .env("SLED_READER_SLED_OUT", &out)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(work.path().join("sled.err")).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ok = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader says exactly when sled panics over a page its
        // recovery leaves without state (docs/sled-format.md §5).
        let err = std::fs::read_to_string(work.path().join("sled.err")).unwrap_or_default();
        let uninitialized = err.contains("tried to serialize Uninitialized");
        let strict = sled_reader::Db::open(&mine_dir);
        let predicted = match &strict {
            Err(sled_reader::Error::Damaged(d)) => d.reason.contains("panics on opening"),
            _ => false,
        };
        assert_eq!(
            predicted,
            uninitialized,
            "case {round} ({hurt:?}): sled {} over an uninitialized page, the reader says it {} ({})",
            if uninitialized {
                "panicked"
            } else {
                "did not panic"
            },
            if predicted { "would" } else { "would not" },
            match &strict {
                Ok(db) => format!("{:?}", db.report()),
                Err(e) => e.to_string(),
            }
        );
        if let Ok(db) = sled_reader::Db::open_salvaging(&mine_dir) {
            // Never says so of a database sled opens (a migration would
            // then leave a source a node can run on without a tombstone).
            let cannot = &db.report().sled_cannot_open;
            let opened = out.with_extension("opened").exists();
            assert!(
                cannot.is_none() || !opened,
                "case {round} ({hurt:?}): sled opened the database the reader says it cannot: {cannot:?}"
            );
            assert!(
                cannot.is_some() || !uninitialized,
                "case {round} ({hurt:?}): sled panicked over an uninitialized page, a salvaging open did not say so"
            );
        }
        if !ok {
            // sled panicked or spun: nothing of its to compare with.
            let why = err
                .lines()
                .find(|l| l.contains("panicked") || l.starts_with("thread"))
                .unwrap_or("refused the database, or killed after 30 s");
            eprintln!("  sled failed: {why}");
            continue;
        }
        let theirs: BTreeSet<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let mine: BTreeSet<String> = read_all(&mine_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|(t, k, v)| format!("{}\t{}\t{}", hexs(&t), hexs(&k), hexs(&v)))
            .collect();
        let lost: Vec<_> = theirs.difference(&mine).take(3).collect();
        if !lost.is_empty() {
            // The base is written anew each run: keep the case to study.
            let kept = std::env::temp_dir().join(format!("sled-reader-salvage-{seed}-{round}"));
            copy_dir(&base.path, &kept.join("base"));
            copy_dir(&theirs_dir, &kept.join("damaged"));
            eprintln!("  the case is kept in {}", kept.display());
        }
        assert!(
            lost.is_empty(),
            "case {round} ({hurt:?}): sled recovered records the salvage did not: {lost:?}"
        );
        // Read past damage in the log: still everything sled recovered,
        // but what the history removed later.
        let past: BTreeSet<Record> = salvage_all(&mine_dir).unwrap_or_default();
        let lost: Vec<_> = read_all(&mine_dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !removed(r) && !past.contains(r))
            .filter(|(t, k, v)| theirs.contains(&format!("{}\t{}\t{}", hexs(t), hexs(k), hexs(v))))
            .take(3)
            .collect();
        assert!(
            lost.is_empty(),
            "case {round} ({hurt:?}): reading past damage lost records sled recovered: {lost:?}"
        );
        compared += 1;
    }
    eprintln!("compared {compared} of {rounds} cases with sled");
}

/// sled's variable-length integer (docs/sled-format.md §2), for the lost
/// split case below, which finds its message in the log itself.
fn varint_at(b: &[u8], i: usize) -> Option<(u64, usize)> {
    let f = *b.get(i)?;
    Some(match f {
        0..=240 => (u64::from(f), i + 1),
        241..=248 => (
            240 + 256 * (u64::from(f) - 241) + u64::from(*b.get(i + 1)?),
            i + 2,
        ),
        249 => (
            2288 + 256 * u64::from(*b.get(i + 1)?) + u64::from(*b.get(i + 2)?),
            i + 3,
        ),
        _ => {
            let n = usize::from(f) - 247;
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(b.get(i + 1..i + 1 + n)?);
            (u64::from_le_bytes(a), i + 1 + n)
        }
    })
}

/// A node message of the log: its lsn, where it starts and
/// where its body does, its page id, and the node's `next`, `lo` and `hi`
/// (docs/sled-format.md §3, §4).
struct NodeMsg {
    lsn: i64,
    at: usize,
    body: std::ops::Range<usize>,
    pid: u64,
    next: u64,
    lo: Vec<u8>,
    hi: Vec<u8>,
}

/// Every inline node message of the log `db`, in the order written.
fn node_messages(db: &[u8], segment: usize) -> Vec<NodeMsg> {
    let mut out = Vec::new();
    for seg in (0..db.len()).step_by(segment) {
        let Some(h) = db.get(seg + 4..seg + 12) else {
            break;
        };
        let seg_lsn = i64::from_le_bytes(h.try_into().unwrap()) ^ 0x7FFF_FFFF_FFFF_FFFF;
        let mut i = seg + 20;
        while i + 32 < (seg + segment).min(db.len()) {
            let kind = db[i + 4];
            let Some((len, j)) = varint_at(db, i + 5) else {
                break;
            };
            let Some((_, j)) = varint_at(db, j) else {
                break;
            };
            let Some((pid, j)) = varint_at(db, j) else {
                break;
            };
            let Some(end) = usize::try_from(len).ok().and_then(|l| j.checked_add(l)) else {
                break;
            };
            if kind == 0 || kind == 2 || end > db.len() {
                break;
            }
            if kind == 8 {
                let body = &db[j..end];
                let parsed = (|| {
                    let (next, k) = varint_at(body, 0)?;
                    let (_, k) = varint_at(body, k)?;
                    let (lo_len, k) = varint_at(body, k + 2)?;
                    let lo = body.get(k..k + lo_len as usize)?.to_vec();
                    let (hi_len, k) = varint_at(body, k + lo_len as usize)?;
                    let hi = body.get(k..k + hi_len as usize)?.to_vec();
                    Some((next, lo, hi))
                })();
                if let Some((next, lo, hi)) = parsed {
                    out.push(NodeMsg {
                        lsn: seg_lsn + (i - seg) as i64,
                        at: i,
                        body: j..end,
                        pid,
                        next,
                        lo,
                        hi,
                    });
                }
            }
            i = end;
        }
    }
    out.sort_by_key(|n| n.lsn);
    out
}

/// A leaf's split whose message replacing the leaf with its left half is
/// lost (here the message is made a canceled one, which the log reads
/// past as it reads past a damaged message before its tail, but without
/// losing the rest of the segment): the chain of leaves goes through the
/// leaf as it was, whose range still holds the keys after the split,
/// while the index sends those keys to the new right leaf, where every
/// later insert went. The reader's strict iteration fails, naming the
/// page; its salvage names the page and the left half's key range (read
/// as sled's own view holds it, which can be short of what was written, or
/// name keys nobody wrote), and reads every key outside it.
///
/// `ids` are the actions inserted, in that order, from a database of
/// 64 KiB segments; `last` picks the split of the leaf that ended the
/// chain (whose right half ends it then), else one in its middle.
fn a_lost_split_is_read_through_the_index(ids: &[u32], last: bool) {
    const SEGMENT: usize = 65536;
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("kv");
    insert_actions(&path, SEGMENT, false, ids.iter().copied());
    wait_released(&path);
    let log = std::fs::read(path.join("db")).unwrap();
    let nodes = node_messages(&log, SEGMENT);
    // A left half: a node with an upper bound whose right sibling was
    // written just before it, and the leaf's last whole version but not
    // its first. The earliest such split, so that many inserts follow it.
    let split = nodes
        .windows(2)
        .enumerate()
        .find(|(i, w)| {
            let (right, left) = (&w[0], &w[1]);
            // The leaf's version before the split is still in the log, and
            // the leaf is not written whole again later.
            let before = nodes[..*i].iter().any(|n| n.pid == left.pid);
            let after = nodes[i + 2..].iter().any(|n| n.pid == left.pid);
            before
                && !after
                && left.next == right.pid
                && !left.hi.is_empty()
                && left.hi == right.lo
                && right.hi.is_empty() == last
        })
        .map(|(_, w)| (w[1].pid, w[1].at, w[1].body.clone(), w[1].hi.clone()))
        .expect("a split of a leaf in the log");
    let (leaf, at, body, hi) = split;
    eprintln!(
        "the split of page {leaf} at {} (log offset {at}) is lost",
        String::from_utf8_lossy(&hi)
    );
    // The message becomes a canceled one (kind 1) with a checksum that
    // matches: the log reads whole, and only this write is missing.
    let mut damaged = log.clone();
    damaged[at + 4] = 1;
    let mut h = crc32fast::Hasher::new();
    h.update(&damaged[body.clone()]);
    h.update(&damaged[at + 4..body.start]);
    damaged[at..at + 4].copy_from_slice(&(h.finalize() ^ 0xFFFF_FFFF).to_le_bytes());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("kv");
    copy_dir(&path, &dir);
    std::fs::write(dir.join("db"), damaged).unwrap();
    let before = hash_dir(&dir);

    let db = sled_reader::Db::open(&dir).unwrap();
    let tree = db.tree(b"actions").unwrap();
    let err = tree
        .iter()
        .find_map(Result::err)
        .expect("the strict read fails at the lost split");
    // At the split, or earlier where a change appended after it names a
    // key past the old version's bound (sled asserts there).
    let e = err.to_string();
    assert!(
        e.contains(&format!("page {leaf}"))
            && (e.contains("split") || e.contains("at or above the node's upper bound")),
        "{e}"
    );
    let mut salvage = tree.salvage();
    let read: Vec<(Vec<u8>, Vec<u8>)> = salvage.by_ref().map(Result::unwrap).collect();
    let damage: Vec<String> = salvage.damage().iter().map(ToString::to_string).collect();
    assert!(
        salvage.damage().iter().any(|d| d.page == Some(leaf)),
        "the salvage names the page of the lost split: {damage:?}"
    );
    // Records are read in key order. Outside the key ranges the salvage
    // names as lost or in doubt, every record read was written and every
    // key written is read; inside them (the left half, read as sled's own
    // view holds it), a record that was not written must be one sled's
    // own view holds too.
    let named = |k: &[u8]| {
        salvage.damage().iter().any(|d| {
            d.keys.as_ref().is_some_and(|r| {
                k >= r.from.as_slice() && r.to.as_ref().is_none_or(|to| k < to.as_slice())
            })
        })
    };
    let written: BTreeMap<Vec<u8>, Vec<u8>> = ids
        .iter()
        .map(|i| (format!("actions{i:06}").into_bytes(), value(*i)))
        .collect();
    assert!(read.windows(2).all(|w| w[0].0 < w[1].0), "out of order");
    let sleds = OnceLock::new();
    for (k, v) in &read {
        if written.get(k) == Some(v) {
            continue;
        }
        assert!(
            named(k),
            "the salvage read {}, a record never written, outside the ranges it names: {damage:?}",
            String::from_utf8_lossy(k)
        );
        // sled writes what it opens: its view is read from a copy.
        let sleds: &BTreeMap<Vec<u8>, Vec<u8>> = sleds.get_or_init(|| {
            let copy = work.path().join("sled");
            copy_dir(&dir, &copy);
            let db = sled::Config::new()
                .path(&copy)
                .segment_size(SEGMENT)
                .open()
                .unwrap();
            let tree = db.open_tree("actions").unwrap();
            tree.iter()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<_, _>>()
                .unwrap()
        });
        assert!(
            sleds.get(k) == Some(v),
            "the salvage read {}, a record neither written nor in sled's own view",
            String::from_utf8_lossy(k)
        );
    }
    let got: BTreeSet<&Vec<u8>> = read.iter().map(|(k, _)| k).collect();
    let unnamed: Vec<String> = written
        .keys()
        .filter(|k| !got.contains(k) && !named(k))
        .take(5)
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        unnamed.is_empty(),
        "the salvage read {} keys of {}, and lost {unnamed:?} without naming them: {damage:?}",
        read.len(),
        written.len()
    );
    eprintln!("the salvage read {} keys of {}", read.len(), written.len());
    assert!(before == hash_dir(&dir), "the reader changed a file");
}

/// The split of the last leaf, in keys inserted in order: the chain of
/// leaves ends at the leaf as it was. sled's reads descend from the root
/// and find the keys after the split; walking the chain alone, the reader
/// lost them without a word. (Found by `salvage_keeps_what_sled_recovers`,
/// seed 8006.)
#[test]
fn a_lost_split_of_the_last_leaf_is_read_through_the_index() {
    let ids: Vec<u32> = (0..3000).collect();
    a_lost_split_is_read_through_the_index(&ids, true);
}

/// The split of a leaf in the middle of the chain, in keys inserted in a
/// scattered order: the chain goes from the leaf as it was to the leaf
/// after the lost right half, passing over every key inserted into that
/// half since (as sled's own iteration, which goes on at each leaf's upper
/// bound, passes over them too).
#[test]
fn a_lost_split_in_the_middle_of_the_leaves_is_read_through_the_index() {
    let ids: Vec<u32> = (0..3000).map(|i| i * 1543 % 3000).collect();
    a_lost_split_is_read_through_the_index(&ids, false);
}
