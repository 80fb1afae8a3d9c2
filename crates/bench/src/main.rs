//! nodestore's benchmark (`cargo xtask bench`).
//!
//! For one scale and one SQL backend it measures, in one run:
//! - the migration end to end, validation included: rows/s and records/s
//!   per store and in total, wall time, and the peak resident memory of the
//!   migrating process (each phase runs in a process of its own);
//! - the bulk-load limit: the same rows from the same key-value database,
//!   written by the simplest fast loader (see `limit.rs`);
//! - store latency, median and 99th percentile, on kv, SQLite and
//!   PostgreSQL (the latter when a server is given).
//!
//! It prints one table and writes the same figures as JSON under the output
//! directory, with the scale, the backend and the git commit.
//!
//! `nodestore-bench [--scale S|M|L] [--backend sqlite|postgres] [--pg-url URL]
//! [--work DIR] [--out DIR] [--sled-cache-mib N] [--sqlite-cache-mib N]
//! [--repeat N] [--no-latency] [--no-online] [online]`; the
//! two cache flags override the migration's defaults, for experiments.
//! `--repeat N` runs the migration and the honest limit N times each, in
//! turn, and reports the median of each (docs/bench.md).
//! `online` runs the online migration under load alone, on the data set
//! an earlier whole run generated (for working on it). With `RUST_LOG`
//! set, the library's logs go to standard error.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

mod chart;
mod latency;
mod limit;
mod online;
mod report;

use report::{Phases, f, report, report_online};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nodestore::generate::{Scale, generate};
use nodestore::{OpenReport, Stores};
use serde_json::{Value, json};
use sqldb::migrate::Migrator;
use sqldb::{Db, PostgresDb, PostgresOptions, SqliteDb, SqliteOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    phase: String,
    scale: Scale,
    backend: String,
    pg_url: Option<String>,
    work: PathBuf,
    out: PathBuf,
    target: Option<String>,
    kv: Option<PathBuf>,
    sled_cache_mib: Option<u64>,
    sqlite_cache_mib: Option<u32>,
    /// Leave the latency measurement out (`--no-latency`): the migration,
    /// limit and memory figures of a large scale in less time.
    no_latency: bool,
    /// Leave the online migration under load out (`--no-online`).
    no_online: bool,
    /// Runs of the migration and of the honest limit, taken in turn
    /// (`--repeat N`, at least 1): on a shared machine one run of each can
    /// be off by a fifth, so the report takes the median of each.
    repeat: usize,
}

