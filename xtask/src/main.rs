//! nodestore's project automation (`cargo xtask <command>`).
//!
//! - `ci`: formatting, clippy with `-D warnings`, then every test on every
//!   backend, ending with a crate × backend table. Fails when a test fails
//!   or when a backend a crate declares ran no test.
//! - `lint`: formatting and clippy, on the default features and then with
//!   each backend feature (`kv`, `sqlite`, `postgres`) built alone.
//! - `test [--backend core|kv|sqlite|postgres] [--crate NAME]`: tests, with
//!   the same table.
//! - `bench [--scale S|M|L|XL] [--backend sqlite|postgres] [--repeat N] [--no-latency] [--no-online]`: the benchmark
//!   (crates/bench), release build, on both SQL backends unless one is named;
//!   figures under `target/bench/`. `ci` runs it at scale S in a debug build
//!   as a smoke test (it must complete; no timing is asserted).
//! - `man`: the command's man pages (clap_mangen), into `target/man/`.
//! - `pg start|stop|url`: a local PostgreSQL for development; while it runs,
//!   `test` and `bench` use it instead of starting a cluster of their own.
//!
//! Test names carry their backend as a path segment (`sqlite::`,
//! `postgres::`, `kv::`); tests without one count as `core`. A crate lists
//! the backends it must exercise in `[package.metadata.nodestore] backends`.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask is a command-line tool"
)]

mod bench;
mod lint;
mod pg;
mod test;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use bench::{BenchArgs, bench};
use lint::lint;
use pg::pg;
use test::{TestArgs, test};

const BACKENDS: [&str; 4] = ["core", "kv", "sqlite", "postgres"];
const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci                                   fmt check, clippy -D warnings, every test on every backend
  lint                                 fmt check, clippy, clippy per backend feature alone
  test [--backend B] [--crate NAME]    run tests (B: core, kv, sqlite, postgres)
  bench [--scale S..XL] [--backend B] [--repeat N]
                                       migration vs bulk-load limit, memory, latency (B: sqlite, postgres;
                                       N: runs of the migration and the honest limit, medians reported)
  man                                  the nodestore man pages, into target/man/
  pg start|stop|url                    a local PostgreSQL for development";

type Result<T, E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let root = project_root();
    std::env::set_current_dir(&root).map_err(|e| e.to_string())?;
    match args.first().map(String::as_str) {
        Some("ci") => {
            lint()?;
            test(&TestArgs::default())?;
            bench(&BenchArgs {
                scale: "S".into(),
                backends: vec!["sqlite".into(), "postgres".into()],
                release: false,
                no_latency: false,
                no_online: false,
                repeat: None,
            })
        }
        Some("bench") => bench(&BenchArgs::parse(&args[1..])?),
        Some("lint") => lint(),
        Some("test") => test(&TestArgs::parse(&args[1..])?),
        Some("pg") => pg(args.get(1).map(String::as_str)),
        Some("man") => {
            let mut cmd = cargo();
            cmd.args(["run", "-q", "-p", "nodestore", "--", "man", "target/man"]);
            step("nodestore man target/man", cmd)?;
            println!("man pages in target/man/ (read one with `man target/man/nodestore.1`)");
            Ok(())
        }
        _ => Err(USAGE.to_owned()),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn step(title: &str, mut cmd: Command) -> Result<()> {
    println!("==> {title}");
    let status = cmd.status().map_err(|e| format!("{title}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{title} failed ({status})"))
    }
}
