//! What a node configures: the backend, where the legacy key-value database
//! lives, and the migration policy. Loaded from a TOML file and
//! `NODESTORE_*` environment variables (which win over the file).
//!
//! ```toml
//! kv_dir = "/var/lib/node/kv"     # the legacy key-value database, if any
//! migration = "auto"               # or "defer", or "online" (docs/design.md §7)
//! online_pause_budget_ms = 1000    # an online migration's longest pause of writers
//! force_migration = false
//!
//! [backend]
//! type = "sqlite"                  # "kv", "sqlite" or "postgres"
//! file = "/var/lib/node/node.db"
//! # type = "postgres"
//! # url = "postgres://node@db.internal/node?sslmode=verify-full&sslrootcert=/etc/ca.pem"
//! # or LiT's separate settings instead of url:
//! # host = "db.internal"           # or a socket directory such as /run/postgresql
//! # port = 5432
//! # user = "node"
//! # password_file = "/etc/node/pg-password"   # or password = "…"
//! # dbname = "node"
//! # and, with either form:
//! # max_connections = 8            # also pool_size
//! # connect_timeout = 10           # seconds
//! # require_ssl = true             # LiT's switch: sslmode require or disable
//! # sslmode = "verify-full"        # libpq's: disable, prefer (default), require, verify-ca, verify-full
//! # sslrootcert = "/etc/ca.pem"
//! # sslcert = "/etc/node/client.pem"
//! # sslkey = "/etc/node/client.key"
//! ```
//!
//! Every key has a variable, which wins over the file. A URL from either
//! place replaces the other's separate settings and the other way round;
//! `NODESTORE_BACKEND` naming another backend than the file's drops the
//! file's `[backend]` settings.
//!
//! | variable | key |
//! |---|---|
//! | `NODESTORE_BACKEND` | `backend.type`: `kv`, `sqlite` or `postgres` |
//! | `NODESTORE_KV_DIR` | `kv_dir` (and the directory of the `kv` backend) |
//! | `NODESTORE_SQLITE_FILE` | `backend.file` |
//! | `NODESTORE_POSTGRES_URL` | `backend.url` |
//! | `NODESTORE_POSTGRES_HOST`, `_PORT`, `_USER`, `_PASSWORD`, `_PASSWORD_FILE`, `_DBNAME` | the separate settings |
//! | `NODESTORE_POSTGRES_MAX_CONNECTIONS` (or `_POOL_SIZE`), `_CONNECT_TIMEOUT` | the pool and the timeout |
//! | `NODESTORE_POSTGRES_REQUIRE_SSL`, `_SSLMODE`, `_SSLROOTCERT`, `_SSLCERT`, `_SSLKEY` | TLS (docs/design.md §3.5) |
//! | `NODESTORE_MIGRATION` | `migration`: `auto`, `defer` or `online` |
//! | `NODESTORE_ONLINE_PAUSE_BUDGET_MS` | `online_pause_budget_ms` |
//! | `NODESTORE_FORCE_MIGRATION` | `force_migration` |
//!
//! A switch takes `1/0`, `true/false`, `yes/no`, `on/off`. An error names
//! the setting (`node.toml: line 7: backend.port: …` or the variable), and
//! never shows a password or a URL.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Where the stores live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// The legacy key-value database.
    Kv {
        /// Its directory.
        dir: PathBuf,
    },
    /// A SQLite file.
    Sqlite {
        /// The file.
        file: PathBuf,
    },
    /// A PostgreSQL database.
    Postgres {
        /// A standard connection URL.
        url: String,
        /// The most pooled connections.
        #[serde(default = "default_pool_size")]
        pool_size: usize,
    },
}

fn default_pool_size() -> usize {
    8
}

/// What to do with a live key-value database when the backend is SQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPolicy {
    /// Migrate it into SQL at open, then tombstone it.
    #[default]
    Auto,
    /// Keep running on it; migrate later (with `nodestore migrate`). A
    /// deferred migration is never recorded as done.
    Defer,
    /// Open at once on it and migrate in the background while the node
    /// serves; switch to SQL when done (docs/design.md §7).
    Online,
}

/// A node's storage configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the stores live.
    pub backend: BackendConfig,
    /// The legacy key-value database, if the node has one.
    #[serde(default)]
    pub kv_dir: Option<PathBuf>,
    /// What to do with a live key-value database on a SQL backend.
    #[serde(default)]
    pub migration: MigrationPolicy,
    /// Migrate a key-value database whose tombstone names another SQL
    /// target (only when that target is lost).
    #[serde(default)]
    pub force_migration: bool,
    /// An online migration's longest pause of writers at the cutover
    /// before it backs off and tries again (default 1 s).
    #[serde(default = "default_pause_budget")]
    pub online_pause_budget: std::time::Duration,
}

