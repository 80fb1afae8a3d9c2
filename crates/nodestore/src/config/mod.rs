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

use serde::Deserialize;

use crate::Error;

mod postgres;

use postgres::postgres_backend;

/// Where the stores live.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        pool_size: usize,
    },
}

fn default_pool_size() -> usize {
    8
}

/// What to do with a live key-value database when the backend is SQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
///
/// Read from TOML ([`Config::from_toml`], [`Config::load`], with the
/// environment over it) or from any serde format a node keeps its own
/// settings in (its `Deserialize`): the same keys and rules either way
/// (the table in the module docs), resolved by one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the stores live.
    pub backend: BackendConfig,
    /// The legacy key-value database, if the node has one.
    pub kv_dir: Option<PathBuf>,
    /// What to do with a live key-value database on a SQL backend.
    pub migration: MigrationPolicy,
    /// Migrate a key-value database whose tombstone names another SQL
    /// target (only when that target is lost).
    pub force_migration: bool,
    /// An online migration's longest pause of writers at the cutover
    /// before it backs off and tries again (`online_pause_budget_ms`,
    /// default 1 s).
    pub online_pause_budget: std::time::Duration,
}

/// A configuration from any serde format: a map with the file's keys
/// (`backend` a table of its own; every value a string, a number or a
/// switch), resolved as a file's settings are. Errors name the key. The
/// environment is not read ([`Config::load`] applies it).
impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Config, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Switch(bool),
            Number(i64),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Table(BTreeMap<String, Scalar>),
            Value(Scalar),
        }
        let text = |v: Scalar| match v {
            Scalar::Switch(b) => b.to_string(),
            Scalar::Number(n) => n.to_string(),
            Scalar::Text(s) => s,
        };
        let mut settings = Settings::new();
        for (key, entry) in BTreeMap::<String, Entry>::deserialize(d)? {
            let leaves: Vec<(String, Scalar)> = match entry {
                Entry::Table(t) if key == "backend" => t
                    .into_iter()
                    .map(|(k, v)| (format!("backend.{k}"), v))
                    .collect(),
                Entry::Value(v) => vec![(key, v)],
                Entry::Table(_) => {
                    return Err(D::Error::custom(format!(
                        "{key}: expected a string, a number or a boolean"
                    )));
                }
            };
            for (name, value) in leaves {
                let Some(k) = Key::named(&name) else {
                    return Err(D::Error::custom(format!("{name}: unknown setting")));
                };
                settings.insert(
                    k,
                    Setting {
                        value: text(value),
                        origin: name,
                    },
                );
            }
        }
        resolve(&settings).map_err(D::Error::custom)
    }
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
        let mut env_settings: Vec<(Key, String, &'static str)> = Key::ALL
            .into_iter()
            .filter(|k| !k.var().is_empty())
            .filter_map(|k| env(k.var()).map(|v| (k, v, k.var())))
            .collect();
        if let Some(n) = env(POOL_SIZE_VAR)
            && !env_settings.iter().any(|(k, ..)| *k == Key::MaxConnections)
        {
            env_settings.push((Key::MaxConnections, n, POOL_SIZE_VAR));
        }
        for (key, value, _) in &env_settings {
            if *key == Key::Type && settings.get(&Key::Type).is_some_and(|t| t.value != *value) {
                // Another backend than the file's: none of its settings apply.
                settings.retain(|k, _| !k.is_backend());
            }
            if *key == Key::Url {
                for k in SEPARATE_POSTGRES {
                    settings.remove(&k);
                }
            } else if SEPARATE_POSTGRES.contains(key) {
                settings.remove(&Key::Url);
            }
        }
        for (key, value, var) in env_settings {
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

type Settings = BTreeMap<Key, Setting>;

/// Every setting a configuration may have: its key as a file writes it and
/// the variable that sets it (the table in the module docs). In the order
/// of their names, so settings are checked in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    ConnectTimeout,
    Dbname,
    Dir,
    File,
    Host,
    MaxConnections,
    Password,
    PasswordFile,
    Port,
    RequireSsl,
    Sslcert,
    Sslkey,
    Sslmode,
    Sslrootcert,
    Type,
    Url,
    User,
    ForceMigration,
    KvDir,
    Migration,
    OnlinePauseBudgetMs,
}

impl Key {
    const ALL: [Key; 21] = [
        Key::ConnectTimeout,
        Key::Dbname,
        Key::Dir,
        Key::File,
        Key::Host,
        Key::MaxConnections,
        Key::Password,
        Key::PasswordFile,
        Key::Port,
        Key::RequireSsl,
        Key::Sslcert,
        Key::Sslkey,
        Key::Sslmode,
        Key::Sslrootcert,
        Key::Type,
        Key::Url,
        Key::User,
        Key::ForceMigration,
        Key::KvDir,
        Key::Migration,
        Key::OnlinePauseBudgetMs,
    ];

    /// The key as a file writes it (`backend.port`).
    fn name(self) -> &'static str {
        match self {
            Key::ConnectTimeout => "backend.connect_timeout",
            Key::Dbname => "backend.dbname",
            Key::Dir => "backend.dir",
            Key::File => "backend.file",
            Key::Host => "backend.host",
            Key::MaxConnections => "backend.max_connections",
            Key::Password => "backend.password",
            Key::PasswordFile => "backend.password_file",
            Key::Port => "backend.port",
            Key::RequireSsl => "backend.require_ssl",
            Key::Sslcert => "backend.sslcert",
            Key::Sslkey => "backend.sslkey",
            Key::Sslmode => "backend.sslmode",
            Key::Sslrootcert => "backend.sslrootcert",
            Key::Type => "backend.type",
            Key::Url => "backend.url",
            Key::User => "backend.user",
            Key::ForceMigration => "force_migration",
            Key::KvDir => "kv_dir",
            Key::Migration => "migration",
            Key::OnlinePauseBudgetMs => "online_pause_budget_ms",
        }
    }

    /// The variable that sets it (none for the `kv` backend's own
    /// directory, which `NODESTORE_KV_DIR` gives).
    fn var(self) -> &'static str {
        match self {
            Key::ConnectTimeout => "NODESTORE_POSTGRES_CONNECT_TIMEOUT",
            Key::Dbname => "NODESTORE_POSTGRES_DBNAME",
            Key::Dir => "",
            Key::File => "NODESTORE_SQLITE_FILE",
            Key::Host => "NODESTORE_POSTGRES_HOST",
            Key::MaxConnections => "NODESTORE_POSTGRES_MAX_CONNECTIONS",
            Key::Password => "NODESTORE_POSTGRES_PASSWORD",
            Key::PasswordFile => "NODESTORE_POSTGRES_PASSWORD_FILE",
            Key::Port => "NODESTORE_POSTGRES_PORT",
            Key::RequireSsl => "NODESTORE_POSTGRES_REQUIRE_SSL",
            Key::Sslcert => "NODESTORE_POSTGRES_SSLCERT",
            Key::Sslkey => "NODESTORE_POSTGRES_SSLKEY",
            Key::Sslmode => "NODESTORE_POSTGRES_SSLMODE",
            Key::Sslrootcert => "NODESTORE_POSTGRES_SSLROOTCERT",
            Key::Type => "NODESTORE_BACKEND",
            Key::Url => "NODESTORE_POSTGRES_URL",
            Key::User => "NODESTORE_POSTGRES_USER",
            Key::ForceMigration => "NODESTORE_FORCE_MIGRATION",
            Key::KvDir => "NODESTORE_KV_DIR",
            Key::Migration => "NODESTORE_MIGRATION",
            Key::OnlinePauseBudgetMs => "NODESTORE_ONLINE_PAUSE_BUDGET_MS",
        }
    }

    /// A `[backend]` setting.
    fn is_backend(self) -> bool {
        self.name().starts_with("backend.")
    }

    /// The key a file's name stands for, aliases included
    /// (`backend.pool_size` is `backend.max_connections`).
    fn named(name: &str) -> Option<Key> {
        if name == "backend.pool_size" {
            return Some(Key::MaxConnections);
        }
        Key::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The variable that also sets `backend.max_connections`.
const POOL_SIZE_VAR: &str = "NODESTORE_POSTGRES_POOL_SIZE";

/// The separate settings that describe a PostgreSQL server instead of a URL.
const SEPARATE_POSTGRES: [Key; 6] = [
    Key::Host,
    Key::Port,
    Key::User,
    Key::Password,
    Key::PasswordFile,
    Key::Dbname,
];

/// The keys each backend type accepts.
fn keys_of(kind: &str) -> &'static [Key] {
    match kind {
        "kv" => &[Key::Type, Key::Dir],
        "sqlite" => &[Key::Type, Key::File],
        _ => &[
            Key::Type,
            Key::Url,
            Key::Host,
            Key::Port,
            Key::User,
            Key::Password,
            Key::PasswordFile,
            Key::Dbname,
            Key::MaxConnections,
            Key::ConnectTimeout,
            Key::RequireSsl,
            Key::Sslmode,
            Key::Sslrootcert,
            Key::Sslcert,
            Key::Sslkey,
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
        let Some(canonical) = Key::named(&key) else {
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
    let get = |k: Key| settings.get(&k);
    let kind = get(Key::Type).ok_or_else(|| {
        Error::Config("no backend: give a config file with [backend] or NODESTORE_BACKEND".into())
    })?;
    if !["kv", "sqlite", "postgres"].contains(&kind.value.as_str()) {
        return Err(kind.refused("kv, sqlite or postgres"));
    }
    let allowed = keys_of(&kind.value);
    for (key, setting) in settings.iter().filter(|(k, _)| k.is_backend()) {
        if !allowed.contains(key) {
            return Err(setting.error(format!("not a setting of the {} backend", kind.value)));
        }
    }
    let required = |key: Key| {
        get(key).ok_or_else(|| {
            Error::Config(format!(
                "the {} backend needs {} ({}), set at {}",
                kind.value,
                key.name(),
                key.var(),
                kind.origin
            ))
        })
    };
    let backend = match kind.value.as_str() {
        // The key-value backend's directory is the node's kv_dir unless
        // the file names it under [backend].
        "kv" => BackendConfig::Kv {
            dir: match get(Key::Dir).or_else(|| get(Key::KvDir)) {
                Some(d) => d.path(),
                None => required(Key::KvDir)?.path(),
            },
        },
        "sqlite" => BackendConfig::Sqlite {
            file: required(Key::File)?.path(),
        },
        _ => postgres_backend(settings, &required)?,
    };
    let mut config = Config::new(backend);
    if let Some(dir) = get(Key::KvDir) {
        config.kv_dir = Some(dir.path());
    }
    if let Some(m) = get(Key::Migration) {
        config.migration = match m.value.as_str() {
            "auto" => MigrationPolicy::Auto,
            "defer" => MigrationPolicy::Defer,
            "online" => MigrationPolicy::Online,
            _ => return Err(m.refused("auto, defer or online")),
        };
    }
    if let Some(f) = get(Key::ForceMigration) {
        config.force_migration = f.bool()?;
    }
    if let Some(b) = get(Key::OnlinePauseBudgetMs) {
        let ms: u64 = b.number("a number of milliseconds")?;
        config.online_pause_budget = std::time::Duration::from_millis(ms);
    }
    Ok(config)
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
mod tests;
