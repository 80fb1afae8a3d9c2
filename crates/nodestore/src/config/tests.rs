//! The configuration's unit tests: files, the environment, errors.

use std::collections::HashMap;

use super::*;

#[test]
fn a_node_reads_the_same_settings_from_its_own_format() {
    let c: Config = serde_json::from_str(
        r#"{"kv_dir": "/n/kv", "migration": "online", "online_pause_budget_ms": 250,
            "backend": {"type": "postgres", "host": "/run/pg", "user": "node",
                        "dbname": "node", "pool_size": "4", "require_ssl": false}}"#,
    )
    .unwrap();
    assert_eq!(c.kv_dir, Some(PathBuf::from("/n/kv")));
    assert_eq!(c.migration, MigrationPolicy::Online);
    assert_eq!(c.online_pause_budget, std::time::Duration::from_millis(250));
    assert_eq!(
        c.backend,
        BackendConfig::Postgres {
            url: "postgres://node@:5432/node?host=%2Frun%2Fpg&sslmode=disable".into(),
            pool_size: 4
        }
    );
    assert_eq!(
        c,
        Config::from_toml(
            "kv_dir = \"/n/kv\"\nmigration = \"online\"\nonline_pause_budget_ms = 250\n\
             [backend]\ntype = \"postgres\"\nhost = \"/run/pg\"\nuser = \"node\"\n\
             dbname = \"node\"\npool_size = 4\nrequire_ssl = false\n"
        )
        .unwrap(),
        "the file and any other format resolve alike"
    );
    for (json, error) in [
        (
            r#"{"backend": {"type": "sqlite", "file": "/n.db", "port": 1}}"#,
            "backend.port: not a setting of the sqlite backend",
        ),
        (
            r#"{"backend": {"type": "sqlite", "file": "/n.db"}, "extra": 1}"#,
            "extra: unknown setting",
        ),
        (
            r#"{"backend": {"type": "sqlite"}}"#,
            "the sqlite backend needs backend.file",
        ),
    ] {
        let e = serde_json::from_str::<Config>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains(error), "{json}: {e}");
    }
}

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
    assert!(Config::from_toml("[backend]\ntype = \"sqlite\"\nfile = \"x\"\nextra = 1\n").is_err());
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