fn default_pause_budget() -> std::time::Duration {
    crate::online::DEFAULT_PAUSE_BUDGET
}

impl Config {
    /// A configuration with this backend and nothing else.
    pub fn new(backend: BackendConfig) -> Config {
        Config {
            backend,
            kv_dir: None,
            migration: MigrationPolicy::Auto,
            force_migration: false,
            online_pause_budget: default_pause_budget(),
        }
    }

    /// Parses TOML.
    ///
    /// Errors name the line and the key (`line 7: backend.port: …`), never
    /// the line itself or a quoted value (a config line may hold a password).
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        Config::load_from(Some((text, "")), |_| None)
    }

    /// Reads `file` (if given), then applies the `NODESTORE_*` variables of
    /// this process's environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Error> {
        Config::load_with(file, |name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment given as a lookup function.
    pub fn load_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        match file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| Error::Config(format!("{}: {e}", f.display())))?;
                Config::load_from(Some((&text, &format!("{}: ", f.display()))), env)
            }
            None => Config::load_from(None, env),
        }
    }

    /// The settings of `toml` (with the prefix for its messages), then the
    /// environment's over them, resolved into a configuration.
    fn load_from(
        toml: Option<(&str, &str)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let mut settings = match toml {
            Some((text, prefix)) => settings_of_toml(text, prefix)?,
            None => Settings::new(),
        };
        // A URL from the environment replaces the file's separate settings
        // and the other way round: one of the two forms describes the server.
        let mut env_settings: Vec<(&'static str, String)> = ENV
            .iter()
            .filter(|(_, var)| !var.is_empty())
            .filter_map(|(key, var)| env(var).map(|v| (*key, v)))
            .collect();
        if let Some(n) = env("NODESTORE_POSTGRES_POOL_SIZE")
            && !env_settings
                .iter()
                .any(|(k, _)| *k == "backend.max_connections")
        {
            env_settings.push(("backend.max_connections", n));
        }
        for (key, value) in &env_settings {
            if *key == "backend.type"
                && settings
                    .get("backend.type")
                    .is_some_and(|t| t.value != *value)
            {
                // Another backend than the file's: none of its settings apply.
                settings.retain(|k, _| !k.starts_with("backend."));
            }
            if *key == "backend.url" {
                for k in SEPARATE_POSTGRES {
                    settings.remove(k);
                }
            } else if SEPARATE_POSTGRES.contains(key) {
                settings.remove("backend.url");
            }
        }
        for (key, value) in env_settings {
            let var = match ENV.iter().find(|(k, _)| *k == key) {
                Some((_, var))
                    if !(key == "backend.max_connections"
                        && env("NODESTORE_POSTGRES_MAX_CONNECTIONS").is_none()) =>
                {
                    *var
                }
                _ => "NODESTORE_POSTGRES_POOL_SIZE",
            };
            settings.insert(
                key,
                Setting {
                    value,
                    origin: var.to_owned(),
                },
            );
        }
        resolve(&settings)
    }
}

/// A setting's value as text, and where it came from for messages: `line 7:
/// backend.port` (with the file) or the variable's name.
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    origin: String,
}

impl Setting {
    fn error(&self, why: impl fmt::Display) -> Error {
        Error::Config(format!("{}: {why}", self.origin))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(&self.value)
    }

    /// A value of the wrong kind, refused by naming the setting and what
    /// it takes; never the value, which a slip may have made a password.
    fn refused(&self, expected: impl fmt::Display) -> Error {
        Error::Config(format!("{}: expected {expected}", self.origin))
    }

    fn bool(&self) -> Result<bool, Error> {
        parse_bool(&self.value).ok_or_else(|| self.refused("1, 0, true, false, yes, no, on or off"))
    }

    fn number<T: std::str::FromStr>(&self, what: &str) -> Result<T, Error> {
        self.value.parse().map_err(|_| self.refused(what))
    }
}

type Settings = BTreeMap<&'static str, Setting>;

