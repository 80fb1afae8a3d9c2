//! A fresh PostgreSQL database per test.

use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::LocalCluster;
use crate::{REQUIRE_ENV, SKIP_MARKER, URL_ENV};

/// Where this process's PostgreSQL server came from.
#[derive(Debug)]
enum Server {
    External(String),
    Local(LocalCluster),
    #[cfg(feature = "docker")]
    Container(String),
}

impl Server {
    fn admin_url(&self) -> String {
        match self {
            Server::External(url) => url.clone(),
            Server::Local(c) => c.url("postgres"),
            #[cfg(feature = "docker")]
            Server::Container(url) => url.clone(),
        }
    }
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

fn resolve() -> Result<Server, String> {
    if let Ok(url) = std::env::var(URL_ENV)
        && !url.is_empty()
    {
        return Ok(Server::External(url));
    }
    let local_err = match LocalCluster::start(Some(std::process::id())) {
        Ok(cluster) => return Ok(Server::Local(cluster)),
        Err(e) => e.to_string(),
    };
    #[cfg(feature = "docker")]
    {
        match docker::start() {
            Ok(url) => return Ok(Server::Container(url)),
            Err(docker_err) => {
                return Err(format!(
                    "no {URL_ENV}; local cluster: {local_err}; testcontainers: {docker_err}"
                ));
            }
        }
    }
    #[allow(
        unreachable_code,
        reason = "with the docker feature the block above always returns"
    )]
    Err(format!("no {URL_ENV}; local cluster: {local_err}"))
}

#[cfg(feature = "docker")]
mod docker {
    use std::path::Path;

    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::SyncRunner;

    pub(super) fn start() -> Result<String, String> {
        let has_engine =
            std::env::var_os("DOCKER_HOST").is_some() || Path::new("/var/run/docker.sock").exists();
        if !has_engine {
            return Err("no Docker engine (no DOCKER_HOST, no /var/run/docker.sock)".into());
        }
        let container = Postgres::default().start().map_err(|e| e.to_string())?;
        let host = container.get_host().map_err(|e| e.to_string())?;
        let port = container
            .get_host_port_ipv4(5432)
            .map_err(|e| e.to_string())?;
        // The container lives as long as this test process; testcontainers
        // removes it when its handle drops, which a process-wide server never
        // does, so the handle is leaked on purpose and a watchdog removes the
        // container once this process has exited.
        let id = container.id().to_owned();
        std::mem::forget(container);
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; docker rm -f "$2""#)
            .arg("nodestore-docker-watchdog")
            .arg(std::process::id().to_string())
            .arg(id)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        Ok(format!(
            "postgres://postgres:postgres@{host}:{port}/postgres"
        ))
    }
}

/// True when `NODESTORE_REQUIRE_POSTGRES=1`.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Reports a skipped test on stderr, bypassing the test harness's output
/// capture so the skip is visible in every run and countable by xtask.
pub fn report_skip(test: &str, reason: &str) {
    let test = test.split_once("::").map_or(test, |(_, rest)| rest);
    let _ = writeln!(std::io::stderr(), "{SKIP_MARKER} {test}: {reason}");
}

/// Replaces the database name of a connection URL.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgresql", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(a, _)| a);
    let mut out = format!("{scheme}://{authority}/{dbname}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database created for one test and dropped (with `FORCE`, ending any
/// connection still open) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

async fn admin_execute(admin_url: &str, sql: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to {admin_url}: {e}"))?;
    let task = tokio::spawn(conn);
    let result = client
        .batch_execute(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        });
    drop(client);
    let _ = task.await;
    result
}

/// Creates a fresh database for the test `test` (a path such as
/// `crate::postgres::some_test`).
///
/// Returns `None` after reporting a skip when no server is available, unless
/// `NODESTORE_REQUIRE_POSTGRES=1`, in which case it panics: a backend that
/// was not exercised is a failure, never a silent pass.
#[allow(clippy::panic)]
pub async fn fresh_database(test: &str) -> Option<TestDatabase> {
    let server = SERVER.get_or_init(resolve);
    let server = match server {
        Ok(s) => s,
        Err(reason) => {
            if required() {
                panic!("{REQUIRE_ENV}=1 but no PostgreSQL server is available: {reason}");
            }
            report_skip(test, reason);
            return None;
        }
    };
    let admin_url = server.admin_url();
    // Only digits and a fixed prefix: safe to place in the statement as an
    // identifier (CREATE DATABASE takes no parameters).
    let name = format!(
        "nodestore_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    // Separate calls: a multi-statement batch is one implicit transaction,
    // which neither statement may run in.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        if let Err(e) = admin_execute(&admin_url, &sql).await {
            panic!("cannot create test database {name}: {e}");
        }
    }
    Some(TestDatabase {
        url: with_dbname(&admin_url, &name),
        admin_url,
        name,
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a short-lived thread with its own runtime does the work.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(admin_execute(&admin_url, &drop_sql))
        });
        if let Ok(Err(e)) = handle.join() {
            let _ = writeln!(
                std::io::stderr(),
                "warning: could not drop {}: {e}",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_dbname_replaces_only_the_path() {
        assert_eq!(
            with_dbname("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_dbname("postgresql://postgres@%2Ftmp%2Fd:5433/postgres", "t1"),
            "postgresql://postgres@%2Ftmp%2Fd:5433/t1"
        );
    }
}
