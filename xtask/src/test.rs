//! `cargo xtask test`: every test binary of the workspace, run one by one,
//! each test counted under its backend (its `sqlite::`, `postgres::` or
//! `kv::` path segment; `core` otherwise), ending with the crate × backend
//! table. Fails when a test fails or a backend a crate declares ran none.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::pg::{PgSource, provide_postgres};
use crate::{BACKENDS, Result, USAGE, cargo};

#[derive(Debug, Default)]
pub(crate) struct TestArgs {
    backend: Option<String>,
    krate: Option<String>,
}

impl TestArgs {
    pub(crate) fn parse(args: &[String]) -> Result<TestArgs> {
        let mut out = TestArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--backend" => {
                    let b = it.next().ok_or("--backend needs a value")?;
                    if !BACKENDS.contains(&b.as_str()) {
                        return Err(format!("unknown backend {b}; one of {BACKENDS:?}"));
                    }
                    out.backend = Some(b.clone());
                }
                "--crate" => out.krate = Some(it.next().ok_or("--crate needs a value")?.clone()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        Ok(out)
    }

    fn includes(&self, backend: &str) -> bool {
        self.backend.as_deref().is_none_or(|b| b == backend)
    }
}

/// A workspace member and the backends it declares.
struct Package {
    name: String,
    dir: PathBuf,
    backends: Vec<String>,
}

fn packages() -> Result<BTreeMap<String, Package>> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let meta: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut map = BTreeMap::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let id = p["id"].as_str().unwrap_or_default().to_owned();
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap_or_default());
        let backends = p["metadata"]["nodestore"]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str().map(str::to_owned))
            .collect();
        map.insert(
            id,
            Package {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
                backends,
            },
        );
    }
    Ok(map)
}

/// A compiled test binary.
struct TestBinary {
    package: String,
    dir: PathBuf,
    target: String,
    path: PathBuf,
}

fn build_tests(args: &TestArgs, pkgs: &BTreeMap<String, Package>) -> Result<Vec<TestBinary>> {
    println!("==> building tests");
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    match &args.krate {
        Some(k) => cmd.args(["--package", k]),
        None => cmd.arg("--workspace"),
    };
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err("building the tests failed".into());
    }
    let mut bins = Vec::new();
    for line in out.stdout.lines() {
        let Ok(line) = line else { continue };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let Some(pkg) = msg["package_id"].as_str().and_then(|id| pkgs.get(id)) else {
            continue;
        };
        bins.push(TestBinary {
            package: pkg.name.clone(),
            dir: pkg.dir.clone(),
            target: msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            path: PathBuf::from(exe),
        });
    }
    Ok(bins)
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// How many seeds the online migration's concurrent test runs per backend.
const ONLINE_CASES_ENV: &str = "NODESTORE_ONLINE_CASES";
const ONLINE_CASES: &str = "64";
/// How many cases the sled reader's differential and damage tests run.
const SLED_READER_CASES_ENV: &str = "SLED_READER_CASES";
const SLED_READER_CASES: &str = "64";

/// The backend a test name belongs to: its first path segment that names one.
fn backend_of(test: &str) -> &'static str {
    test.split("::")
        .find_map(|seg| BACKENDS[1..].iter().find(|b| **b == seg).copied())
        .unwrap_or("core")
}

/// Runs one test binary; returns per-backend tallies and whether it exited cleanly.
fn run_binary(
    bin: &TestBinary,
    args: &TestArgs,
    pg_url: Option<&str>,
) -> Result<(BTreeMap<&'static str, Tally>, bool)> {
    let mut cmd = Command::new(&bin.path);
    cmd.current_dir(&bin.dir)
        .env("CARGO_MANIFEST_DIR", &bin.dir)
        .args(["--test-threads", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match args.backend.as_deref() {
        Some("core") => {
            for b in &BACKENDS[1..] {
                cmd.args(["--skip", &format!("{b}::")]);
            }
        }
        Some(b) => {
            cmd.arg(format!("{b}::"));
        }
        None => {}
    }
    if let Some(url) = pg_url {
        cmd.env(testkit::URL_ENV, url);
    }
    // The online migration's concurrent random test: 64 seeds per backend
    // here, unless the caller asks for more (or names one seed).
    if std::env::var_os(ONLINE_CASES_ENV).is_none() {
        cmd.env(ONLINE_CASES_ENV, ONLINE_CASES);
    }
    // The sled reader's differential test against sled and its damage
    // test: 64 cases each here (docs/sled-format.md §7).
    if std::env::var_os(SLED_READER_CASES_ENV).is_none() {
        cmd.env(SLED_READER_CASES_ENV, SLED_READER_CASES);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.path.display()))?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let stderr = err_reader.join().unwrap_or_default();

    let skipped: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(testkit::SKIP_MARKER))
        .filter_map(|l| l.trim().split(':').next())
        .collect();
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, result)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        let t = tallies.entry(backend_of(name)).or_default();
        match result.trim() {
            "ok" if skipped.contains(&name) => t.skipped += 1,
            "ok" => t.passed += 1,
            // libtest adds the reason: `ignored, <reason>`.
            r if r.starts_with("ignored") => t.skipped += 1,
            _ => {
                t.failed += 1;
                failures.push(name.to_owned());
            }
        }
    }
    let total: usize = tallies
        .values()
        .map(|t| t.passed + t.failed + t.skipped)
        .sum();
    println!(
        "    {:<12} {:<22} {total:>4} tests{}",
        bin.package,
        bin.target,
        if failures.is_empty() {
            String::new()
        } else {
            format!(", {} FAILED", failures.len())
        }
    );
    for s in &skipped {
        println!("      skipped: {s}");
    }
    if !status.success() {
        // The failures section and anything the harness said.
        if let Some(at) = stdout.find("\nfailures:\n") {
            println!("{}", &stdout[at..]);
        } else {
            println!("{stdout}");
        }
        println!("{stderr}");
    }
    Ok((tallies, status.success()))
}