/// Every key a configuration may have, and the variable that sets it.
const ENV: [(&str, &str); 21] = [
    ("backend.type", "NODESTORE_BACKEND"),
    ("backend.dir", ""),
    ("backend.file", "NODESTORE_SQLITE_FILE"),
    ("backend.url", "NODESTORE_POSTGRES_URL"),
    ("backend.host", "NODESTORE_POSTGRES_HOST"),
    ("backend.port", "NODESTORE_POSTGRES_PORT"),
    ("backend.user", "NODESTORE_POSTGRES_USER"),
    ("backend.password", "NODESTORE_POSTGRES_PASSWORD"),
    ("backend.password_file", "NODESTORE_POSTGRES_PASSWORD_FILE"),
    ("backend.dbname", "NODESTORE_POSTGRES_DBNAME"),
    (
        "backend.max_connections",
        "NODESTORE_POSTGRES_MAX_CONNECTIONS",
    ),
    (
        "backend.connect_timeout",
        "NODESTORE_POSTGRES_CONNECT_TIMEOUT",
    ),
    ("backend.require_ssl", "NODESTORE_POSTGRES_REQUIRE_SSL"),
    ("backend.sslmode", "NODESTORE_POSTGRES_SSLMODE"),
    ("backend.sslrootcert", "NODESTORE_POSTGRES_SSLROOTCERT"),
    ("backend.sslcert", "NODESTORE_POSTGRES_SSLCERT"),
    ("backend.sslkey", "NODESTORE_POSTGRES_SSLKEY"),
    ("kv_dir", "NODESTORE_KV_DIR"),
    ("migration", "NODESTORE_MIGRATION"),
    ("force_migration", "NODESTORE_FORCE_MIGRATION"),
    ("online_pause_budget_ms", "NODESTORE_ONLINE_PAUSE_BUDGET_MS"),
];

/// Keys that name the key for the same setting under another name.
const ALIASES: [(&str, &str); 2] = [
    ("backend.pool_size", "backend.max_connections"),
    ("NODESTORE_POSTGRES_POOL_SIZE", "backend.max_connections"),
];

/// The separate settings that describe a PostgreSQL server instead of a URL.
const SEPARATE_POSTGRES: [&str; 6] = [
    "backend.host",
    "backend.port",
    "backend.user",
    "backend.password",
    "backend.password_file",
    "backend.dbname",
];

/// The keys each backend type accepts.
fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "kv" => &["backend.type", "backend.dir"],
        "sqlite" => &["backend.type", "backend.file"],
        _ => &[
            "backend.type",
            "backend.url",
            "backend.host",
            "backend.port",
            "backend.user",
            "backend.password",
            "backend.password_file",
            "backend.dbname",
            "backend.max_connections",
            "backend.connect_timeout",
            "backend.require_ssl",
            "backend.sslmode",
            "backend.sslrootcert",
            "backend.sslcert",
            "backend.sslkey",
        ],
    }
}

/// `1/0`, `true/false`, `yes/no`, `on/off` (any case); anything else is
/// refused by the caller, naming the setting.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The settings of a TOML text, each with its line.
fn settings_of_toml(text: &str, prefix: &str) -> Result<Settings, Error> {
    use toml::de::{DeTable, DeValue};
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let doc = DeTable::parse(text).map_err(|e| {
        let message = elide_quoted(e.message());
        Error::Config(match e.span() {
            Some(s) => format!("{prefix}line {}: {message}", line_of(s.start)),
            None => format!("{prefix}{message}"),
        })
    })?;
    let mut settings = Settings::new();
    let mut leaves = Vec::new();
    for (key, value) in doc.get_ref() {
        let key = key.get_ref().to_string();
        match value.get_ref() {
            DeValue::Table(inner) if key == "backend" => {
                for (k, v) in inner {
                    leaves.push((format!("backend.{}", k.get_ref()), v));
                }
            }
            _ => leaves.push((key, value)),
        }
    }
    for (key, value) in leaves {
        let origin = format!("{prefix}line {}: {key}", line_of(value.span().start));
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| *alias == key)
            .map(|(_, k)| *k)
            .or_else(|| ENV.iter().map(|(k, _)| *k).find(|k| *k == key));
        let Some(canonical) = canonical else {
            return Err(Error::Config(format!("{origin}: unknown setting")));
        };
        let text = match value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i.to_string(),
            DeValue::Boolean(b) => b.to_string(),
            _ => {
                return Err(Error::Config(format!(
                    "{origin}: expected a string, a number or a boolean"
                )));
            }
        };
        settings.insert(
            canonical,
            Setting {
                value: text,
                origin,
            },
        );
    }
    Ok(settings)
}

