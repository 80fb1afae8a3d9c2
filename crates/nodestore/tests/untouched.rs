//! Reading a key-value database changes none of its bytes
//! (docs/sled-format.md §1): `status`, `dump`, `verify`, a dry run and a
//! refused or failed `migrate`, on a clean database and on each kind of
//! damage, leave every file of the directory as it was (hashed before and
//! after), never panic (exit 101) and never hang. The damaged ones end in a
//! refusal that names the damage, or in a migration identical to the
//! undamaged data. With `--accept-damaged`, a migration keeps every record
//! sled's own recovery keeps and none the database did not hold, and leaves
//! a database sled cannot open as it was. `NODESTORE_DAMAGE_SEED` moves the
//! damage, `NODESTORE_DAMAGE_SCALE=M` runs at scale M,
//! `NODESTORE_DAMAGE_KIND` runs one kind and `NODESTORE_DAMAGE_KEEP` keeps
//! the accept-damaged test's files (sled's layout of a generated database
//! varies from run to run, so a seed alone does not reproduce a case).
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

/// The seed of the damage's places: `NODESTORE_DAMAGE_SEED`, or 0, the
/// fixed places below; any other seed moves each within its sixth of the
/// log and draws its bytes.
fn damage_seed() -> u64 {
    std::env::var("NODESTORE_DAMAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Whether to run damage kind `kind`: every kind, or only the one
/// `NODESTORE_DAMAGE_KIND` names (to look at one failing case).
fn wanted(kind: usize) -> bool {
    std::env::var("NODESTORE_DAMAGE_KIND")
        .ok()
        .and_then(|k| k.parse::<usize>().ok())
        .is_none_or(|k| k == kind)
}

/// splitmix64: the `salt`th number of a seed's stream.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut x = seed.wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// How many kinds of damage [`damage`] makes.
const KINDS: usize = 18;

/// A node's restart: sled opens the database, which writes a snapshot,
/// and closes it. Returns the snapshot file.
fn restart(dir: &Path) -> PathBuf {
    drop(sled::Config::new().path(dir).open().unwrap());
    testkit::files::wait_released(dir);
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .expect("sled wrote a snapshot")
}

/// The kinds of damage an operator meets: 4 KiB of random bytes or zeros
/// at five depths of the log, flipped bytes, a cut log, a removed or
/// damaged snapshot, a removed or damaged `conf`, a removed log.
/// Seed 0 puts each at a fixed place; another seed moves it (half a sixth
/// of the log either way, a cut anywhere from a fifth to four fifths).
fn damage(kind: usize, seed: u64, dir: &Path) -> String {
    let db = dir.join("db");
    match kind {
        12 => {
            // The generated database has no snapshot: a restart writes one.
            std::fs::remove_file(restart(dir)).unwrap();
            return "restarted, then the snapshot removed".into();
        }
        14 => {
            std::fs::remove_file(dir.join("conf")).unwrap();
            return "conf removed".into();
        }
        15 => {
            // Two bytes of its text changed: sled refuses a conf it cannot
            // parse (it only warns about a wrong checksum).
            let conf = dir.join("conf");
            let mut bytes = std::fs::read(&conf).unwrap();
            let text = bytes.len() - 4;
            for salt in [4, 5] {
                let at = if seed == 0 {
                    (salt as usize * 7) % text
                } else {
                    (mix(seed, salt) % text as u64) as usize
                };
                bytes[at] = if bytes[at] == b'#' { b'%' } else { b'#' };
            }
            std::fs::write(&conf, bytes).unwrap();
            return "two bytes of conf changed".into();
        }
        16 => {
            std::fs::remove_file(&db).unwrap();
            return "the log (db) removed".into();
        }
        17 => {
            // sled refuses a snapshot whose checksum fails.
            let snap = restart(dir);
            let mut bytes = std::fs::read(&snap).unwrap();
            let at = if seed == 0 {
                bytes.len() / 2
            } else {
                (mix(seed, 6) % bytes.len() as u64) as usize
            };
            let end = (at + 8).min(bytes.len());
            for (i, b) in bytes[at..end].iter_mut().enumerate() {
                *b ^= 1 + (mix(seed, 7 + i as u64) % 255) as u8;
            }
            std::fs::write(&snap, bytes).unwrap();
            return format!("restarted, then bytes {at}..{end} of its snapshot changed");
        }
        _ => {}
    }
    let mut bytes = std::fs::read(&db).unwrap();
    let len = bytes.len();
    // A number in [-0.5, 0.5), 0 for seed 0.
    let jitter = |salt: u64| {
        if seed == 0 {
            0.0
        } else {
            (mix(seed, salt) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    };
    let at = |sixths: f64| ((len as f64 * sixths / 6.0) as usize).min(len.saturating_sub(1));
    let what = match kind {
        0..=4 => {
            let at = at(kind as f64 + 1.0 + jitter(1));
            let salt = if seed == 0 { kind as u64 } else { mix(seed, 2) };
            for (i, b) in bytes.iter_mut().skip(at).take(4096).enumerate() {
                *b = if seed == 0 {
                    (i as u8).wrapping_mul(167).wrapping_add(salt as u8)
                } else {
                    mix(salt, i as u64) as u8
                };
            }
            format!("4 KiB of random bytes at byte {at} of {len}")
        }
        5..=9 => {
            let at = at((kind - 4) as f64 + jitter(1));
            for b in bytes.iter_mut().skip(at).take(4096) {
                *b = 0;
            }
            format!("4 KiB of zeros at byte {at} of {len}")
        }
        10 => {
            for i in 0..16 {
                let at = at(6.0 * (i as f64 + 1.0 + jitter(i + 10)) / 17.0);
                bytes[at] ^= 0x5a;
            }
            "16 flipped bytes".into()
        }
        11 => {
            let keep = at(3.0 + 3.6 * jitter(1));
            bytes.truncate(keep);
            format!("the log cut at byte {keep} of {len}")
        }
        _ => {
            let cut = if seed == 0 {
                3000
            } else {
                1 + (mix(seed, 3) % 8000) as usize
            }
            .min(len / 3);
            bytes.truncate(len - cut);
            format!("the log's last {cut} bytes cut")
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
/// target, on the clean database and on each kind of damage: no byte
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
    let seed = damage_seed();
    for kind in (0..=KINDS).filter(|k| wanted(*k)) {
        let case = work.path().join(format!("case{kind}"));
        let kv = case.join("kv");
        copy_dir(&clean, &kv);
        let what = if kind == KINDS {
            "no damage".to_owned()
        } else {
            format!("{} (damage seed {seed})", damage(kind, seed, &kv))
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

/// The environment variable that makes this test binary the child of
/// [`accepting_damage_keeps_what_sled_recovers_and_invents_nothing`]: it
/// opens the directory it names with sled, flushes and exits.
const SLED_CHILD_ENV: &str = "NODESTORE_TEST_SLED_RECOVER";

/// Lets sled recover the database at `dir` as a node would (it rewrites
/// the directory to what it recovered), in a child process, since sled may
/// panic or spin on damage. An error says why when sled failed, refused
/// the database or spun for a minute.
fn sled_recovers(dir: &Path) -> Result<(), String> {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "accepting_damage_keeps_what_sled_recovers_and_invents_nothing",
            "--nocapture",
        ])
        .env(SLED_CHILD_ENV, dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            // The line that says where, and the panic's message after it.
            let mut lines = err
                .lines()
                .skip_while(|l| !(l.contains("panicked") || l.contains("sled refused")));
            let why = match (lines.next(), lines.next()) {
                (Some(at), Some(message)) => format!("{at} {message}"),
                (Some(at), None) => at.to_owned(),
                _ => "it failed".to_owned(),
            };
            return Err(why);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("it spun for a minute".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every record of a dump, each as one line: a record's own fields, and
/// each element of a list it holds (an account's invoices and payments,
/// say) on a line of its own under the record's id, so that one damaged
/// payment does not make its whole account differ.
fn records(dump_json: &str) -> std::collections::BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(dump_json).unwrap();
    let mut out = std::collections::BTreeSet::new();
    let serde_json::Value::Object(top) = v else {
        panic!("a dump is an object: {dump_json}")
    };
    for (store, value) in top {
        match value {
            serde_json::Value::Array(items) => {
                for item in items {
                    let serde_json::Value::Object(mut fields) = item else {
                        out.insert(format!("{store} {item}"));
                        continue;
                    };
                    let lists: Vec<(String, Vec<serde_json::Value>)> = fields
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_array()?.clone())))
                        .collect();
                    for (k, _) in &lists {
                        fields.remove(k);
                    }
                    let id = fields
                        .get("id")
                        .map_or_else(|| serde_json::Value::Object(fields.clone()), Clone::clone);
                    for (k, list) in lists {
                        for x in list {
                            out.insert(format!("{store} {id} {k} {x}"));
                        }
                    }
                    out.insert(format!("{store} {}", serde_json::Value::Object(fields)));
                }
            }
            serde_json::Value::Object(_) => {
                out.insert(format!("{store} {value}"));
            }
            _ => {}
        }
    }
    out
}

/// What [`migrate_accepting_damage`] found.
struct Migrated {
    /// The records the target holds.
    records: std::collections::BTreeSet<String>,
    /// Why the source was left as it was, untombstoned (`--json`'s
    /// `sled_cannot_open`).
    left_as_it_was: Option<String>,
}

/// Migrates `kv` with `--accept-damaged` into a new SQLite database beside
/// it (`node.db`, where `status --dir` looks, for a `kv` directory) and
/// returns what the target then holds, or why it refused.
async fn migrate_accepting_damage(kv: &Path) -> Result<Migrated, String> {
    let file = if kv.file_name().is_some_and(|n| n == "kv") {
        kv.with_file_name("node.db")
    } else {
        kv.with_extension("db")
    };
    let sql = format!("sqlite:{}", file.display());
    let out = run(&[
        "migrate",
        "--kv",
        kv.to_str().unwrap(),
        "--to",
        &sql,
        "--accept-damaged",
        "--json",
    ])
    .await;
    // Exit code 3: the data is in SQL, something after it is left to do.
    if !matches!(out.code, Some(0 | 3)) {
        return Err(format!("exit {:?}: {}{}", out.code, out.stdout, out.stderr));
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let dump = run(&["dump", "--from", &sql]).await;
    assert_eq!(dump.code, Some(0), "{}", dump.stderr);
    Ok(Migrated {
        records: records(&dump.stdout),
        left_as_it_was: v["sled_cannot_open"].as_str().map(str::to_owned),
    })
}

/// On each kind of damage, `migrate --accept-damaged` keeps every record
/// sled's own recovery keeps (sled recovers a copy in a child process; what
/// it left is migrated the same way) and migrates no record the database
/// did not hold. `NODESTORE_DAMAGE_SEED` moves the damage (each case prints
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_damage_keeps_what_sled_recovers_and_invents_nothing() {
    if let Some(dir) = std::env::var_os(SLED_CHILD_ENV) {
        match sled::Config::new().path(&dir).open() {
            Ok(db) => {
                db.flush().unwrap();
                drop(db);
                std::process::exit(0)
            }
            Err(e) => {
                eprintln!("sled refused the database: {e}");
                std::process::exit(3)
            }
        }
    }
    let seed = damage_seed();
    // `NODESTORE_DAMAGE_KEEP` keeps the cases' files for a look.
    let work = tempfile::Builder::new()
        .disable_cleanup(std::env::var_os("NODESTORE_DAMAGE_KEEP").is_some())
        .tempdir()
        .unwrap();
    eprintln!("cases in {}", work.path().display());
    let clean = work.path().join("clean");
    generate(&clean).await;
    let clean_copy = work.path().join("clean-copy");
    copy_dir(&clean, &clean_copy);
    let held = migrate_accepting_damage(&clean_copy).await.unwrap().records;
    let (mut compared, mut refused) = (0, 0);
    for kind in (0..KINDS).filter(|k| wanted(*k)) {
        let case = work.path().join(format!("case{kind}"));
        let (mine, theirs) = (case.join("kv"), case.join("theirs"));
        copy_dir(&clean, &mine);
        let what = format!("{} (damage seed {seed})", damage(kind, seed, &mine));
        copy_dir(&mine, &theirs);
        let before = hashes(&mine);
        let (mut left_as_it_was, mut migrated) = (None, false);
        let kept = match migrate_accepting_damage(&mine).await {
            Ok(m) => {
                left_as_it_was = m.left_as_it_was;
                migrated = true;
                m.records
            }
            Err(why) => {
                // Only damage that took the database's own metadata (which
                // database it is, its statistics) refuses a migration that
                // accepts damage; any other record is skipped and counted.
                assert!(
                    why.contains("holds no nodestore metadata"),
                    "{what}: refused even with --accept-damaged: {why}"
                );
                refused += 1;
                eprintln!("{what}: refused even with --accept-damaged: {why}");
                Default::default()
            }
        };
        let invented: Vec<_> = kept.difference(&held).take(3).collect();
        assert!(
            invented.is_empty(),
            "{what}: migrated {} records the database did not hold, the first: {invented:?}",
            kept.difference(&held).count()
        );
        if let Err(why) = sled_recovers(&theirs) {
            eprintln!(
                "{what}: kept {} records; sled could not open it: {why}",
                kept.len()
            );
            if why.contains("tried to serialize Uninitialized") || why.contains("sled refused") {
                // The migration knew, and left the database as it was
                // rather than have sled write to it and panic or refuse.
                assert_eq!(
                    hashes(&mine),
                    before,
                    "{what}: the migration wrote to a database sled cannot open"
                );
                if !migrated {
                    continue;
                }
                // And a node configured with both opens on SQL.
                let status = run(&["status", "--dir", case.to_str().unwrap(), "--json"]).await;
                assert_eq!(status.code, Some(0), "{what}: status: {}", status.stderr);
                let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
                let would = v["open_would"].as_str().unwrap_or_default();
                assert!(
                    !would.is_empty() && !would.starts_with("refuse"),
                    "{what}: a node would not open: {}",
                    status.stdout
                );
            }
            continue;
        }
        // sled opens it, so a node could run on it: unless sled's view
        // lost the metadata a node checks, it must be tombstoned.
        if let Some(why) = &left_as_it_was {
            assert!(
                why.contains("holds no nodestore metadata"),
                "{what}: the migration left untombstoned a database sled opens, saying: {why}"
            );
        }
        let sleds = match migrate_accepting_damage(&theirs).await {
            Ok(r) => r.records,
            Err(why) => {
                eprintln!("{what}: what sled recovered does not migrate: {why}");
                continue;
            }
        };
        // What sled kept of the database's records (an older version of
        // a record it kept instead of a lost newer one is not one).
        let lost: Vec<_> = sleds
            .intersection(&held)
            .filter(|r| !kept.contains(*r))
            .collect();
        assert!(
            lost.is_empty(),
            "{what}: sled's recovery kept {} records the migration did not, the first: {:?}",
            lost.len(),
            &lost[..lost.len().min(3)]
        );
        eprintln!(
            "{what}: kept {} of {} records, sled's recovery {}",
            kept.len(),
            held.len(),
            sleds.intersection(&held).count()
        );
        compared += 1;
    }
    eprintln!("compared {compared} of {KINDS} kinds with sled's recovery; {refused} refused");
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
    testkit::files::wait_released(&kv);
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
