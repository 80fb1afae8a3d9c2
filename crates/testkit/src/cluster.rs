//! A throwaway PostgreSQL cluster started from the local server binaries.
//!
//! `initdb` and `postgres` refuse to run as root; when this process is root
//! the cluster directory is handed to the `postgres` system user and every
//! server command runs through `runuser -u postgres --`. The server listens
//! on a Unix socket in the cluster directory and on a free port of
//! 127.0.0.1, with durability switched off (`fsync=off`): test data only.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a cluster started with [`LocalCluster::start_with_tls`] serves:
/// its certificate and key, the CA it trusts for client certificates, and
/// `pg_hba.conf` lines placed before the default ones (which trust every
/// local connection).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate chain (PEM).
    pub cert_pem: String,
    /// The server's private key (PEM).
    pub key_pem: String,
    /// The CA that signs accepted client certificates (PEM).
    pub ca_pem: String,
    /// `pg_hba.conf` lines that come first (say, `hostssl all certuser
    /// 127.0.0.1/32 cert`).
    pub hba_first: Vec<String>,
}

/// What a cluster's commits survive, and what that costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Test data only: `fsync = off`, `synchronous_commit = off`,
    /// `full_page_writes = off`; the fastest.
    Fast,
    /// A commit survives the server's crash (`synchronous_commit = on`),
    /// not the machine's (`fsync` still off): fault tests that stop the
    /// server need this.
    CrashSafe,
    /// PostgreSQL's own defaults (`fsync`, `synchronous_commit` and
    /// `full_page_writes` on), as an operator runs it: for benchmarks. With
    /// `fsync` off the server's dirty pages pile up in the page cache, and
    /// the other files' fsyncs on the same disk wait for them.
    Production,
}

/// A running cluster.
#[derive(Debug)]
pub struct LocalCluster {
    durability: Durability,
    tls: bool,
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    as_postgres_user: bool,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the one of
/// `initdb` on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin`.
pub fn find_server_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("initdb");
            if candidate.is_file() {
                let real = fs::canonicalize(&candidate).unwrap_or(candidate);
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn postgres_user_ids() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':');
    let uid = fields.nth(2)?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalCluster {
    /// Initialises and starts a cluster in a new directory under the system
    /// temporary directory.
    ///
    /// With `watch_pid`, a small watchdog process stops the cluster and
    /// removes its directory once that process has exited, however it exits.
    pub fn start(watch_pid: Option<u32>) -> io::Result<LocalCluster> {
        LocalCluster::start_with(watch_pid, false)
    }

    /// [`LocalCluster::start`]; with `durable`, a commit survives the
    /// server's crash (`synchronous_commit = on`), which fault tests that
    /// stop the server need. The default trades that for speed.
    pub fn start_with(watch_pid: Option<u32>, durable: bool) -> io::Result<LocalCluster> {
        let durability = if durable {
            Durability::CrashSafe
        } else {
            Durability::Fast
        };
        LocalCluster::start_configured(watch_pid, durability, None)
    }

    /// [`LocalCluster::start`] with PostgreSQL's own durability settings
    /// ([`Durability::Production`]), for benchmarks.
    pub fn start_production(watch_pid: Option<u32>) -> io::Result<LocalCluster> {
        LocalCluster::start_configured(watch_pid, Durability::Production, None)
    }

    /// [`LocalCluster::start`] with TLS on (`ssl = on`) for TCP connections,
    /// serving `tls`'s certificate.
    pub fn start_with_tls(watch_pid: Option<u32>, tls: &ServerTls) -> io::Result<LocalCluster> {
        LocalCluster::start_configured(watch_pid, Durability::Fast, Some(tls))
    }

    fn start_configured(
        watch_pid: Option<u32>,
        durability: Durability,
        tls: Option<&ServerTls>,
    ) -> io::Result<LocalCluster> {
        let bin = find_server_bin().ok_or_else(|| {
            err("PostgreSQL server binaries not found (no initdb on PATH or under /usr/lib/postgresql)")
        })?;
        let as_postgres_user = effective_uid() == Some(0);
        let dir = tempfile::Builder::new()
            .prefix("nodestore-pg-")
            .tempdir()?
            .keep();
        if as_postgres_user {
            let (uid, gid) = postgres_user_ids().ok_or_else(|| {
                err("running as root, and initdb refuses root, but there is no `postgres` user")
            })?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let port = free_port()?;
        let cluster = LocalCluster {
            durability,
            tls: tls.is_some(),
            dir,
            port,
            bin,
            as_postgres_user,
        };
        if let Err(e) = cluster.init_and_start(tls) {
            let log = fs::read_to_string(cluster.log_file()).unwrap_or_default();
            let _ = fs::remove_dir_all(&cluster.dir);
            return Err(err(format!("{e}\n{log}")));
        }
        if let Some(pid) = watch_pid {
            cluster.spawn_watchdog(pid)?;
        }
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server command `program` with `args`, as the postgres user when needed.
    fn server_command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, mut cmd: Command, what: &str) -> io::Result<()> {
        let out = cmd.stdin(Stdio::null()).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(err(format!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    fn init_and_start(&self, tls: Option<&ServerTls>) -> io::Result<()> {
        let mut init = self.server_command("initdb");
        init.arg("-D").arg(self.data_dir()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        self.run(init, "initdb")?;
        if let Some(tls) = tls {
            self.install_tls(tls)?;
        }
        self.start_server()
    }

    /// Writes the certificate files into the cluster directory (the key
    /// readable by the server's user only, as the server demands) and puts
    /// `hba_first` ahead of the default `pg_hba.conf`.
    fn install_tls(&self, tls: &ServerTls) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let ids = if self.as_postgres_user {
            postgres_user_ids()
        } else {
            None
        };
        for (name, pem, mode) in [
            ("server.crt", &tls.cert_pem, 0o644),
            ("server.key", &tls.key_pem, 0o600),
            ("client-ca.crt", &tls.ca_pem, 0o644),
        ] {
            let path = self.dir.join(name);
            fs::write(&path, pem)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        let hba = self.data_dir().join("pg_hba.conf");
        let default = fs::read_to_string(&hba)?;
        fs::write(&hba, format!("{}\n{default}", tls.hba_first.join("\n")))?;
        Ok(())
    }

    fn start_server(&self) -> io::Result<()> {
        // fsync off keeps commits in the OS page cache, which a server
        // crash does not lose; synchronous_commit off would lose them.
        let durability = match self.durability {
            Durability::Fast => " -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::CrashSafe => {
                " -c fsync=off -c synchronous_commit=on -c full_page_writes=off"
            }
            Durability::Production => "",
        };
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300{durability}",
            self.port,
            self.dir.display(),
        );
        if self.tls {
            let d = self.dir.display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key \
                 -c ssl_ca_file={d}/client-ca.crt"
            ));
        }
        let mut start = self.server_command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        self.run(start, "pg_ctl start")
    }

    fn spawn_watchdog(&self, pid: u32) -> io::Result<()> {
        // Arguments are passed positionally, never spliced into the script.
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
if [ "$4" = 1 ]; then runuser -u postgres -- "$2" -D "$3" -m immediate stop
else "$2" -D "$3" -m immediate stop; fi
rm -rf "$5""#;
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("nodestore-pg-watchdog")
            .arg(pid.to_string())
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data_dir())
            .arg(if self.as_postgres_user { "1" } else { "0" })
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(())
    }

    /// Stops the server at once, as a crash or a lost machine would (`pg_ctl
    /// stop -m immediate`), keeping its data: for fault tests.
    pub fn stop_now(&self) -> io::Result<()> {
        let mut stop = self.server_command("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"]);
        self.run(stop, "pg_ctl stop -m immediate")
    }