/// Builds the configuration from its settings; every error names the
/// setting that is wrong (its line, or its variable).
fn resolve(settings: &Settings) -> Result<Config, Error> {
    let get = |k: &str| settings.get(k);
    let kind = get("backend.type").ok_or_else(|| {
        Error::Config("no backend: give a config file with [backend] or NODESTORE_BACKEND".into())
    })?;
    if !["kv", "sqlite", "postgres"].contains(&kind.value.as_str()) {
        return Err(kind.refused("kv, sqlite or postgres"));
    }
    let allowed = keys_of(&kind.value);
    for (key, setting) in settings.range("backend."..="backend.~") {
        if !allowed.contains(key) {
            return Err(setting.error(format!("not a setting of the {} backend", kind.value)));
        }
    }
    let required = |key: &str| {
        get(key).ok_or_else(|| {
            let var = ENV.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| *v);
            Error::Config(format!(
                "the {} backend needs {key} ({var}), set at {}",
                kind.value, kind.origin
            ))
        })
    };
    let backend = match kind.value.as_str() {
        // The key-value backend's directory is the node's kv_dir unless
        // the file names it under [backend].
        "kv" => BackendConfig::Kv {
            dir: match get("backend.dir").or_else(|| get("kv_dir")) {
                Some(d) => d.path(),
                None => required("kv_dir")?.path(),
            },
        },
        "sqlite" => BackendConfig::Sqlite {
            file: required("backend.file")?.path(),
        },
        _ => postgres_backend(settings, &required)?,
    };
    let mut config = Config::new(backend);
    if let Some(dir) = get("kv_dir") {
        config.kv_dir = Some(dir.path());
    }
    if let Some(m) = get("migration") {
        config.migration = match m.value.as_str() {
            "auto" => MigrationPolicy::Auto,
            "defer" => MigrationPolicy::Defer,
            "online" => MigrationPolicy::Online,
            _ => return Err(m.refused("auto, defer or online")),
        };
    }
    if let Some(f) = get("force_migration") {
        config.force_migration = f.bool()?;
    }
    if let Some(b) = get("online_pause_budget_ms") {
        let ms: u64 = b.number("a number of milliseconds")?;
        config.online_pause_budget = std::time::Duration::from_millis(ms);
    }
    Ok(config)
}

/// The PostgreSQL URL the settings describe: the `url` as given, or one
/// composed from LiT's separate settings; pool size, connect timeout and
/// TLS settings apply to either form (docs/design.md §3.5).
fn postgres_backend<'a>(
    settings: &'a Settings,
    required: &dyn Fn(&str) -> Result<&'a Setting, Error>,
) -> Result<BackendConfig, Error> {
    let get = |k: &str| settings.get(k);
    let mut url = match get("backend.url") {
        Some(url) => {
            if let Some(other) = SEPARATE_POSTGRES.iter().find_map(|k| get(k)) {
                return Err(other.error(format!(
                    "give either a url ({}) or the separate settings, not both",
                    url.origin
                )));
            }
            let lower = url.value.to_ascii_lowercase();
            if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
                return Err(url.error("expected a URL starting with postgres://"));
            }
            url.value.clone()
        }
        None => {
            let user = required("backend.user")?;
            let dbname = required("backend.dbname")?;
            let password = match (get("backend.password"), get("backend.password_file")) {
                (Some(_), Some(file)) => {
                    return Err(file.error("give either password or password_file, not both"));
                }
                (Some(p), None) => Some(p.value.clone()),
                (None, Some(file)) => Some(read_password(file)?),
                (None, None) => None,
            };
            let host = get("backend.host").map_or("localhost", |h| h.value.as_str());
            let port: u16 = match get("backend.port") {
                Some(p) => p.number("a port number from 1 to 65535")?,
                None => 5432,
            };
            let mut url = format!("postgres://{}", encode(&user.value));
            if let Some(p) = password {
                url.push(':');
                url.push_str(&encode(&p));
            }
            if host.starts_with('/') {
                // A socket directory goes in the query, as libpq's `host`.
                url.push_str(&format!(
                    "@:{port}/{}?host={}",
                    encode(&dbname.value),
                    encode(host)
                ));
            } else {
                url.push_str(&format!(
                    "@{}:{port}/{}",
                    encode(host),
                    encode(&dbname.value)
                ));
            }
            url
        }
    };
    let mut params = Vec::new();
    if let Some(t) = get("backend.connect_timeout") {
        let secs: u64 = t.number("a number of seconds")?;
        params.push(format!("connect_timeout={secs}"));
    }
    match (get("backend.require_ssl"), get("backend.sslmode")) {
        (Some(r), Some(_)) => {
            return Err(r.error("give either require_ssl or sslmode, not both"));
        }
        (Some(r), None) => {
            // LiT's setting: TLS required, or not used at all.
            let mode = if r.bool()? { "require" } else { "disable" };
            params.push(format!("sslmode={mode}"));
        }
        (None, Some(m)) => {
            sqldb_mode(m)?;
            params.push(format!("sslmode={}", encode(&m.value)));
        }
        (None, None) => {}
    }
    for key in ["sslrootcert", "sslcert", "sslkey"] {
        if let Some(v) = get(&format!("backend.{key}")) {
            params.push(format!("{key}={}", encode(&v.value)));
        }
    }
    if !params.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&params.join("&"));
    }
    let pool_size = match get("backend.max_connections") {
        Some(n) => {
            let n: usize = n.number("a number of connections from 1")?;
            if n == 0 {
                return Err(settings["backend.max_connections"].error("must be at least 1"));
            }
            n
        }
        None => default_pool_size(),
    };
    Ok(BackendConfig::Postgres { url, pool_size })
}

