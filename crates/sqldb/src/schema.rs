//! Schema steps: what one is, how it is checksummed, and how it is
//! written once and adapted per dialect.
//!
//! # Steps
//! Every step has a version (1, 2, 3, … without gaps), a name and a kind: a
//! SQL file from `migrations/` embedded at compile time, or a code step, a
//! Rust function the caller supplies to the [runner](crate::migrate) that
//! gets the open transaction.
//!
//! # Who owns which step
//! Each crate declares the steps that make its tables, beside the
//! identifiers of those tables: this crate declares step 1, nodestore's
//! own bookkeeping ([`NODESTORE`]: the database's identity and the record
//! of key-value migrations), the slot of the code step 7 ([`KV_TO_SQL`])
//! and its builtin step 11 ([`SQLITE_GO_TIME_TEXT`]); each store crate
//! declares its tables' steps in its `sql::schema` module; the migrator
//! declares its staging table's step and composes them all, in order, into
//! the one list the runner is given (`migrator::schema::STEPS`,
//! docs/design.md §3.1). Step 7 moves a node's key-value data into SQL
//! (LiT's `kvdb_to_sql`); it has no SQL and no down step, so a downgrade
//! can never undo and re-run it.
//!
//! # The portable dialect
//! The files are written once, in SQL that SQLite runs as it is. For
//! PostgreSQL, [`adapt`] rewrites three type spellings and one function, token by token
//! (comments and string literals are never touched, and only whole words
//! match, case-insensitively):
//!
//! | portable | PostgreSQL |
//! |---|---|
//! | `INTEGER PRIMARY KEY` | `BIGSERIAL PRIMARY KEY` |
//! | `BLOB` | `BYTEA` |
//! | `TIMESTAMP` | `TIMESTAMP WITHOUT TIME ZONE` |
//! | `randomblob(16)` | `uuid_send(gen_random_uuid())` (16 random bytes) |
//!
//! Everything else must mean the same on both engines: `BIGINT`,
//! `SMALLINT`, `INTEGER`, `TEXT`, `BOOLEAN`, `UNIQUE`, `REFERENCES … ON
//! DELETE CASCADE`, `CHECK`, and partial indexes (`CREATE UNIQUE INDEX …
//! WHERE …`). The test `sqlite_and_postgres_schemas_match` proves the two
//! resulting schemas have the same tables, columns, types, nullability,
//! keys, checks and indexes.
//!
//! Consequences to keep in mind: on SQLite `INTEGER PRIMARY KEY` is the rowid
//! and may reuse the id of a deleted last row, PostgreSQL never reuses ids;
//! `INTEGER` is 32 bits on PostgreSQL; timestamps are text on SQLite (see
//! [`crate::time`]).

use sha2::{Digest, Sha256};

use crate::tx::Dialect;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// SQL in the portable dialect.
    Sql(&'static str),
    /// A Rust function supplied to the runner (see [`crate::migrate::CodeStep`]).
    Code,
    /// A Rust function of this crate that the runner always has: a change
    /// SQL cannot say the same way on both engines.
    Builtin(Builtin),
}

/// The steps written in Rust inside this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// SQLite's timestamps rewritten from nodestore's earlier text form to
    /// litd's (Go's) `convert_sqlite_text` (`crate::time`); nothing on
    /// PostgreSQL.
    GoTimeText,
}

impl Builtin {
    /// Runs the step in `tx`.
    pub(crate) async fn run(self, tx: &mut dyn crate::tx::Tx) -> Result<(), crate::BoxError> {
        match self {
            Builtin::GoTimeText => crate::time::convert_sqlite_text(tx).await,
        }
    }
}

/// One schema step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// 1-based, contiguous.
    pub version: i64,
    /// A short stable name, recorded with the version.
    pub name: &'static str,
    /// The SQL or the code slot.
    pub kind: StepKind,
}

impl Step {
    /// SHA-256 over the step's statements: its SQL without comments, each
    /// run of whitespace outside literals read as one space. Correcting a
    /// comment or re-wrapping a line (or a checkout with CRLF endings) is not
    /// an edit; changing a word, a literal or a quoted name is. A code
    /// step's checksum covers its name, so renaming it is detected.
    pub fn checksum(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        match self.kind {
            StepKind::Sql(sql) => h.update(statements_only(sql).as_bytes()),
            StepKind::Code => {
                h.update(b"code step: ");
                h.update(self.name.as_bytes());
            }
            StepKind::Builtin(_) => {
                h.update(b"builtin step: ");
                h.update(self.name.as_bytes());
            }
        }
        h.finalize().to_vec()
    }

