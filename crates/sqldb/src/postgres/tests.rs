//! Unit tests of the PostgreSQL executor's pure parts.

use super::*;

fn describe(url: &str) -> String {
    describe_config(&crate::pg_tls::parse_url(url).unwrap().0)
}

#[test]
fn descriptions_keep_every_part_that_chooses_the_database_and_never_the_password() {
    let cases = [
        (
            "postgres://u:secret@localhost/db",
            "postgres://u@localhost:5432/db",
        ),
        (
            "postgresql://u:secret@db.internal:6543/node",
            "postgres://u@db.internal:6543/node",
        ),
        // The driver tries the URL's host, then the query's.
        (
            "postgres://u:secret@localhost/db?host=/run/pg&port=5433",
            "postgres://u@/db?host=localhost,/run/pg&port=5432,5433",
        ),
        (
            "postgres://u@%2Frun%2Fpg:5433/db",
            "postgres://u@/db?host=/run/pg&port=5433",
        ),
        (
            "postgres://u@a:1,b:2/db?options=-c%20search_path%3Dnode",
            "postgres://u@/db?host=a,b&port=1,2&options=-c search_path=node",
        ),
        (
            "host=/tmp port=7 user=u dbname=x password=secret",
            "postgres://u@/x?host=/tmp&port=7",
        ),
    ];
    for (url, want) in cases {
        let got = describe(url);
        assert_eq!(got, want, "{url}");
        assert!(!got.contains("secret"), "{got}");
    }
    // The socket directory and the port tell databases apart.
    assert_ne!(
        describe("postgres://u@localhost/db?host=/run/pg&port=5433"),
        describe("postgres://u@localhost/db")
    );
    assert_ne!(
        describe("postgres://u@localhost/db?host=/run/pg&port=5433"),
        describe("postgres://u@localhost/db?host=/run/other&port=5433")
    );
}