fn sqldb_mode(m: &Setting) -> Result<(), Error> {
    match m.value.as_str() {
        "disable" | "prefer" | "require" | "verify-ca" | "verify-full" => Ok(()),
        _ => Err(m.refused("disable, prefer, require, verify-ca or verify-full")),
    }
}

/// The first line of a password file; the file is named in errors, its
/// content never.
fn read_password(file: &Setting) -> Result<String, Error> {
    let text = std::fs::read_to_string(file.path())
        .map_err(|e| file.error(format!("{}: {e}", file.value)))?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err(file.error(format!("{}: the file holds no password", file.value)));
    }
    Ok(password)
}

/// Percent-encodes everything but unreserved characters, for a URL part.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` with every double-quoted part replaced by `"…"`.
fn elide_quoted(s: &str) -> String {
    let mut out = String::new();
    let mut parts = s.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        if i % 2 == 0 {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn toml_and_environment_combine_with_the_environment_winning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "kv_dir = \"/data/kv\"\nmigration = \"defer\"\n[backend]\ntype = \"sqlite\"\nfile = \"/data/node.db\"\n",
        )
        .unwrap();
        let none = |_: &str| None;
        let c = Config::load_with(Some(&file), none).unwrap();
        assert_eq!(
            c.backend,
            BackendConfig::Sqlite {
                file: "/data/node.db".into()
            }
        );
        assert_eq!(
            (c.kv_dir.as_deref(), c.migration),
            (Some(Path::new("/data/kv")), MigrationPolicy::Defer)
        );
        let env: HashMap<&str, &str> = [
            ("NODESTORE_BACKEND", "postgres"),
            ("NODESTORE_POSTGRES_URL", "postgres://u@h/db"),
            ("NODESTORE_POSTGRES_POOL_SIZE", "3"),
            ("NODESTORE_MIGRATION", "auto"),
        ]
        .into();
        let c = Config::load_with(Some(&file), |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(
            c.backend,
            BackendConfig::Postgres {
                url: "postgres://u@h/db".into(),
                pool_size: 3
            }
        );
        assert_eq!(c.migration, MigrationPolicy::Auto);
        assert_eq!(
            c.kv_dir.as_deref(),
            Some(Path::new("/data/kv")),
            "kept from the file"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        let env = |k: &str| (k == "NODESTORE_BACKEND").then(|| "mysql".to_owned());
        let e = Config::load_with(None, env).unwrap_err().to_string();
        assert!(
            e.contains("NODESTORE_BACKEND: expected kv, sqlite or postgres"),
            "{e}"
        );
        assert!(!e.contains("mysql"), "{e}");
        assert!(
            Config::from_toml("[backend]\ntype = \"sqlite\"\nfile = \"x\"\nextra = 1\n").is_err()
        );
        assert!(
            Config::load_with(None, |_| None).is_err(),
            "no backend at all"
        );
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn postgres_url(c: &Config) -> (&str, usize) {
        match &c.backend {
            BackendConfig::Postgres { url, pool_size } => (url, *pool_size),
            other => panic!("not postgres: {other:?}"),
        }
    }

    #[test]
    fn lit_s_separate_postgres_settings_compose_one_url() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cr/t@x\n").unwrap();
        let text = format!(
            "[backend]\ntype = \"postgres\"\nhost = \"db.internal\"\nport = 5433\nuser = \"node\"\n\
             password_file = \"{}\"\ndbname = \"lit\"\nmax_connections = 4\nconnect_timeout = 10\n\
             require_ssl = true\n",
            pw.display()
        );
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(
            postgres_url(&c),
            (
                "postgres://node:s3cr%2Ft%40x@db.internal:5433/lit?connect_timeout=10&sslmode=require",
                4
            )
        );
        // The same from NODESTORE_POSTGRES_* variables, with libpq's TLS settings.
        let env = env_of(&[
            ("NODESTORE_BACKEND", "postgres"),
            ("NODESTORE_POSTGRES_USER", "node"),
            ("NODESTORE_POSTGRES_PASSWORD", "pw"),
            ("NODESTORE_POSTGRES_DBNAME", "lit"),
            ("NODESTORE_POSTGRES_SSLMODE", "verify-full"),
            ("NODESTORE_POSTGRES_SSLROOTCERT", "/etc/ca.pem"),
            ("NODESTORE_POSTGRES_POOL_SIZE", "2"),
        ]);
        let c = Config::load_with(None, env).unwrap();
        assert_eq!(
            postgres_url(&c),
            (
                "postgres://node:pw@localhost:5432/lit?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
                2
            )
        );
        // A socket directory is libpq's `host` parameter.
        let env = env_of(&[
            ("NODESTORE_BACKEND", "postgres"),
            ("NODESTORE_POSTGRES_HOST", "/run/postgresql"),
            ("NODESTORE_POSTGRES_USER", "node"),
            ("NODESTORE_POSTGRES_DBNAME", "lit"),
        ]);
        let c = Config::load_with(None, env).unwrap();
        assert_eq!(
            postgres_url(&c).0,
            "postgres://node@:5432/lit?host=%2Frun%2Fpostgresql"
        );
    }

    #[test]
    fn errors_point_at_the_setting_never_at_its_secret() {
        for (text, needle) in [
            (
                "[backend]\ntype = \"sqlite\"\nfile = \"x\"\nextra = 1\n",
                "line 4: backend.extra: unknown setting",
            ),
            (
                "[backend]\ntype = \"postgres\"\nuser = \"u\"\ndbname = \"d\"\nport = \"http\"\n",
                "line 5: backend.port: expected a port number",
            ),
            (
                "[backend]\ntype = \"sqlite\"\nfile = \"x\"\nhost = \"h\"\n",
                "line 4: backend.host: not a setting of the sqlite backend",
            ),
            (
                "force_migration = \"maybe\"\n[backend]\ntype = \"sqlite\"\nfile = \"x\"\n",
                "line 1: force_migration: expected 1, 0, true",
            ),
            (
                "[backend]\ntype = \"postgres\"\nurl = \"postgres://u:hunter2@h/d\"\nuser = \"v\"\n",
                "line 4: backend.user: give either a url (line 3: backend.url)",
            ),
            (
                "[backend]\ntype = \"postgres\"\npassword = \"hunter2\"\ndbname = \"d\"\n",
                "needs backend.user (NODESTORE_POSTGRES_USER)",
            ),
        ] {
            let e = Config::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}\n{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let env = env_of(&[
            ("NODESTORE_BACKEND", "postgres"),
            ("NODESTORE_POSTGRES_URL", "postgres://u@h/d"),
            ("NODESTORE_POSTGRES_REQUIRE_SSL", "sometimes"),
        ]);
        let e = Config::load_with(None, env).unwrap_err().to_string();
        assert!(
            e.contains("NODESTORE_POSTGRES_REQUIRE_SSL: expected 1, 0"),
            "{e}"
        );
        assert!(!e.contains("sometimes"), "{e}");
    }

    #[test]
    fn booleans_take_every_usual_spelling_and_nothing_else() {
        for (v, b) in [
            ("1", true),
            ("true", true),
            ("YES", true),
            ("on", true),
            ("0", false),
            ("False", false),
            ("no", false),
            ("off", false),
        ] {
            assert_eq!(parse_bool(v), Some(b), "{v}");
            let env = env_of(&[
                ("NODESTORE_BACKEND", "sqlite"),
                ("NODESTORE_SQLITE_FILE", "x"),
                ("NODESTORE_FORCE_MIGRATION", v),
            ]);
            assert_eq!(Config::load_with(None, env).unwrap().force_migration, b);
        }
        for v in ["", "2", "y", "enabled"] {
            assert_eq!(parse_bool(v), None, "{v}");
        }
    }
}
