//! What a node configures: the backend, where the legacy key-value database
//! lives, and the migration policy. Loaded from a TOML file and
//! `NODESTORE_*` environment variables (which win over the file).
//!
//! ```toml
//! kv_dir = "/var/lib/node/kv"     # the legacy key-value database, if any
//! migration = "auto"               # or "defer"
//!
//! [backend]
//! type = "sqlite"                  # "kv", "sqlite" or "postgres"
//! file = "/var/lib/node/node.db"
//! # type = "postgres"
//! # url = "postgres://node@db.internal/node"
//! # pool_size = 8
//! ```
//!
//! | variable | meaning |
//! |---|---|
//! | `NODESTORE_BACKEND` | `kv`, `sqlite` or `postgres` |
//! | `NODESTORE_KV_DIR` | the key-value database directory |
//! | `NODESTORE_SQLITE_FILE` | the SQLite file |
//! | `NODESTORE_POSTGRES_URL` | the PostgreSQL connection URL |
//! | `NODESTORE_POSTGRES_POOL_SIZE` | the pool size |
//! | `NODESTORE_MIGRATION` | `auto` or `defer` |
//! | `NODESTORE_FORCE_MIGRATION` | `1` to migrate a key-value database whose tombstone names another SQL target |

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
}

impl Config {
    /// A configuration with this backend and nothing else.
    pub fn new(backend: BackendConfig) -> Config {
        Config {
            backend,
            kv_dir: None,
            migration: MigrationPolicy::Auto,
            force_migration: false,
        }
    }

    /// Parses TOML.
    ///
    /// Errors name the line and what is wrong with it, never the line
    /// itself or a quoted value (a config line may hold a password).
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = elide_quoted(e.message());
            Error::Config(match line {
                Some(l) => format!("line {l}: {message}"),
                None => message,
            })
        })
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
        let base = match file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| Error::Config(format!("{}: {e}", f.display())))?;
                Some(Config::from_toml(&text).map_err(|e| match e {
                    Error::Config(m) => Error::Config(format!("{}: {m}", f.display())),
                    other => other,
                })?)
            }
            None => None,
        };
        let backend = match env("NODESTORE_BACKEND").as_deref() {
            None => base.as_ref().map(|c| c.backend.clone()),
            Some("kv") => Some(BackendConfig::Kv {
                dir: env("NODESTORE_KV_DIR").map(PathBuf::from).ok_or_else(|| {
                    Error::Config("NODESTORE_BACKEND=kv needs NODESTORE_KV_DIR".into())
                })?,
            }),
            Some("sqlite") => Some(BackendConfig::Sqlite {
                file: env("NODESTORE_SQLITE_FILE")
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        Error::Config("NODESTORE_BACKEND=sqlite needs NODESTORE_SQLITE_FILE".into())
                    })?,
            }),
            Some("postgres") => Some(BackendConfig::Postgres {
                url: env("NODESTORE_POSTGRES_URL").ok_or_else(|| {
                    Error::Config("NODESTORE_BACKEND=postgres needs NODESTORE_POSTGRES_URL".into())
                })?,
                pool_size: default_pool_size(),
            }),
            Some(other) => {
                return Err(Error::Config(format!(
                    "NODESTORE_BACKEND={other}: expected kv, sqlite or postgres"
                )));
            }
        };
        let mut config = Config {
            backend: backend.ok_or_else(|| {
                Error::Config("no backend: give a config file or NODESTORE_BACKEND".into())
            })?,
            ..base.unwrap_or_else(|| {
                Config::new(BackendConfig::Kv {
                    dir: PathBuf::new(),
                })
            })
        };
        if let (BackendConfig::Postgres { pool_size, .. }, Some(n)) =
            (&mut config.backend, env("NODESTORE_POSTGRES_POOL_SIZE"))
        {
            *pool_size = n.parse().map_err(|_| {
                Error::Config(format!("NODESTORE_POSTGRES_POOL_SIZE={n}: not a number"))
            })?;
        }
        if let Some(dir) = env("NODESTORE_KV_DIR") {
            config.kv_dir = Some(PathBuf::from(dir));
        }
        match env("NODESTORE_MIGRATION").as_deref() {
            None => {}
            Some("auto") => config.migration = MigrationPolicy::Auto,
            Some("defer") => config.migration = MigrationPolicy::Defer,
            Some(other) => {
                return Err(Error::Config(format!(
                    "NODESTORE_MIGRATION={other}: expected auto or defer"
                )));
            }
        }
        if let Some(v) = env("NODESTORE_FORCE_MIGRATION") {
            config.force_migration = matches!(v.as_str(), "1" | "true" | "yes");
        }
        Ok(config)
    }
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
        assert!(e.contains("NODESTORE_BACKEND=mysql"), "{e}");
        assert!(
            Config::from_toml("[backend]\ntype = \"sqlite\"\nfile = \"x\"\nextra = 1\n").is_err()
        );
        assert!(
            Config::load_with(None, |_| None).is_err(),
            "no backend at all"
        );
    }
}
