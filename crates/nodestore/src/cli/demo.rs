//! `nodestore demo`: a realistic key-value node database, migrated into
//! SQLite (or PostgreSQL) with progress, verified, and its status shown.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use nodestore::generate::{Scale, generate};
use nodestore::verify::verify;
use nodestore::{Config, Error, Location};

use super::progress::Bars;

/// The file that marks a directory as the demo's own (so a rerun may
/// remove it, and nothing else is ever removed).
const DEMO_MARKER: &str = ".nodestore-demo";

pub(crate) async fn run(
    dir: &Path,
    postgres: Option<String>,
    scale: Scale,
) -> Result<ExitCode, Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    if dir.exists() {
        if !dir.join(DEMO_MARKER).exists() {
            return Err(Error::Config(format!(
                "{} exists and is not a demo directory; choose another --dir",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    tombstone::create_private_dir(dir).map_err(io(dir))?;
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut marker = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(DEMO_MARKER))
            .map_err(io(dir))?;
        marker
            .write_all(b"made by nodestore demo; removed by the next run\n")
            .map_err(io(dir))?;
    }
    let kv = dir.join("kv");
    let shape = scale.shape();
    say!(
        "1. building a key-value node database in {} ({} SQL rows' worth)",
        kv.display(),
        shape.total_rows()
    );
    let bars = Bars::new(false);
    let started = Instant::now();
    generate(&kv, shape, 2026, &|store, done, total| {
        // The generator's store names are static strings of its own.
        let name: &'static str = match store {
            "accounts" => "accounts",
            "sessions" => "sessions",
            "kv-stores" => "kv-stores",
            "privacy pairs" => "privacy pairs",
            _ => "actions",
        };
        bars.update(name, done, total)
    })
    .await?;
    drop(bars);
    say!("   built in {:.2}s", started.elapsed().as_secs_f64());

    let location = match &postgres {
        Some(url) => Location::Postgres(url.clone()),
        None => Location::Sqlite(dir.join("node.db")),
    };
    let config = Config {
        kv_dir: Some(kv.clone()),
        ..Config::new(location.backend())
    };
    say!("2. migrating it into {location}");
    let db = super::migrate::sql_db(&location, false).await?;
    let bars = Bars::new(false);
    let started = Instant::now();
    let outcome = migrator::migrate(&kv, &db, &migrator::Options::default(), Some(&bars))
        .await
        .map_err(|failure| Error::Migration {
            kv: kv.display().to_string(),
            target: db.describe(),
            failure: Box::new(failure),
            during_open: false,
        })?;
    drop(bars);
    super::migrate::print_outcome(&db.describe(), &outcome, started.elapsed().as_secs_f64());
    if !outcome.is_complete() {
        return Ok(super::migrate::outcome_code(&outcome));
    }

    say!("3. verifying every record of the (now tombstoned) key-value database against SQL");
    let report = verify(&kv, &db).await?;
    super::verify::print(&report);

    say!("4. status");
    super::status::print(&nodestore::status::status(&config).await?);
    say!("5. a node opening the key-value database now is refused:");
    match tombstone::KvDb::open(&kv, &tombstone::KvOptions::default()) {
        Err(e) => say!("   {e}"),
        Ok(_) => say!("   (unexpectedly opened)"),
    }
    Ok(super::verify::code(&report))
}