    /// Whether `recorded`, the checksum a database recorded for this step,
    /// matches the step: today's checksum, or the whole-file checksum that
    /// databases made before comments were left out recorded for the same
    /// statements ([`EARLIER_CHECKSUMS`]).
    pub fn accepts(&self, recorded: &[u8]) -> bool {
        recorded == self.checksum().as_slice()
            || EARLIER_CHECKSUMS.iter().any(|(version, name, hex)| {
                *version == self.version && *name == self.name && hex_of(recorded).as_str() == *hex
            })
    }

    /// The step's SQL in `dialect`, or `None` for a code step.
    pub fn sql_for(&self, dialect: Dialect) -> Option<String> {
        match self.kind {
            StepKind::Sql(sql) => Some(adapt(sql, dialect)),
            StepKind::Code | StepKind::Builtin(_) => None,
        }
    }
}

/// The version of the key-value to SQL code step.
pub const KV_TO_SQL_VERSION: i64 = 7;

/// Step 1, nodestore's own bookkeeping: the database's identity and the
/// record of key-value migrations.
pub const NODESTORE: Step = Step {
    version: 1,
    name: "nodestore",
    kind: StepKind::Sql(include_str!("../../../migrations/0001_nodestore.sql")),
};

/// The slot of the code step that moves a node's key-value data into SQL
/// (LiT's `kvdb_to_sql`): the caller supplies its implementation
/// ([`crate::migrate::Migrator::code_step`]).
pub const KV_TO_SQL: Step = Step {
    version: KV_TO_SQL_VERSION,
    name: "kvdb_to_sql",
    kind: StepKind::Code,
};

/// Step 11, this crate's own: SQLite's timestamps rewritten in Go's text
/// form ([`Builtin::GoTimeText`]).
pub const SQLITE_GO_TIME_TEXT: Step = Step {
    version: 11,
    name: "sqlite_go_time_text",
    kind: StepKind::Builtin(Builtin::GoTimeText),
};

/// Every table `steps` create, with the runner's tracking tables (its own
/// and litd's): a database holding any other table was not made by
/// nodestore, and the runner refuses to write into it (see
/// [`crate::migrate`]).
pub fn known_tables_of(steps: &[Step]) -> Vec<String> {
    let mut out = vec![
        crate::migrate::TRACKING_TABLE.to_owned(),
        crate::litd::SCHEMA_MIGRATIONS.to_owned(),
        crate::litd::MIGRATION_TRACKER.to_owned(),
    ];
    for step in steps {
        if let StepKind::Sql(sql) = step.kind {
            out.extend(created_tables(sql));
        }
    }
    out
}

/// The tables the SQL steps of `steps` numbered `versions` create, each
/// with its columns in declaration order: what litd's schema holds
/// (crate::litd).
pub fn tables_of_steps(
    steps: &[Step],
    versions: std::ops::RangeInclusive<i64>,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    for step in steps.iter().filter(|s| versions.contains(&s.version)) {
        if let StepKind::Sql(sql) = step.kind {
            out.extend(table_columns(sql));
        }
    }
    out
}

/// Each `CREATE TABLE` of `sql` with its column names: the first word of
/// each item of the parenthesised list that is not a table constraint.
fn table_columns(sql: &str) -> Vec<(String, Vec<String>)> {
    const CONSTRAINTS: [&str; 5] = ["PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "CONSTRAINT"];
    let tokens: Vec<Token<'_>> = tokenize(sql)
        .into_iter()
        .filter(|t| match t {
            Token::Word(_) => true,
            Token::Other(o) => !o.trim().is_empty() && !o.starts_with("--") && !o.starts_with("/*"),
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 < tokens.len() {
        let is_create = matches!((&tokens[i], &tokens[i + 1], &tokens[i + 2], &tokens[i + 3]),
            (Token::Word(c), Token::Word(t), Token::Word(_), Token::Other("("))
                if c.eq_ignore_ascii_case("CREATE") && t.eq_ignore_ascii_case("TABLE"));
        if !is_create {
            i += 1;
            continue;
        }
        let Token::Word(name) = tokens[i + 2] else {
            i += 1;
            continue;
        };
        let mut columns = Vec::new();
        let (mut depth, mut item_start) = (1, true);
        i += 4;
        while i < tokens.len() && depth > 0 {
            match tokens[i] {
                Token::Other("(") => depth += 1,
                Token::Other(")") => depth -= 1,
                Token::Other(",") if depth == 1 => {
                    item_start = true;
                    i += 1;
                    continue;
                }
                Token::Word(w)
                    if item_start
                        && depth == 1
                        && !CONSTRAINTS.iter().any(|c| w.eq_ignore_ascii_case(c)) =>
                {
                    columns.push(w.to_ascii_lowercase());
                }
                _ => {}
            }
            item_start = false;
            i += 1;
        }
        out.push((name.to_ascii_lowercase(), columns));
    }
    out
}

/// The names of the tables `CREATE TABLE` statements in `sql` create.
fn created_tables(sql: &str) -> Vec<String> {
    let words: Vec<&str> = tokenize(sql)
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w),
            Token::Other(_) => None,
        })
        .collect();
    words
        .windows(3)
        .filter(|w| w[0].eq_ignore_ascii_case("CREATE") && w[1].eq_ignore_ascii_case("TABLE"))
        .map(|w| w[2].to_ascii_lowercase())
        .collect()
}