fn parse() -> Result<Args, BoxError> {
    let mut a = Args {
        phase: "run".into(),
        scale: Scale::S,
        backend: "sqlite".into(),
        pg_url: std::env::var("NODESTORE_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        work: PathBuf::from("target/bench/work"),
        out: PathBuf::from("target/bench"),
        target: None,
        kv: None,
        sled_cache_mib: None,
        no_latency: false,
        no_online: false,
        sqlite_cache_mib: None,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--scale" => a.scale = value()?.parse()?,
            "--backend" => a.backend = value()?,
            "--pg-url" => a.pg_url = Some(value()?),
            "--work" => a.work = value()?.into(),
            "--out" => a.out = value()?.into(),
            "--target" => a.target = Some(value()?),
            "--kv" => a.kv = Some(value()?.into()),
            "--sled-cache-mib" => a.sled_cache_mib = Some(value()?.parse()?),
            "--sqlite-cache-mib" => a.sqlite_cache_mib = Some(value()?.parse()?),
            "--no-latency" => a.no_latency = true,
            "--no-online" => a.no_online = true,
            "--repeat" => {
                a.repeat = value()?.parse()?;
                if a.repeat == 0 {
                    return Err("--repeat: at least 1".into());
                }
            }
            "migrate" | "limit" | "honest" | "sled" | "reader" | "online" | "run" => {
                a.phase = arg.clone()
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if !["sqlite", "postgres"].contains(&a.backend.as_str()) {
        return Err(format!("--backend {}: sqlite or postgres", a.backend).into());
    }
    Ok(a)
}

/// The `nodestore` command's allocator, so the migration is measured as an
/// operator runs it (docs/design.md §5.7).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The library's logs, on standard error, when RUST_LOG asks for them.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let result = parse().and_then(|args| {
        // As the `nodestore` command runs: the phase on the one worker
        // thread, beside its connection's task (docs/design.md §5.7). The
        // online phase is a node under load, which keeps a worker per core.
        let workers = match args.phase.as_str() {
            "online" => std::thread::available_parallelism().map_or(2, |n| n.get()),
            _ => 1,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?;
        let phase = rt.spawn(async move {
            match args.phase.as_str() {
                "migrate" => phase_migrate(&args).await,
                "limit" => phase_limit(&args, limit::Loader::Simplest).await,
                "honest" => phase_limit(&args, limit::Loader::Honest).await,
                "sled" => phase_sled(&args),
                "reader" => phase_reader(&args),
                "online" => phase_online(&args).await,
                _ => run(&args).await,
            }
        });
        rt.block_on(phase)?
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The peak resident set of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn open(target: &str) -> Result<Db, BoxError> {
    Ok(match target.strip_prefix("sqlite:") {
        Some(path) => SqliteDb::open(path, SqliteOptions::default()).await?.into(),
        None => PostgresDb::connect(target, PostgresOptions::default())
            .await?
            .into(),
    })
}

/// The scale's name, as `--scale` takes it.
fn scale_name(scale: Scale) -> &'static str {
    match scale {
        Scale::S => "S",
        Scale::M => "M",
        Scale::L => "L",
        Scale::XL => "XL",
    }
}

/// The migration, in its own process: prints one JSON line.
async fn phase_migrate(args: &Args) -> Result<(), BoxError> {
    let kv = args.kv.as_ref().ok_or("--kv")?;
    let db = open(args.target.as_deref().ok_or("--target")?).await?;
    let marks = std::sync::Mutex::new(Vec::<(String, u64, f64)>::new());
    let started = Instant::now();
    struct Timer<'a>(&'a std::sync::Mutex<Vec<(String, u64, f64)>>, Instant);
    impl migrator::Progress for Timer<'_> {
        fn progress(&self, e: migrator::ProgressEvent) -> Result<(), sqldb::BoxError> {
            if let Ok(mut m) = self.0.lock() {
                let t = self.1.elapsed().as_secs_f64();
                match m.last_mut() {
                    Some(last) if last.0 == e.store => *last = (e.store.into(), e.done, t),
                    _ => m.push((e.store.into(), e.done, t)),
                }
            }
            Ok(())
        }

        /// A store's proof follows its last chunk: its line ends here, so
        /// the proof is counted in it, not in the next store's.
        fn store_done(&self, _: &'static str) {
            if let Ok(mut m) = self.0.lock()
                && let Some(last) = m.last_mut()
            {
                last.2 = self.1.elapsed().as_secs_f64();
            }
        }
    }
    let timer = Timer(&marks, started);
    // A node migrating keeps sled's cache small (see KvOptions); force: the
    // benchmark reuses one data set for every run.
    let mut opts = migrator::Options {
        force: true,
        ..migrator::Options::default()
    };
    // To compare chunk sizes by hand; the bench's figures use the default.
    if let Some(n) = std::env::var("NODESTORE_BENCH_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        opts.chunk_size = n;
    }
    let outcome = migrator::migrate(kv, &db, &opts, Some(&timer)).await?;
    let seconds = started.elapsed().as_secs_f64();
    if outcome.kind != migrator::OutcomeKind::Migrated {
        return Err("nothing migrated".into());
    }
    let report = outcome.report;
    let marks = marks.into_inner().unwrap_or_default();
    let mut stores = Vec::new();
    let mut prev = 0.0;
    for (store, records, t) in marks {
        stores.push(json!({ "store": store, "records": records, "seconds": t - prev }));
        prev = t;
    }
    println!(
        "{}",
        json!({
            "seconds": seconds,
            "step_seconds": report.duration.as_secs_f64(),
            "stores": stores,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// sled alone: opens the data set with the cache the migration used to
/// give it and reads every record of every tree once, in key order, in its
/// own process; prints one JSON line. The figure the reader is compared
/// with (docs/bench.md).
fn phase_sled(args: &Args) -> Result<(), BoxError> {
    let kv = args.kv.as_ref().ok_or("--kv")?;
    // A copy: sled writes to what it opens.
    let copy = kv.with_extension("sled-phase");
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(kv, &copy)?;
    let started = Instant::now();
    let db = sled::Config::new()
        .path(&copy)
        .cache_capacity(migrator::Options::default().kv.cache_capacity)
        .open()?;
    let open_seconds = started.elapsed().as_secs_f64();
    let open_rss = peak_rss_mib();
    let mut records = 0u64;
    for name in db.tree_names() {
        for item in db.open_tree(&name)?.iter() {
            item?;
            records += 1;
        }
    }
    let read_seconds = started.elapsed().as_secs_f64() - open_seconds;
    let peak = peak_rss_mib();
    drop(db);
    let _ = std::fs::remove_dir_all(&copy);
    println!(
        "{}",
        json!({
            "open_seconds": open_seconds,
            "open_peak_rss_mib": open_rss,
            "read_seconds": read_seconds,
            "records": records,
            "records_per_s": records as f64 / read_seconds.max(1e-9),
            "peak_rss_mib": peak,
        })
    );
    Ok(())
}

/// nodestore's reader of sled's files alone (`sled-reader`): opens the data
/// set and reads every record of every tree once, in its own process;
/// prints one JSON line with its page table's size.
fn phase_reader(args: &Args) -> Result<(), BoxError> {
    let kv = args.kv.as_ref().ok_or("--kv")?;
    let started = Instant::now();
    let db = sled_reader::Db::open(kv)?;
    let open_seconds = started.elapsed().as_secs_f64();
    let open_rss = peak_rss_mib();
    let mut records = 0u64;
    let names: Vec<Vec<u8>> = db.tree_names().map(<[u8]>::to_vec).collect();
    for name in names {
        if let Some(tree) = db.tree(&name) {
            for item in tree.iter() {
                item?;
                records += 1;
            }
        }
    }
    let read_seconds = started.elapsed().as_secs_f64() - open_seconds;
    println!(
        "{}",
        json!({
            "open_seconds": open_seconds,
            "open_peak_rss_mib": open_rss,
            "read_seconds": read_seconds,
            "records": records,
            "records_per_s": records as f64 / read_seconds.max(1e-9),
            "peak_rss_mib": peak_rss_mib(),
            "pages": db.report().pages,
            "page_table_mib": db.report().page_table_bytes as f64 / (1 << 20) as f64,
            "log_messages": db.report().messages,
        })
    );
    Ok(())
}

/// The bulk-load limit, in its own process: prints one JSON line.
async fn phase_limit(args: &Args, loader: limit::Loader) -> Result<(), BoxError> {
    let kv = args.kv.as_ref().ok_or("--kv")?;
    let db = open(args.target.as_deref().ok_or("--target")?).await?;
    // The schema before the key-value step, as the migration finds it.
    let before: Vec<_> = migrator::schema::STEPS
        .iter()
        .copied()
        .filter(|s| s.version < sqldb::schema::KV_TO_SQL_VERSION)
        .collect();
    Migrator::with_steps(&before).run(&db).await?;
    let started = Instant::now();
    let (rows, read_seconds) = limit::load(kv, &db, loader).await?;
    println!(
        "{}",
        json!({ "seconds": started.elapsed().as_secs_f64(), "read_seconds": read_seconds, "rows": rows, "peak_rss_mib": peak_rss_mib() })
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// A fresh target database for a phase.
async fn fresh_target(args: &Args, backend: &str, name: &str) -> Result<String, BoxError> {
    match backend {
        "sqlite" => {
            let path = args.work.join(format!("{name}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            Ok(format!("sqlite:{}", path.display()))
        }
        _ => {
            let admin = args
                .pg_url
                .as_ref()
                .ok_or("postgres needs --pg-url or NODESTORE_TEST_POSTGRES_URL")?;
            let db = PostgresDb::connect(admin, PostgresOptions { pool_size: 1 }).await?;
            let dbname = format!("nodestore_bench_{name}");
            let admin_db: Db = db.into();
            // The name is this program's constant, never data.
            for sql in [
                format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"),
                format!("CREATE DATABASE {dbname}"),
            ] {
                let conn = admin_db
                    .as_postgres()
                    .ok_or("not a PostgreSQL database")?
                    .dedicated()
                    .await?;
                conn.client().batch_execute(&sql).await?;
            }
            Ok(with_dbname(admin, &dbname))
        }
    }
}

fn with_dbname(url: &str, dbname: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgresql", url));
    let (before, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before.split_once('/').map_or(before, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}://{authority}/{dbname}?{q}"),
        None => format!("{scheme}://{authority}/{dbname}"),
    }
}

fn sub(args: &Args, phase: &str, kv: &Path, target: &str) -> Result<Value, BoxError> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg(phase)
        .args(["--kv", &kv.display().to_string(), "--target", target])
        .args(["--scale", scale_name(args.scale)])
        .args(["--backend", &args.backend])
        .args(
            args.sled_cache_mib
                .map(|m| ["--sled-cache-mib".to_owned(), m.to_string()])
                .into_iter()
                .flatten(),
        )
        .args(
            args.sqlite_cache_mib
                .map(|m| ["--sqlite-cache-mib".to_owned(), m.to_string()])
                .into_iter()
                .flatten(),
        )
        .output()?;
    if !out.status.success() {
        return Err(format!("{phase} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

async fn run(args: &Args) -> Result<(), BoxError> {
    let scale = scale_name(args.scale);
    let shape = args.scale.shape();
    std::fs::create_dir_all(&args.work)?;
    let pristine = args.work.join(format!("kv-{scale}"));
    // Kept between runs; made again when the shape it was made for changed.
    let made_for = format!("{shape:?} seed 2026\n");
    if std::fs::read_to_string(pristine.join("complete"))
        .ok()
        .as_deref()
        != Some(made_for.as_str())
    {
        let _ = std::fs::remove_dir_all(&pristine);
        println!(
            "generating the {scale} data set ({} rows) in {}",
            shape.total_rows(),
            pristine.display()
        );
        let t = Instant::now();
        generate(&pristine, shape, 2026, &|_, _, _| {}).await?;
        std::fs::write(pristine.join("complete"), &made_for)?;
        println!("  generated in {:.1}s", t.elapsed().as_secs_f64());
    }

    println!("loading the same rows with the simplest fast loader …");
    let lim_target = fresh_target(
        args,
        &args.backend,
        &format!("limit_{}", scale.to_lowercase()),
    )
    .await?;
    let limit = sub(args, "limit", &pristine, &lim_target)?;

    let (runs, honest_target) = migrate_and_honest(args, scale, &pristine).await?;
    let mig_target = runs.mig_target.clone();
    println!("opening and reading the key-value data with sled alone …");
    let sled = sub(args, "sled", &pristine, &honest_target)?;
    println!("opening and reading the key-value data with nodestore's reader alone …");
    let reader = sub(args, "reader", &pristine, &honest_target)?;

    let latencies = if args.no_latency {
        Vec::new()
    } else {
        println!("measuring store latency …");
        latencies(args, scale, &pristine, &mig_target).await?
    };

    let online = if args.no_online {
        Value::Null
    } else {
        online_run(args, &pristine).await?
    };

    let phases = Phases {
        migration: runs.migration(),
        limit,
        honest: runs.honest(),
        sled,
        reader,
        runs: runs.seconds(),
    };
    let mut report = report(args, scale, &shape, &phases, &latencies);
    if !online.is_null() {
        report_online(&online, f(&report["migration"]["seconds"]));
        report["online"] = online;
    }
    std::fs::create_dir_all(&args.out)?;
    let file = args
        .out
        .join(format!("bench-{scale}-{}.json", args.backend));
    std::fs::write(&file, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", file.display());
    Ok(())
}

/// The migration and the honest limit, each `args.repeat` times, in turn.
struct Runs {
    migrations: Vec<Value>,
    honest: Vec<Value>,
    /// The last migration's target, which the latency phase reads.
    mig_target: String,
}

impl Runs {
    /// The migration run of median time, with the largest peak memory of
    /// all runs (memory does not vary by chance as time does).
    fn migration(&self) -> Value {
        let mut m = median_run(&self.migrations);
        let peak = self
            .migrations
            .iter()
            .map(|r| f(&r["peak_rss_mib"]))
            .fold(0.0, f64::max);
        m["peak_rss_mib"] = json!(peak);
        m
    }

    fn honest(&self) -> Value {
        median_run(&self.honest)
    }

    /// Each run's seconds, migration and honest limit, in the order run.
    fn seconds(&self) -> Vec<(f64, f64)> {
        self.migrations
            .iter()
            .zip(&self.honest)
            .map(|(m, h)| (f(&m["seconds"]), f(&h["seconds"])))
            .collect()
    }
}

/// The run whose `seconds` is the median (the lower middle of an even
/// count).
fn median_run(runs: &[Value]) -> Value {
    let mut sorted: Vec<&Value> = runs.iter().collect();
    sorted.sort_by(|a, b| f(&a["seconds"]).total_cmp(&f(&b["seconds"])));
    sorted
        .get((sorted.len().max(1) - 1) / 2)
        .map_or(Value::Null, |v| (*v).clone())
}

/// Runs the migration (each time on a fresh copy: it tombstones its
/// source) and the honest limit, one after the other, `args.repeat` times;
/// returns the runs and the honest limit's last target.
async fn migrate_and_honest(
    args: &Args,
    scale: &str,
    pristine: &Path,
) -> Result<(Runs, String), BoxError> {
    let lower = scale.to_lowercase();
    let mut runs = Runs {
        migrations: Vec::new(),
        honest: Vec::new(),
        mig_target: String::new(),
    };
    let mut honest_target = String::new();
    for i in 1..=args.repeat {
        let of = if args.repeat > 1 {
            format!(" (run {i} of {})", args.repeat)
        } else {
            String::new()
        };
        let mig_kv = kv_copy(args, pristine, &format!("kv-{scale}-migrate"))?;
        runs.mig_target = fresh_target(args, &args.backend, &format!("migrate_{lower}")).await?;
        println!("migrating into {}{of} …", args.backend);
        runs.migrations
            .push(sub(args, "migrate", &mig_kv, &runs.mig_target)?);
        honest_target = fresh_target(args, &args.backend, &format!("honest_{lower}")).await?;
        println!("loading the same rows with the honest limit (indexes after){of} …");
        runs.honest
            .push(sub(args, "honest", pristine, &honest_target)?);
    }
    Ok((runs, honest_target))
}

/// A fresh copy of the pristine data set for one use.
fn kv_copy(args: &Args, pristine: &Path, name: &str) -> Result<PathBuf, BoxError> {
    let dir = args.work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(pristine, &dir)?;
    Ok(dir)
}

/// Listing calls timed on the key-value store, which scans its log for most
/// filters (its figures are the legacy baseline, not a goal).
const KV_LIST_SAMPLES: usize = 3;

/// Latency on kv, on the migrated database of this run and, when a server
/// is at hand, on the other SQL backend (migrated from another copy).
async fn latencies(
    args: &Args,
    scale: &str,
    pristine: &Path,
    mig_target: &str,
) -> Result<Vec<(String, Value)>, BoxError> {
    let kv = tombstone::KvDb::open(
        kv_copy(args, pristine, &format!("kv-{scale}-latency"))?,
        &tombstone::KvOptions::default(),
    )?;
    let kv_stores = Stores::on_kv(&kv, OpenReport::default())?;
    let mut samples = latency::samples(&kv_stores).await?;
    let db = open(mig_target).await?;
    latency::add_listings(&Stores::on_sql(&db, OpenReport::default()), &mut samples).await?;
    let mut out = vec![(
        "kv".to_owned(),
        latency::measure(&kv_stores, &samples, KV_LIST_SAMPLES).await?,
    )];
    drop(kv_stores);
    drop(kv);

    let this = latency::measure(
        &Stores::on_sql(&db, OpenReport::default()),
        &samples,
        latency::SAMPLES,
    )
    .await?;
    let other: Option<(String, Db)> = match args.backend.as_str() {
        "sqlite" => match &args.pg_url {
            Some(_) => {
                let target = fresh_target(
                    args,
                    "postgres",
                    &format!("latency_{}", scale.to_lowercase()),
                )
                .await?;
                Some(("postgres".into(), open(&target).await?))
            }
            None => None,
        },
        _ => {
            let target =
                fresh_target(args, "sqlite", &format!("latency_{}", scale.to_lowercase())).await?;
            Some(("sqlite".into(), open(&target).await?))
        }
    };
    out.push((args.backend.clone(), this));
    if let Some((name, db)) = other {
        let source = kv_copy(args, pristine, &format!("kv-{scale}-{name}"))?;
        migrator::migrate(
            &source,
            &db,
            &migrator::Options {
                force: true,
                ..migrator::Options::default()
            },
            None,
        )
        .await?;
        out.push((
            name,
            latency::measure(
                &Stores::on_sql(&db, OpenReport::default()),
                &samples,
                latency::SAMPLES,
            )
            .await?,
        ));
    } else {
        println!("  (no PostgreSQL server given: latency on PostgreSQL left out)");
    }
    Ok(out)
}

/// The online migration under load, on a copy of `pristine`.
async fn online_run(args: &Args, pristine: &Path) -> Result<Value, BoxError> {
    let scale = scale_name(args.scale);
    println!(
        "migrating online under load ({} writes/s, {} reads/s) …",
        online::WRITES_PER_S,
        online::READS_PER_S
    );
    let kv = kv_copy(args, pristine, &format!("kv-{scale}-online"))?;
    let target = fresh_target(
        args,
        &args.backend,
        &format!("online_{}", scale.to_lowercase()),
    )
    .await?;
    let backend = match target.strip_prefix("sqlite:") {
        Some(file) => nodestore::BackendConfig::Sqlite { file: file.into() },
        None => nodestore::BackendConfig::Postgres {
            url: target.clone(),
            pool_size: 8,
        },
    };
    std::fs::create_dir_all(&args.out)?;
    let chart = args
        .out
        .join(format!("online-{scale}-{}.svg", args.backend));
    let title = format!(
        "online migration under load, {}, scale {scale}",
        args.backend
    );
    online::run(&kv, backend, &chart, &title).await
}

/// `online`: the online run alone, on the data set a full run generated,
/// compared with the offline migration of that run's report (for working on
/// the online migration; the full run is what docs/bench.md quotes).
async fn phase_online(args: &Args) -> Result<(), BoxError> {
    let scale = scale_name(args.scale);
    let pristine = args.work.join(format!("kv-{scale}"));
    if !pristine.join("complete").exists() {
        return Err(format!(
            "no {scale} data set in {}: run the whole bench once",
            args.work.display()
        )
        .into());
    }
    let online = online_run(args, &pristine).await?;
    let earlier = std::fs::read_to_string(
        args.out
            .join(format!("bench-{scale}-{}.json", args.backend)),
    )
    .ok()
    .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let offline = earlier.map_or(0.0, |r| f(&r["migration"]["seconds"]));
    report_online(&online, offline);
    Ok(())
}
