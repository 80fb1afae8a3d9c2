//! `cargo xtask pg`: a local PostgreSQL for development, and the server
//! `test` and `bench` use (the development cluster while it runs, else a
//! throwaway cluster of their own).

use std::path::PathBuf;

use testkit::cluster::LocalCluster;

use crate::{Result, USAGE, project_root};

/// Where the tests' PostgreSQL comes from for this run.
pub(crate) enum PgSource {
    Env,
    Dev(String),
    Started(LocalCluster),
    None(String),
}

pub(crate) fn provide_postgres() -> PgSource {
    if std::env::var(testkit::URL_ENV).is_ok_and(|v| !v.is_empty()) {
        return PgSource::Env;
    }
    if let Some(url) = dev_cluster_url() {
        return PgSource::Dev(url);
    }
    // One cluster for the whole run; its watchdog stops it if xtask dies.
    match LocalCluster::start(Some(std::process::id())) {
        Ok(c) => PgSource::Started(c),
        Err(e) => PgSource::None(e.to_string()),
    }
}

fn dev_state_file() -> PathBuf {
    project_root().join("target/nodestore-pg/cluster")
}

fn dev_cluster() -> Option<LocalCluster> {
    let state = std::fs::read_to_string(dev_state_file()).ok()?;
    let mut lines = state.lines();
    let dir = PathBuf::from(lines.next()?);
    let port: u16 = lines.next()?.parse().ok()?;
    let socket = dir.join(format!(".s.PGSQL.{port}"));
    // A killed server leaves its socket file behind: only a socket that
    // accepts a connection means the cluster is alive.
    if std::os::unix::net::UnixStream::connect(&socket).is_err() {
        return None;
    }
    LocalCluster::attach(dir, port).ok()
}

fn dev_cluster_url() -> Option<String> {
    dev_cluster().map(|c| c.url("postgres"))
}

pub(crate) fn pg(cmd: Option<&str>) -> Result<()> {
    match cmd {
        Some("start") => {
            if let Some(url) = dev_cluster_url() {
                println!("{url}");
                return Ok(());
            }
            let cluster = LocalCluster::start(None).map_err(|e| e.to_string())?;
            let state = dev_state_file();
            if let Some(parent) = state.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(
                &state,
                format!("{}\n{}\n", cluster.dir().display(), cluster.port()),
            )
            .map_err(|e| e.to_string())?;
            eprintln!(
                "started PostgreSQL in {}; `cargo xtask test` uses it until `cargo xtask pg stop`",
                cluster.dir().display()
            );
            println!("{}", cluster.url("postgres"));
            Ok(())
        }
        Some("stop") => {
            let Some(cluster) = dev_cluster() else {
                println!("no development cluster is running");
                return Ok(());
            };
            cluster.stop().map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(dev_state_file());
            println!("stopped");
            Ok(())
        }
        Some("url") => {
            let url = dev_cluster_url()
                .ok_or("no development cluster is running (cargo xtask pg start)")?;
            println!("{url}");
            Ok(())
        }
        _ => Err(USAGE.to_owned()),
    }
}