/// SHA-256 (hex) of each of nodestore's SQL steps as whole files with line
/// endings normalised: the checksum databases recorded before checksums left
/// comments out. Each stands for the statements of today's file (only
/// comments changed since), and is accepted for it by [`Step::accepts`].
/// Never add to this list: a step edited from now on is a new step.
pub const EARLIER_CHECKSUMS: &[(i64, &str, &str)] = &[
    (
        1,
        "nodestore",
        "2b706ac63b06c4fa70a2bf5e54f825a49f3ab8192e163d37d1f28946e6e9f7dd",
    ),
    (
        2,
        "accounts",
        "a4a614164631d0a857ea37c1a74898004b20a0d8167b2a55b8795058b0d061a0",
    ),
    (
        3,
        "sessions",
        "5e0235a0382bc8e33a12eedf89f7538efca241aaa88b6efde97f9d839d1ed1a6",
    ),
    (
        4,
        "kvstores",
        "a9cadfef99d317fd00b48ed10aef8ed9e3ec839aa1fae650f73638b7c3816823",
    ),
    (
        5,
        "privacy_pairs",
        "55d2e9be828ea23d33a29200e44af91f443b917b5abf9d2a7af0266598c593e3",
    ),
    (
        6,
        "actions",
        "19a7496a5d10fc7ed0059d8ce051be91a9895faf9c385204dd29a2361615081b",
    ),
    (
        8,
        "actions_list_indexes",
        "0a73f580fdb8035829004feeaf43b9757b53dd87a666493076898805185e00d1",
    ),
    (
        9,
        "actions_actor_method_indexes",
        "c9087b783f687b49e40731548c32edc5015a7cba9213a61dda7cd8baab11748d",
    ),
];

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sql`'s statements as the checksum reads them: comments dropped, and
/// whitespace kept only where it separates two words (as one space).
fn statements_only(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let (mut space, mut after_word) = (false, false);
    for token in tokenize(sql) {
        match token {
            Token::Word(w) => {
                if space && after_word {
                    out.push(' ');
                }
                out.push_str(w);
                after_word = true;
            }
            Token::Other(o)
                if o.starts_with("--")
                    || o.starts_with("/*")
                    || o.chars().all(char::is_whitespace) =>
            {
                space = true;
                continue;
            }
            Token::Other(o) => {
                out.push_str(o);
                after_word = false;
            }
        }
        space = false;
    }
    out
}

/// Rewrites portable SQL for `dialect` (see the module docs for the rule).
pub fn adapt(sql: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => sql.to_owned(),
        Dialect::Postgres => adapt_postgres(sql),
    }
}

#[derive(Debug, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Other(&'a str),
}

/// Splits SQL into words and everything else; comments, string literals
/// and quoted identifiers come out as single `Other` tokens.
fn tokenize(sql: &str) -> Vec<Token<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Token::Word(&sql[start..i]));
            continue;
        }
        if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(bytes.len());
        } else if c == b'\'' || c == b'"' {
            i += 1;
            while i < bytes.len() {
                if bytes[i] == c {
                    // A doubled quote is an escaped quote inside the literal.
                    if bytes.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
        } else {
            // Advance one whole UTF-8 character.
            i += sql[i..].chars().next().map_or(1, char::len_utf8);
        }
        out.push(Token::Other(&sql[start..i]));
    }
    out
}

fn adapt_postgres(sql: &str) -> String {
    let tokens = tokenize(sql);
    // The next two words after token `i`, skipping whitespace only.
    let next_words = |i: usize| -> Vec<&str> {
        let mut words = Vec::new();
        for t in &tokens[i + 1..] {
            match t {
                Token::Word(w) => {
                    words.push(*w);
                    if words.len() == 2 {
                        break;
                    }
                }
                Token::Other(o) if o.trim().is_empty() => {}
                Token::Other(_) => break,
            }
        }
        words
    };
    let mut out = String::with_capacity(sql.len() + 64);
    let mut skip = 0;
    for (i, t) in tokens.iter().enumerate() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        match t {
            Token::Word(w) if w.eq_ignore_ascii_case("BLOB") => out.push_str("BYTEA"),
            // Only `randomblob(16)`: 16 random bytes as a bytea.
            Token::Word(w)
                if w.eq_ignore_ascii_case("RANDOMBLOB")
                    && matches!(tokens.get(i + 1), Some(Token::Other("(")))
                    && matches!(tokens.get(i + 2), Some(Token::Word("16")))
                    && matches!(tokens.get(i + 3), Some(Token::Other(")"))) =>
            {
                out.push_str("uuid_send(gen_random_uuid())");
                skip = 3;
            }
            Token::Word(w) if w.eq_ignore_ascii_case("TIMESTAMP") => {
                out.push_str("TIMESTAMP WITHOUT TIME ZONE")
            }
            Token::Word(w) if w.eq_ignore_ascii_case("INTEGER") => {
                let next = next_words(i);
                let is_pk = next.len() == 2
                    && next[0].eq_ignore_ascii_case("PRIMARY")
                    && next[1].eq_ignore_ascii_case("KEY");
                out.push_str(if is_pk { "BIGSERIAL" } else { w });
            }
            Token::Word(w) | Token::Other(w) => out.push_str(w),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_sql_is_the_portable_sql() {
        let sql = "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)";
        assert_eq!(adapt(sql, Dialect::Sqlite), sql);
    }

    #[test]
    fn postgres_rewrites_the_three_type_spellings() {
        let sql = "CREATE TABLE t (id integer  primary key, n INTEGER NOT NULL, b BLOB, t TIMESTAMP NOT NULL)";
        assert_eq!(
            adapt(sql, Dialect::Postgres),
            "CREATE TABLE t (id BIGSERIAL  primary key, n INTEGER NOT NULL, b BYTEA, \
             t TIMESTAMP WITHOUT TIME ZONE NOT NULL)"
        );
    }

    #[test]
    fn postgres_rule_leaves_comments_literals_and_longer_words_alone() {
        let sql = "-- a BLOB column\nCREATE TABLE blobs (last_timestamp BIGINT DEFAULT 'BLOB', \
                   \"TIMESTAMP\" TEXT /* INTEGER PRIMARY KEY */, k INTEGER, PRIMARY KEY (k))";
        assert_eq!(adapt(sql, Dialect::Postgres), sql);
    }

    #[test]
    fn postgres_rewrites_randomblob_16_only() {
        assert_eq!(
            adapt(
                "INSERT INTO t VALUES (randomblob(16), randomblob(8))",
                Dialect::Postgres
            ),
            "INSERT INTO t VALUES (uuid_send(gen_random_uuid()), randomblob(8))"
        );
    }

    #[test]
    fn a_table_constraint_is_not_a_column() {
        let c = table_columns("CREATE TABLE x (a INT, b TEXT, UNIQUE (a, b), CHECK (a > 0));");
        assert_eq!(
            c,
            vec![("x".to_owned(), vec!["a".to_owned(), "b".to_owned()])]
        );
    }

    #[test]
    fn checksums_read_statements_not_comments_or_layout() {
        let step = |sql: &'static str| Step {
            version: 1,
            name: "x",
            kind: StepKind::Sql(sql),
        };
        let plain = step("CREATE TABLE a (b TEXT);\nCREATE INDEX i ON a (b);\n");
        let commented = step(
            "-- Why a exists.\nCREATE TABLE a (\n    b TEXT -- the b\n);\n/* and i */\nCREATE INDEX i ON a (b);",
        );
        assert_eq!(plain.checksum(), commented.checksum());
        for edited in [
            "CREATE TABLE a (b BLOB);\nCREATE INDEX i ON a (b);\n",
            "CREATE TABLE a (b TEXT);\nCREATE UNIQUE INDEX i ON a (b);\n",
            "CREATE TABLE a (b TEXT DEFAULT '--x');\nCREATE INDEX i ON a (b);\n",
            "CREATE TABLE \"a b\" (b TEXT);\nCREATE INDEX i ON a (b);\n",
        ] {
            assert_ne!(plain.checksum(), step(edited).checksum(), "{edited}");
        }
        // Spaces inside a literal are the literal's.
        assert_ne!(
            step("SELECT 'a  b';").checksum(),
            step("SELECT 'a b';").checksum()
        );
    }

    #[test]
    fn checksums_ignore_line_ending_style_only() {
        let lf = Step {
            version: 1,
            name: "x",
            kind: StepKind::Sql("CREATE TABLE a (b TEXT);\n"),
        };
        let crlf = Step {
            version: 1,
            name: "x",
            kind: StepKind::Sql("CREATE TABLE a (b TEXT);\r\n"),
        };
        let edited = Step {
            version: 1,
            name: "x",
            kind: StepKind::Sql("CREATE TABLE a (c TEXT);\n"),
        };
        assert_eq!(lf.checksum(), crlf.checksum());
        assert_ne!(lf.checksum(), edited.checksum());
        let code = Step {
            version: 6,
            name: "kvdb_to_sql",
            kind: StepKind::Code,
        };
        let renamed = Step {
            version: 6,
            name: "other",
            kind: StepKind::Code,
        };
        assert_ne!(code.checksum(), renamed.checksum());
    }
}
