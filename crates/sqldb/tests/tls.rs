//! TLS to PostgreSQL with libpq's `sslmode` meanings, against a local
//! server with `ssl = on` whose certificate the test signs with a CA it
//! makes itself (docs/design.md §3.5). Every mode is tried, and each
//! refusal: a CA that did not sign the server, a host name the certificate
//! was not issued for, a client certificate missing where the server
//! demands one.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sqldb::{Db, PostgresDb, PostgresOptions, Sql};
use testkit::cluster::{LocalCluster, ServerTls};

/// A CA and what it signed, as PEM files in a directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(names: &[&str], common_name: &str, issuer: &Issuer<'_, &KeyPair>) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The server's certificate is issued for `localhost` only, by "test CA";
/// "other CA" signed nothing the server shows. `certuser` must connect with
/// a client certificate over TLS.
fn make_pki() -> (Pki, ServerTls) {
    let (ca_params, ca_key, ca_pem) = ca("nodestore test CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let (server_cert, server_key) = leaf(&["localhost"], "localhost", &issuer);
    let (client_cert, client_key) = leaf(&[], "certuser", &issuer);
    let (_, _, other_ca_pem) = ca("some other CA");
    let pki = Pki {
        dir: tempfile::tempdir().unwrap(),
    };
    for (name, pem) in [
        ("ca.pem", &ca_pem),
        ("other-ca.pem", &other_ca_pem),
        ("client.pem", &client_cert),
        ("client.key", &client_key),
        ("ca.key", &ca_key.serialize_pem()),
    ] {
        std::fs::write(pki.path(name), pem).unwrap();
    }
    let server = ServerTls {
        cert_pem: server_cert,
        key_pem: server_key,
        ca_pem,
        hba_first: vec![
            "hostssl all certuser 127.0.0.1/32 cert".into(),
            "host all certuser 127.0.0.1/32 reject".into(),
        ],
    };
    (pki, server)
}

fn url(host: &str, port: u16, user: &str, params: &[(&str, &Path)], mode: &str) -> String {
    let mut url = format!("postgres://{user}@{host}:{port}/postgres?sslmode={mode}");
    for (k, v) in params {
        url.push_str(&format!("&{k}={}", v.display()));
    }
    url
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (the TLS tests make certificates with it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client certificate for `certuser`, version 1, made with PostgreSQL's
/// documented commands (`openssl req`, then `openssl x509 -req`) and the
/// test CA: its certificate and key files.
fn v1_client_cert(pki: &Pki) -> (PathBuf, PathBuf) {
    let p = |n: &str| pki.path(n).display().to_string();
    openssl(&[
        "req",
        "-new",
        "-nodes",
        "-text",
        "-out",
        &p("v1.csr"),
        "-keyout",
        &p("v1.key"),
        "-subj",
        "/CN=certuser",
    ]);
    sign(pki, "v1.crt", &[]);
    (pki.path("v1.crt"), pki.path("v1.key"))
}

/// Signs the request `v1.csr` with the test CA as PostgreSQL's
/// documentation does (`openssl x509 -req`), with `extra` arguments, into
/// `out`.
fn sign(pki: &Pki, out: &str, extra: &[&str]) {
    let p = |n: &str| pki.path(n).display().to_string();
    let (csr, ca, key, out) = (p("v1.csr"), p("ca.pem"), p("ca.key"), p(out));
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-days",
        "365",
        "-CA",
        &ca,
        "-CAkey",
        &key,
        "-CAcreateserial",
        "-out",
        &out,
    ];
    args.extend_from_slice(extra);
    openssl(&args);
}

/// The same request signed again as the refusal says (with an extension):
/// version 3.
fn v3_again(pki: &Pki) -> PathBuf {
    std::fs::write(pki.path("v3.ext"), "basicConstraints=CA:FALSE").unwrap();
    let ext = pki.path("v3.ext").display().to_string();
    sign(pki, "v3.crt", &["-extfile", &ext]);
    pki.path("v3.crt")
}

async fn connect(url: &str) -> Result<Db, String> {
    PostgresDb::connect(url, PostgresOptions::with_pool_size(1))
        .await
        .map(Db::from)
        .map_err(|e| e.to_string())
}

/// Whether the session is encrypted, as the server sees it.
async fn encrypted(db: &Db) -> bool {
    db.read(|tx| {
        Box::pin(async move {
            let rows = tx
                .query_sql(Sql::fixed(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    vec![],
                ))
                .await?;
            rows[0].bool(0)
        })
    })
    .await
    .unwrap()
}

mod postgres {
    use super::*;

    #[tokio::test]
    async fn tls_modes_behave_as_libpq_s() {
        tls_matrix().await;
    }
}

async fn tls_matrix() {
    let Some(_) = testkit::cluster::find_server_bin() else {
        assert!(
            std::env::var_os("NODESTORE_REQUIRE_POSTGRES").is_none(),
            "PostgreSQL server binaries are required but missing"
        );
        return;
    };
    let (pki, server) = make_pki();
    let cluster = LocalCluster::start_with_tls(Some(std::process::id()), &server).unwrap();
    let port = cluster.port();
    let ca = pki.path("ca.pem");
    let other_ca = pki.path("other-ca.pem");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let admin = connect(&url("127.0.0.1", port, "postgres", &[], "disable"))
        .await
        .unwrap();
    admin
        .write(|tx| {
            Box::pin(async move {
                tx.execute_sql(Sql::fixed("CREATE ROLE certuser LOGIN", vec![]))
                    .await
            })
        })
        .await
        .unwrap();

    // Modes that connect, and whether the session is encrypted.
    let accepted: Vec<(&str, String, bool)> = vec![
        (
            "disable",
            url("127.0.0.1", port, "postgres", &[], "disable"),
            false,
        ),
        (
            "prefer",
            url("127.0.0.1", port, "postgres", &[], "prefer"),
            true,
        ),
        (
            "require",
            url("127.0.0.1", port, "postgres", &[], "require"),
            true,
        ),
        (
            "require with the right CA",
            url(
                "127.0.0.1",
                port,
                "postgres",
                &[("sslrootcert", &ca)],
                "require",
            ),
            true,
        ),
        (
            "verify-ca: the name is not checked",
            url(
                "127.0.0.1",
                port,
                "postgres",
                &[("sslrootcert", &ca)],
                "verify-ca",
            ),
            true,
        ),
        (
            "verify-full for the certificate's host",
            url(
                "localhost",
                port,
                "postgres",
                &[("sslrootcert", &ca)],
                "verify-full",
            ),
            true,
        ),
        (
            "a client certificate",
            url(
                "localhost",
                port,
                "certuser",
                &[("sslrootcert", &ca), ("sslcert", &cert), ("sslkey", &key)],
                "verify-full",
            ),
            true,
        ),
    ];
    for (what, url, tls) in &accepted {
        let db = connect(url)
            .await
            .unwrap_or_else(|e| panic!("{what}: refused: {e}"));
        assert_eq!(encrypted(&db).await, *tls, "{what}");
    }

    // Refusals, each with the reason the operator needs.
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "verify-ca with a CA that did not sign the server",
            url(
                "127.0.0.1",
                port,
                "postgres",
                &[("sslrootcert", &other_ca)],
                "verify-ca",
            ),
            "certificate",
        ),
        (
            "verify-full with a CA that did not sign the server",
            url(
                "localhost",
                port,
                "postgres",
                &[("sslrootcert", &other_ca)],
                "verify-full",
            ),
            "certificate",
        ),
        (
            "require with a root CA checks the chain, as libpq does",
            url(
                "127.0.0.1",
                port,
                "postgres",
                &[("sslrootcert", &other_ca)],
                "require",
            ),
            "certificate",
        ),
        (
            "verify-full for a host the certificate was not issued for",
            url(
                "127.0.0.1",
                port,
                "postgres",
                &[("sslrootcert", &ca)],
                "verify-full",
            ),
            "certificate",
        ),
        (
            "no client certificate where the server demands one",
            url(
                "localhost",
                port,
                "certuser",
                &[("sslrootcert", &ca)],
                "verify-full",
            ),
            "client certificate",
        ),
        (
            "a client certificate without TLS",
            url("localhost", port, "certuser", &[], "disable"),
            "certuser",
        ),
        (
            "a missing root CA file",
            url(
                "localhost",
                port,
                "postgres",
                &[("sslrootcert", Path::new("/nonexistent/ca.pem"))],
                "verify-full",
            ),
            "sslrootcert /nonexistent/ca.pem",
        ),
    ];
    // A version 1 client certificate, made as PostgreSQL's documentation
    // makes one (`openssl x509 -req`): refused, naming the version and how
    // to make a version 3 one, which is then accepted.
    let v1 = v1_client_cert(&pki);
    let made = |cert: &Path| {
        url(
            "localhost",
            port,
            "certuser",
            &[("sslrootcert", &ca), ("sslcert", cert), ("sslkey", &v1.1)],
            "verify-full",
        )
    };
    let e = match connect(&made(&v1.0)).await {
        Ok(_) => panic!("a version 1 client certificate: connected"),
        Err(e) => e,
    };
    assert!(
        e.contains("X.509 version 1") && e.contains("basicConstraints"),
        "{e}"
    );
    let v3 = v3_again(&pki);
    let db = connect(&made(&v3))
        .await
        .unwrap_or_else(|e| panic!("the version 3 certificate made as the refusal says: {e}"));
    assert!(encrypted(&db).await);
    for (what, url, needle) in &refused {
        let e = match connect(url).await {
            Ok(_) => panic!("{what}: connected"),
            Err(e) => e,
        };
        assert!(e.contains(needle), "{what}: {e}");
    }
    cluster.stop().unwrap();
}
