//! The reader against sled itself: random histories written through sled,
//! then every tree read by both and compared key by key (docs/sled-format.md
//! §7). Every disagreement fails, whichever side it favours.
//!
//! `SLED_READER_CASES` sets the number of cases (default 24; `cargo xtask
//! ci` runs more), `PROPTEST_RNG_SEED` repeats a run; a failure prints its
//! seed and the history.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]
#![allow(clippy::print_stderr, reason = "a test prints the seed of each case")]

mod common;
use common::{cases, copy_dir, hash_dir, wait_released};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;

type View = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

const TREES: [&str; 3] = ["a", "b", "nodestore.meta"];

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, Vec<u8>, usize),
    Remove(usize, Vec<u8>),
    Batch(usize, Vec<(Vec<u8>, Option<usize>)>),
    Transaction(Vec<(usize, Vec<u8>, usize)>),
    Flush,
    Reopen,
    ClearTree(usize),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0u16..400).prop_map(|k| format!("k{k:04}").into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn value_len() -> impl Strategy<Value = usize> {
    // Mostly small values; some big enough to go to blob files at the
    // small segment sizes the cases use.
    prop_oneof![8 => 0usize..64, 2 => 64usize..1500, 1 => 1500usize..6000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0..3usize, key(), value_len()).prop_map(|(t, k, v)| Op::Insert(t, k, v)),
        8 => (0..3usize, key()).prop_map(|(t, k)| Op::Remove(t, k)),
        4 => (0..3usize, proptest::collection::vec((key(), proptest::option::of(value_len())), 1..40))
            .prop_map(|(t, b)| Op::Batch(t, b)),
        3 => proptest::collection::vec((0..3usize, key(), value_len()), 1..6).prop_map(Op::Transaction),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => (0..3usize).prop_map(Op::ClearTree),
    ]
}

fn value(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7)) as u8)
        .collect()
}

fn open_sled(dir: &Path, segment: usize) -> sled::Db {
    // sled's background threads let go of the previous handle's file lock
    // a moment after it is dropped.
    for _ in 0..200 {
        match sled::Config::new()
            .path(dir)
            .segment_size(segment)
            .cache_capacity(1 << 20)
            .open()
        {
            Ok(db) => return db,
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::Other => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => panic!("sled cannot open {}: {e}", dir.display()),
        }
    }
    panic!("sled kept {} locked", dir.display())
}

fn run(dir: &Path, segment: usize, ops: &[Op]) {
    let trees: Vec<Vec<u8>> = TREES.iter().map(|t| t.as_bytes().to_vec()).collect();
    run_on(dir, segment, &trees, ops);
}

/// Runs `ops` through sled, tree `t` of an op being `trees[t]`; a
/// transaction writes the first three trees.
fn run_on(dir: &Path, segment: usize, trees: &[Vec<u8>], ops: &[Op]) {
    let mut db = open_sled(dir, segment);
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::Insert(t, k, len) => {
                db.open_tree(&trees[*t])
                    .unwrap()
                    .insert(k, value(n, *len))
                    .unwrap();
            }
            Op::Remove(t, k) => {
                db.open_tree(&trees[*t]).unwrap().remove(k).unwrap();
            }
            Op::Batch(t, items) => {
                let mut b = sled::Batch::default();
                for (i, (k, v)) in items.iter().enumerate() {
                    match v {
                        Some(len) => b.insert(k.clone(), value(n + i, *len)),
                        None => b.remove(k.clone()),
                    }
                }
                db.open_tree(&trees[*t]).unwrap().apply_batch(b).unwrap();
            }
            Op::Transaction(items) => {
                use sled::Transactional as _;
                let trees: Vec<sled::Tree> = trees[..3]
                    .iter()
                    .map(|t| db.open_tree(t).unwrap())
                    .collect();
                (&trees[0], &trees[1], &trees[2])
                    .transaction(|(a, b, c)| {
                        for (i, (t, k, len)) in items.iter().enumerate() {
                            let tx = [a, b, c][*t];
                            tx.insert(k.clone(), value(n + i, *len))?;
                        }
                        Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .unwrap();
            }
            Op::Flush => {
                db.flush().unwrap();
            }
            Op::Reopen => {
                drop(db);
                db = open_sled(dir, segment);
            }
            Op::ClearTree(t) => {
                db.open_tree(&trees[*t]).unwrap().clear().unwrap();
            }
        }
    }
    db.flush().unwrap();
    drop(db);
    wait_released(dir);
}

