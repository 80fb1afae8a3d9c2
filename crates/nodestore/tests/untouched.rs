//! Reading a key-value database changes none of its bytes
//! (docs/sled-format.md §1): `status`, `dump`, `verify`, a dry run and a
//! refused or failed `migrate`, on a clean database and on each kind of
//! damage, leave every file of the directory as it was (hashed before and
//! after), never panic (exit 101) and never hang. The damaged ones end in a
//! refusal that names the damage, or in a migration identical to the
//! undamaged data.
#![allow(clippy::print_stderr, reason = "a test reports what each case did")]
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::files::copy_dir;

use sha2::{Digest as _, Sha256};

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Out {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodestore"))
        .args(args)
        .env_remove("NODESTORE_BACKEND")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .unwrap_or_else(|_| panic!("nodestore {args:?} did not end within five minutes"))
        .unwrap();
    let o = Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_ne!(
        o.code,
        Some(101),
        "nodestore {args:?} panicked: {}",
        o.stderr
    );
    assert!(
        o.code.is_some(),
        "nodestore {args:?} was killed: {}",
        o.stderr
    );
    o
}

/// Every file under `dir` with the sha256 of its bytes.
fn hashes(dir: &Path) -> BTreeMap<PathBuf, String> {
    testkit::files::contents(dir)
        .into_iter()
        .map(|(p, bytes)| (p, hex::encode(Sha256::digest(&bytes))))
        .collect()
}

/// The kinds of damage an operator meets: 4 KiB of random bytes or zeros
/// at five depths of the log, flipped bytes, a cut log, a removed snapshot.
fn damage(kind: usize, dir: &Path) -> String {
    let db = dir.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let len = bytes.len();
    let depth = |d: usize| len * d / 6;
    let what = match kind {
        0..=4 => {
            let at = depth(kind + 1);
            for (i, b) in bytes.iter_mut().skip(at).take(4096).enumerate() {
                *b = (i as u8).wrapping_mul(167).wrapping_add(kind as u8);
            }
            format!("4 KiB of random bytes at {}/6 of the log", kind + 1)
        }
        5..=9 => {
            let at = depth(kind - 4);
            for b in bytes.iter_mut().skip(at).take(4096) {
                *b = 0;
            }
            format!("4 KiB of zeros at {}/6 of the log", kind - 4)
        }
        10 => {
            for i in 0..16 {
                let at = (len / 17) * (i + 1);
                bytes[at] ^= 0x5a;
            }
            "16 flipped bytes".into()
        }
        11 => {
            bytes.truncate(len / 2);
            "the log cut in half".into()
        }
        12 => {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                if e.file_name().to_string_lossy().starts_with("snap.") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
            "the snapshot removed".into()
        }
        _ => {
            bytes.truncate(len - 3000.min(len / 3));
            "the log's last 3000 bytes cut".into()
        }
    };
    std::fs::write(&db, bytes).unwrap();
    what
}

/// The scale of the damaged database: S, or M with
/// `NODESTORE_DAMAGE_SCALE=M` (a longer run).
async fn generate(kv: &Path) {
    let scale = match std::env::var("NODESTORE_DAMAGE_SCALE").as_deref() {
        Ok("M") | Ok("m") => nodestore::generate::Scale::M,
        _ => nodestore::generate::Scale::S,
    };
    nodestore::generate::generate(kv, scale.shape(), 9, &|_, _, _| {})
        .await
        .unwrap();
}

/// Every read-only command, a dry run and a migration into an unwritable
/// target, on the clean database and on fourteen kinds of damage: no byte
/// changes, no panic, no hang; a damaged database is refused with a message
/// naming the damage or migrates to the same records as the clean one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_changes_no_byte_clean_or_damaged() {
    let work = tempfile::tempdir().unwrap();
    let clean = work.path().join("clean");
    generate(&clean).await;
    let want = {
        let clean_sql = format!("sqlite:{}", work.path().join("clean.db").display());
        let copy = work.path().join("clean-copy");
        copy_dir(&clean, &copy);
        let out = run(&[
            "migrate",
            "--kv",
            copy.to_str().unwrap(),
            "--to",
            &clean_sql,
        ])
        .await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let out = run(&["dump", "--from", &clean_sql]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.stdout
    };
    for kind in 0..=14 {
        let case = work.path().join(format!("case{kind}"));
        let kv = case.join("kv");
        copy_dir(&clean, &kv);
        let what = if kind == 14 {
            "no damage".to_owned()
        } else {
            damage(kind, &kv)
        };
        let before = hashes(&kv);
        let kv_s = kv.to_str().unwrap();
        let sql = format!("sqlite:{}", case.join("node.db").display());
        let status = run(&["status", "--dir", case.to_str().unwrap(), "--json"]).await;
        let dump = run(&["dump", "--from", &format!("kv:{kv_s}")]).await;
        let verify = run(&["verify", "--kv", kv_s, "--sql", &sql]).await;
        let dry = run(&["migrate", "--kv", kv_s, "--to", &sql, "--dry-run"]).await;
        // A target that cannot be created: the migration fails after reading.
        let bad = format!("sqlite:{}", case.join("no/such/dir/x.db").display());
        let failed = run(&["migrate", "--kv", kv_s, "--to", &bad]).await;
        assert_ne!(failed.code, Some(0), "{what}: migrating into {bad}");
        assert_eq!(
            hashes(&kv),
            before,
            "{what}: a read changed the database's files"
        );
        let _ = (status, verify, dump);
        // A real migration: refused with the files unchanged, or the same
        // records as the clean database.
        let out = run(&["migrate", "--kv", kv_s, "--to", &sql]).await;
        if out.code == Some(0) {
            assert_eq!(
                dry.code,
                Some(0),
                "{what}: the dry run refused what the run accepted"
            );
            let got = run(&["dump", "--from", &sql]).await;
            assert_eq!(got.code, Some(0), "{}", got.stderr);
            assert_eq!(
                got.stdout, want,
                "{what}: migrated, but its records differ from the clean database's"
            );
        } else {
            assert_eq!(
                hashes(&kv),
                before,
                "{what}: a refused migration changed the database's files"
            );
            assert!(
                out.stderr.contains(kv_s) || out.stderr.contains("damaged"),
                "{what}: the refusal does not name the database or the damage: {}",
                out.stderr
            );
        }
        eprintln!("{what}: migrate exit {:?}", out.code);
    }
}

