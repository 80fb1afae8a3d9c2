//! `cargo xtask bench`: the benchmark (crates/bench), release build, on
//! both SQL backends unless one is named; figures under `target/bench/`.

use std::path::Path;
use std::process::Command;

use crate::pg::{PgSource, provide_postgres};
use crate::{Result, USAGE, cargo, step};

pub(crate) struct BenchArgs {
    pub(crate) scale: String,
    pub(crate) backends: Vec<String>,
    pub(crate) release: bool,
    /// Pass `--no-latency` to the benchmark.
    pub(crate) no_latency: bool,
    /// Pass `--no-online` to the benchmark.
    pub(crate) no_online: bool,
    /// Pass `--repeat N` to the benchmark: the migration and the honest
    /// limit run N times each, and the medians are reported.
    pub(crate) repeat: Option<String>,
}

impl BenchArgs {
    pub(crate) fn parse(args: &[String]) -> Result<BenchArgs> {
        let mut out = BenchArgs {
            scale: "L".into(),
            backends: vec!["sqlite".into(), "postgres".into()],
            release: true,
            no_latency: false,
            no_online: false,
            repeat: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--scale" => {
                    let s = it.next().ok_or("--scale needs a value")?.to_uppercase();
                    if !["S", "M", "L", "XL"].contains(&s.as_str()) {
                        return Err(format!("unknown scale {s}; one of S, M, L, XL"));
                    }
                    out.scale = s;
                }
                "--backend" => {
                    let b = it.next().ok_or("--backend needs a value")?;
                    if !["sqlite", "postgres"].contains(&b.as_str()) {
                        return Err(format!("unknown backend {b}; sqlite or postgres"));
                    }
                    out.backends = vec![b.clone()];
                }
                "--no-latency" => out.no_latency = true,
                "--no-online" => out.no_online = true,
                "--repeat" => {
                    let n = it.next().ok_or("--repeat needs a value")?;
                    if !n.parse::<usize>().is_ok_and(|n| n > 0) {
                        return Err(format!("--repeat {n}: a number of runs, at least 1"));
                    }
                    out.repeat = Some(n.clone());
                }
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        Ok(out)
    }
}

/// Runs the benchmark binary once per backend. The measured (release) run
/// uses the PostgreSQL server `NODESTORE_TEST_POSTGRES_URL` names, or
/// starts one of its own with PostgreSQL's own durability settings
/// (`fsync` on, as an operator runs it; the test clusters trade that for
/// speed, and a server that never syncs lets its dirty pages pile up until
/// they stall every other file's fsync on the disk). The smoke run of
/// `ci` takes a server as the tests do. A missing server is an error: the
/// bench measures PostgreSQL in every run.
pub(crate) fn bench(args: &BenchArgs) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "--package", "bench", "--bin", "nodestore-bench"]);
    if args.release {
        build.arg("--release");
    }
    step("building the benchmark", build)?;
    let exe = Path::new("target")
        .join(if args.release { "release" } else { "debug" })
        .join("nodestore-bench");
    let pg = if !args.release || std::env::var(testkit::URL_ENV).is_ok_and(|v| !v.is_empty()) {
        provide_postgres()
    } else {
        match testkit::cluster::LocalCluster::start_production(Some(std::process::id())) {
            Ok(c) => PgSource::Started(c),
            Err(e) => PgSource::None(e.to_string()),
        }
    };
    let url = match &pg {
        PgSource::Env => std::env::var(testkit::URL_ENV).unwrap_or_default(),
        PgSource::Dev(url) => url.clone(),
        PgSource::Started(c) => c.url("postgres"),
        PgSource::None(why) => return Err(format!("the benchmark needs PostgreSQL: {why}")),
    };
    for backend in &args.backends {
        let mut cmd = Command::new(&exe);
        cmd.args(["--scale", &args.scale, "--backend", backend])
            .env(testkit::URL_ENV, &url);
        if args.no_latency {
            cmd.arg("--no-latency");
        }
        if args.no_online {
            cmd.arg("--no-online");
        }
        if let Some(n) = &args.repeat {
            cmd.args(["--repeat", n]);
        }
        step(&format!("bench, scale {}, {backend}", args.scale), cmd)?;
    }
    if let PgSource::Started(c) = pg {
        c.stop().map_err(|e| e.to_string())?;
    }
    Ok(())
}