/// The reader's view; also checks it left every file as it was.
fn reader_view(dir: &Path) -> View {
    let before = hash_dir(dir);
    let db = sled_reader::Db::open(dir).unwrap_or_else(|e| panic!("the reader refused: {e}"));
    let mut view = View::new();
    for name in db.tree_names().map(<[u8]>::to_vec).collect::<Vec<_>>() {
        let tree = db.tree(&name).unwrap();
        let items: Vec<_> = tree
            .iter()
            .map(|r| r.unwrap_or_else(|e| panic!("the reader failed on tree {}: {e}", tree.name())))
            .collect();
        // Point reads and the last key agree with the scan.
        for (k, v) in items.iter().step_by(7) {
            assert_eq!(tree.get(k).unwrap().as_ref(), Some(v), "get of {k:?}");
        }
        assert_eq!(
            tree.last().unwrap(),
            items.last().cloned(),
            "last of {}",
            tree.name()
        );
        view.insert(name, items);
    }
    assert!(before == hash_dir(dir), "the reader changed a file");
    view
}

fn sled_view(dir: &Path, segment: usize) -> View {
    let db = open_sled(dir, segment);
    let mut view = View::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let items = tree
            .iter()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        view.insert(name.to_vec(), items);
    }
    view
}

/// Compares, treating a database sled never finished creating (no meta
/// page: the reader sees no trees, sled creates its default tree) as equal
/// when sled's trees are all empty.
fn compare(dir: &Path, segment: usize) {
    let mine = reader_view(dir);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let theirs = sled_view(copy.path(), segment);
    if mine.is_empty() && theirs.values().all(Vec::is_empty) {
        return;
    }
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "tree names differ"
    );
    for (name, want) in &theirs {
        let got = &mine[name];
        if got != want {
            let first = got
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            panic!(
                "tree {}: the reader has {} entries, sled {}; first difference at entry {first}: reader {:?}, sled {:?}",
                String::from_utf8_lossy(name),
                got.len(),
                want.len(),
                got.get(first).map(|(k, _)| k),
                want.get(first).map(|(k, _)| k),
            );
        }
    }
}

proptest! {
    #![proptest_config(common::config())]

    /// Random histories of inserts, removes, batches, transactions, clears,
    /// flushes and reopenings over three trees, at segment sizes small
    /// enough that values go to blob files and the log crosses and reuses
    /// segments.
    #[test]
    fn the_reader_reads_what_sled_reads(
        segment in prop_oneof![Just(1024usize), Just(4096), Just(65536)],
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), segment, &ops);
        compare(dir.path(), segment);
    }
}

/// Keys of every length class: empty, short, past one length byte, and
/// longer than most nodes hold.
fn long_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0u16..300).prop_map(|k| format!("k{k:04}").into_bytes()),
        2 => proptest::collection::vec(any::<u8>(), 0..40),
        2 => (0u16..200, 100usize..600).prop_map(|(k, n)| {
            let mut key = format!("long{k:04}").into_bytes();
            key.resize(n, b'x');
            key
        }),
        1 => (0u16..50, 600usize..5000).prop_map(|(k, n)| {
            let mut key = format!("huge{k:04}").into_bytes();
            key.resize(n, k as u8);
            key
        }),
    ]
}

/// Values from empty to several segments long.
fn any_value_len() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..64, 2 => 64usize..4000, 1 => 4000usize..200_000]
}

fn op_over(trees: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0..trees, long_key(), any_value_len()).prop_map(|(t, k, v)| Op::Insert(t, k, v)),
        8 => (0..trees, long_key()).prop_map(|(t, k)| Op::Remove(t, k)),
        4 => (0..trees, proptest::collection::vec((long_key(), proptest::option::of(any_value_len())), 1..60))
            .prop_map(|(t, b)| Op::Batch(t, b)),
        3 => proptest::collection::vec((0..3usize, long_key(), any_value_len()), 1..6)
            .prop_map(Op::Transaction),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => (0..trees).prop_map(Op::ClearTree),
    ]
}

/// Tree names: the meta tree's, and names of any bytes and length.
fn tree_names() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..80), 2..12).prop_map(
        |mut names| {
            names.insert(0, b"nodestore.meta".to_vec());
            // sled's default tree is the database itself; a name equal to
            // it would be the same tree under two indices.
            names.retain(|n| n.as_slice() != b"__sled__default");
            names.sort();
            names.dedup();
            // A transaction writes the first three.
            let mut n = 0u8;
            while names.len() < 3 {
                let name = vec![b'_', n];
                if !names.contains(&name) {
                    names.push(name);
                }
                n += 1;
            }
            names
        },
    )
}