/// A thousand values corrupted across five trees (sled's structure intact,
/// the records undecodable): one refused migration counts every damaged
/// record per tree and names the first few; `--json` lists them all; with
/// `--accept-damaged` the rest migrates and the record keeps the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damaged_record_is_counted_in_one_run() {
    let work = tempfile::tempdir().unwrap();
    let kv = work.path().join("kv");
    let shape = nodestore::generate::Shape {
        accounts: 220,
        invoices_per_account: 1,
        payments_per_account: 1,
        sessions: 220,
        kv_entries: 50,
        privacy_pairs: 220,
        actions: 600,
    };
    nodestore::generate::generate(&kv, shape, 4, &|_, _, _| {})
        .await
        .unwrap();
    let trees = ["accounts", "session", "privacy", "actions", "actions-index"];
    {
        // Written through sled itself, as damage that kept sled's
        // structure: a value no codec reads.
        let db = sled::open(&kv).unwrap();
        for t in trees {
            let tree = db.open_tree(t).unwrap();
            let keys: Vec<_> = tree.iter().keys().take(200).map(Result::unwrap).collect();
            assert_eq!(keys.len(), 200, "tree {t}");
            for k in keys {
                tree.insert(k, vec![0xEE; 5]).unwrap();
            }
        }
        db.flush().unwrap();
    }
    let kv_s = kv.to_str().unwrap();
    let sql = format!("sqlite:{}", work.path().join("n.db").display());
    // Wait for sled's threads to let go of the files.
    let f = std::fs::File::open(kv.join("db")).unwrap();
    while f.try_lock().is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    f.unlock().unwrap();
    let before = hashes(&kv);
    let out = run(&["migrate", "--kv", kv_s, "--to", &sql]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    for t in trees {
        let line = out
            .stderr
            .lines()
            .find(|l| {
                l.trim_start().starts_with(&format!("tree {t}: "))
                    && l.ends_with("damaged or inconsistent")
            })
            .unwrap_or_else(|| panic!("no count for tree {t}: {}", out.stderr));
        let n: usize = line
            .split(": ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(n >= 200, "tree {t} counts {n}: {line}");
    }
    assert!(
        out.stderr.contains("more (`--json` lists them all)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.lines().count() < 40,
        "the refusal is one screen: {}",
        out.stderr
    );
    let json = run(&["migrate", "--kv", kv_s, "--to", &sql, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    for t in trees {
        let n = problems.iter().filter(|p| p["tree"] == t).count();
        assert!(n >= 200, "--json lists {n} problems of tree {t}");
    }
    // The dump writes what is readable and lists every record it left out.
    let dump = run(&["dump", "--from", &format!("kv:{kv_s}")]).await;
    assert_eq!(dump.code, Some(2), "{}", dump.stderr);
    let d = nodestore::dump::Dump::from_json(&dump.stdout).unwrap();
    assert!(!d.accounts.is_empty() && !d.actions.is_empty());
    let listed = dump
        .stderr
        .lines()
        .filter(|l| l.contains("does not decode"))
        .count();
    assert!(
        listed >= 800,
        "the dump lists {listed} records it left out: {}",
        dump.stderr
    );
    assert_eq!(hashes(&kv), before, "refusals changed the database's files");
    let out = run(&[
        "migrate",
        "--kv",
        kv_s,
        "--to",
        &sql,
        "--accept-damaged",
        "--json",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        v["accepted_damage"].as_array().unwrap().len() >= 1000,
        "{}",
        out.stdout
    );
}