    /// Starts the server again after [`LocalCluster::stop_now`].
    pub fn start_again(&self) -> io::Result<()> {
        self.start_server()
    }

    /// The cluster directory (data, socket and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The TCP port on 127.0.0.1, also part of the socket's name.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for database `dbname` over the Unix socket.
    pub fn url(&self, dbname: &str) -> String {
        socket_url(&self.dir, self.port, dbname)
    }

    /// Stops the server and removes the cluster directory.
    pub fn stop(self) -> io::Result<()> {
        let mut stop = self.server_command("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "stop"]);
        let result = self.run(stop, "pg_ctl stop");
        fs::remove_dir_all(&self.dir)?;
        result
    }

    /// [`LocalCluster::attach`] for a cluster started durable.
    pub fn attach_durable(dir: PathBuf, port: u16) -> io::Result<LocalCluster> {
        let mut c = LocalCluster::attach(dir, port)?;
        c.durability = Durability::CrashSafe;
        Ok(c)
    }

    /// Rebuilds the handle of a cluster started earlier (by `cargo xtask pg
    /// start`) from its directory and port.
    pub fn attach(dir: PathBuf, port: u16) -> io::Result<LocalCluster> {
        let bin = find_server_bin().ok_or_else(|| err("PostgreSQL server binaries not found"))?;
        Ok(LocalCluster {
            durability: Durability::Fast,
            tls: false,
            dir,
            port,
            bin,
            as_postgres_user: effective_uid() == Some(0),
        })
    }
}

/// A URL for a server listening on the Unix socket in `dir`, with the socket
/// directory percent-encoded as the host.
pub fn socket_url(dir: &Path, port: u16, dbname: &str) -> String {
    let mut host = String::new();
    for b in dir.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            host.push(b as char);
        } else {
            host.push_str(&format!("%{b:02X}"));
        }
    }
    format!("postgresql://postgres@{host}:{port}/{dbname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_percent_encode_the_directory() {
        assert_eq!(
            socket_url(Path::new("/tmp/nodestore-pg-a1"), 5433, "db"),
            "postgresql://postgres@%2Ftmp%2Fnodestore-pg-a1:5433/db"
        );
    }
}