proptest! {
    #![proptest_config(common::config())]

    /// As above, with keys from empty to several KiB, values up to
    /// 200 KB, up to a dozen trees named by any bytes, and sled's default
    /// segment size among the sizes.
    #[test]
    fn the_reader_reads_what_sled_reads_for_any_key_value_and_tree(
        segment in prop_oneof![Just(4096usize), Just(65536), Just(512 * 1024)],
        (trees, ops) in tree_names().prop_flat_map(|trees| {
            let n = trees.len();
            (Just(trees), proptest::collection::vec(op_over(n), 1..300))
        }),
    ) {
        let dir = tempfile::tempdir().unwrap();
        run_on(dir.path(), segment, &trees, &ops);
        compare(dir.path(), segment);
    }
}

/// Trees deep enough for several index levels, written in random key
/// order, then mostly emptied (sled merges the nodes left underfull) and
/// written again: the reader still reads what sled reads.
#[test]
fn deep_trees_split_and_merged_read_as_sled_reads() {
    for (segment, seed) in [(4096usize, 0x9e37_79b9u64), (512 * 1024, 0x85eb_ca6b)] {
        eprintln!("deep trees: segment {segment}, seed {seed}");
        let dir = tempfile::tempdir().unwrap();
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ops = Vec::new();
        let mut written = Vec::new();
        for _ in 0..20_000 {
            let r = next();
            let key = format!("key{:08}", r % 1_000_000).into_bytes();
            written.push(((r % 2) as usize, key.clone()));
            ops.push(Op::Insert((r % 2) as usize, key, (r >> 40) as usize % 48));
        }
        ops.push(Op::Flush);
        // Nine in ten of the keys written, in another random order.
        for i in (1..written.len()).rev() {
            written.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        for (t, key) in written.into_iter().take(18_000) {
            ops.push(Op::Remove(t, key));
        }
        ops.push(Op::Reopen);
        for _ in 0..3_000 {
            let r = next();
            let key = format!("key{:08}", r % 1_000_000).into_bytes();
            ops.push(Op::Insert((r % 2) as usize, key, 8));
        }
        run(dir.path(), segment, &ops);
        compare(dir.path(), segment);
    }
}

/// The writer a killed-process case runs in a child: random writes until
/// it is killed.
fn child_writer(dir: &Path, segment: usize, seed: u64) -> ! {
    let db = open_sled(dir, segment);
    let mut x = seed | 1;
    let mut n = 0usize;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = db.open_tree(TREES[(x % 3) as usize]).unwrap();
        let k = format!("k{:04}", (x >> 8) % 2000).into_bytes();
        match (x >> 20) % 10 {
            0 | 1 => {
                t.remove(&k).unwrap();
            }
            2 => {
                let mut b = sled::Batch::default();
                for i in 0..20 {
                    b.insert(
                        format!("b{:04}", ((x >> 24) + i) % 3000).into_bytes(),
                        value(n, 40),
                    );
                }
                t.apply_batch(b).unwrap();
            }
            3 if x.is_multiple_of(7) => {
                db.flush().unwrap();
            }
            _ => {
                t.insert(k, value(n, ((x >> 32) % 3000) as usize)).unwrap();
            }
        }
        n += 1;
    }
}

/// Processes killed mid-write (SIGKILL at a random moment): the reader
/// still reads exactly what sled recovers.
#[test]
fn the_reader_reads_what_sled_recovers_after_a_kill() {
    if let (Ok(dir), Ok(seed)) = (
        std::env::var("SLED_READER_CHILD_DIR"),
        std::env::var("SLED_READER_CHILD_SEED"),
    ) {
        let segment = std::env::var("SLED_READER_CHILD_SEGMENT")
            .unwrap()
            .parse()
            .unwrap();
        child_writer(Path::new(&dir), segment, seed.parse().unwrap());
    }
    let base: u64 = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let rounds = (cases() / 4).max(4);
    for round in 0..rounds {
        let seed = base
            .wrapping_mul(6364136223846793005)
            .wrapping_add(u64::from(round));
        let segment = [1024usize, 4096, 65536][(seed % 3) as usize];
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_reader_reads_what_sled_recovers_after_a_kill",
                "--nocapture",
            ])
            .env("SLED_READER_CHILD_DIR", dir.path())
            .env("SLED_READER_CHILD_SEED", seed.to_string())
            .env("SLED_READER_CHILD_SEGMENT", segment.to_string())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + seed % 600));
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("kill case {round}: seed {seed}, segment {segment}");
        compare(dir.path(), segment);
    }
}
