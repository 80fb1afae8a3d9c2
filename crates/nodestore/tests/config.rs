//! A node configured the way LiT configures PostgreSQL (separate host,
//! port, user, password file, database name, pool size, timeout and TLS
//! settings) or through `NODESTORE_*`-style settings reaches the same
//! database as with a URL.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use nodestore::{BackendConfig, Config, Stores};
use testkit::sql::{SqlFixture, postgres, sqlite};

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// host, port, user, dbname of a test database URL
/// (`postgresql://user@host:port/dbname`, the host maybe a socket directory).
fn parts(url: &str) -> (String, String, String, String) {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (user, rest) = rest.split_once('@').unwrap();
    let user = user.split_once(':').map_or(user, |(u, _)| u);
    let (hostport, dbname) = rest.split_once('/').unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap();
    (
        percent_decode(host),
        port.to_owned(),
        user.to_owned(),
        dbname.to_owned(),
    )
}

async fn separate_settings_reach_the_same_database(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    let text = match fx {
        SqlFixture::Sqlite(d) => format!(
            "[backend]\ntype = \"sqlite\"\nfile = \"{}\"\n",
            d.path().join("node.db").display()
        ),
        SqlFixture::Postgres(db) => {
            let (host, port, user, dbname) = parts(db.url());
            let pw = dir.path().join("pg-password");
            // The test server trusts local connections; the password is
            // sent and ignored, which is what this checks can be done.
            std::fs::write(&pw, "Pw with spaces/and@signs\n").unwrap();
            format!(
                "[backend]\ntype = \"postgres\"\nhost = \"{host}\"\nport = {port}\nuser = \"{user}\"\n\
                 password_file = \"{}\"\ndbname = \"{dbname}\"\nmax_connections = 3\n\
                 connect_timeout = 5\nsslmode = \"prefer\"\n",
                pw.display()
            )
        }
    };
    std::fs::write(&file, text).unwrap();
    let config = Config::load_with(Some(&file), |_| None).unwrap();
    if let BackendConfig::Postgres { url, pool_size } = &config.backend {
        assert_eq!(*pool_size, 3);
        assert!(url.contains("connect_timeout=5"), "{url}");
    }
    let stores = Stores::open(&config).await.unwrap();
    let a = stores
        .accounts
        .new_account(5, None, "configured")
        .await
        .unwrap();
    stores.close().await.unwrap();

    // The same database through its URL holds the account.
    let url_config = Config::new(match fx {
        SqlFixture::Sqlite(d) => BackendConfig::Sqlite {
            file: d.path().join("node.db"),
        },
        SqlFixture::Postgres(db) => BackendConfig::Postgres {
            url: db.url().to_owned(),
            pool_size: 2,
        },
    });
    let stores = Stores::open(&url_config).await.unwrap();
    assert_eq!(
        stores.accounts.account(a.id).await.unwrap().label,
        "configured"
    );
    stores.close().await.unwrap();
}

testkit::backend_tests!(sqlite => sqlite; separate_settings_reach_the_same_database);
testkit::backend_tests!(postgres => postgres; separate_settings_reach_the_same_database);