/// Runs the doc tests; tallies them per crate under the `doc` column.
fn run_doc_tests(args: &TestArgs) -> Result<(BTreeMap<String, Tally>, bool)> {
    let mut cmd = cargo();
    cmd.args(["test", "--doc"]);
    match &args.krate {
        Some(k) => cmd.args(["--package", k]),
        None => cmd.arg("--workspace"),
    };
    let out = cmd.output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    // Cargo prints "Doc-tests X" on stderr and each crate's results on
    // stdout (a block ending in "test result:", even for no tests), in the
    // same order; pair them by position.
    let crates: Vec<String> = stderr
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("Doc-tests ")
                .map(|c| c.replace('_', "-"))
        })
        .collect();
    let mut block = 0usize;
    for line in stdout.lines() {
        if line.starts_with("test result:") {
            block += 1;
            continue;
        }
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((_, result)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        let krate = crates.get(block).cloned().unwrap_or_default();
        let t = tallies.entry(krate).or_default();
        match result.trim() {
            "ok" => t.passed += 1,
            // libtest adds the reason: `ignored, <reason>`.
            r if r.starts_with("ignored") => t.skipped += 1,
            _ => t.failed += 1,
        }
    }
    if !out.status.success() {
        println!("{stdout}\n{stderr}");
    }
    Ok((tallies, out.status.success()))
}

pub(crate) fn test(args: &TestArgs) -> Result<()> {
    let pkgs = packages()?;
    let bins = build_tests(args, &pkgs)?;

    let pg = if args.includes("postgres") {
        Some(provide_postgres())
    } else {
        None
    };
    let pg_url = match &pg {
        Some(PgSource::Env) => {
            println!("==> PostgreSQL: {} from the environment", testkit::URL_ENV);
            None
        }
        Some(PgSource::Dev(url)) => {
            println!("==> PostgreSQL: the development cluster (cargo xtask pg start)");
            Some(url.clone())
        }
        Some(PgSource::Started(c)) => {
            println!(
                "==> PostgreSQL: a throwaway cluster in {} (port {})",
                c.dir().display(),
                c.port()
            );
            Some(c.url("postgres"))
        }
        Some(PgSource::None(why)) => {
            println!(
                "==> PostgreSQL: no local cluster ({why}); tests fall back to testcontainers or skip"
            );
            None
        }
        None => None,
    };

    println!("==> running tests");
    let mut table: BTreeMap<String, BTreeMap<&'static str, Tally>> = BTreeMap::new();
    let mut clean = true;
    for bin in &bins {
        let (tallies, ok) = run_binary(bin, args, pg_url.as_deref())?;
        clean &= ok;
        let row = table.entry(bin.package.clone()).or_default();
        for (b, t) in tallies {
            row.entry(b).or_default().add(t);
        }
    }
    if let Some(PgSource::Started(c)) = pg
        && let Err(e) = c.stop()
    {
        println!("warning: stopping the PostgreSQL cluster: {e}");
    }
    if args.backend.is_none() || args.backend.as_deref() == Some("core") {
        println!("==> doc tests");
        let (doc, ok) = run_doc_tests(args)?;
        clean &= ok;
        for (krate, t) in doc {
            table
                .entry(krate)
                .or_default()
                .entry("doc")
                .or_default()
                .add(t);
        }
    }

    report(args, &pkgs, &table, clean)
}

fn report(
    args: &TestArgs,
    pkgs: &BTreeMap<String, Package>,
    table: &BTreeMap<String, BTreeMap<&'static str, Tally>>,
    clean: bool,
) -> Result<()> {
    let columns = ["core", "kv", "sqlite", "postgres", "doc"];
    let mut missing = Vec::new();
    println!();
    print!("{:<16}", "crate");
    for c in columns {
        print!("{c:>18}");
    }
    println!();
    let mut total = Tally::default();
    let mut names: Vec<&Package> = pkgs.values().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    for pkg in names {
        if args.krate.as_deref().is_some_and(|k| k != pkg.name) {
            continue;
        }
        let row = table.get(&pkg.name);
        print!("{:<16}", pkg.name);
        for c in columns {
            let t = row.and_then(|r| r.get(c)).copied().unwrap_or_default();
            total.add(t);
            let run = t.passed + t.failed;
            let expected = pkg.backends.iter().any(|b| b == c) && args.includes(c);
            let mut cell = if run == 0 && t.skipped == 0 {
                "-".to_owned()
            } else {
                format!("{}/{} passed", t.passed, run)
            };
            if t.skipped > 0 {
                cell.push_str(&format!(" +{} skip", t.skipped));
            }
            if expected && run == 0 {
                cell = format!("NONE RAN ({})", t.skipped);
                missing.push(format!("{} × {c}", pkg.name));
            }
            print!("{cell:>18}");
        }
        println!();
    }
    println!();
    if !missing.is_empty() {
        println!("backends that ran no test: {}", missing.join(", "));
    }
    println!(
        "nodestore: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    if total.failed > 0 || !clean {
        return Err("tests failed".into());
    }
    if !missing.is_empty() {
        return Err("a backend that a crate declares ran no test".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_are_counted_under_their_backend() {
        assert_eq!(
            backend_of("sqlite::fresh_database_gets_every_step"),
            "sqlite"
        );
        assert_eq!(backend_of("conformance::postgres::x"), "postgres");
        assert_eq!(backend_of("kv::x"), "kv");
        assert_eq!(backend_of("schema::tests::steps_are_contiguous"), "core");
        assert_eq!(backend_of("sqlite_helpers::x"), "core");
    }
}
