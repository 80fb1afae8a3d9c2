//! The one function that renders a database target for people: any URL
//! (whatever its scheme and spelling), a `key=value` connection string, or
//! a `sqlite:`/`kv:` path, never with a password.

/// Keys whose values are secrets in connection strings and URL queries.
const SECRET_KEYS: [&str; 3] = ["password", "sslpassword", "passfile"];

/// `s` with every password removed: the password of a URL's user part,
/// and the value of every `password`-like parameter, whether in a URL
/// query or a `key=value` string. Anything else is kept as it is.
pub fn target(s: &str) -> String {
    match s.split_once("://") {
        Some((scheme, rest)) => url(scheme, rest),
        None if s.contains('=') => conninfo(s),
        None => s.to_owned(),
    }
}

fn is_secret(key: &str) -> bool {
    SECRET_KEYS
        .iter()
        .any(|k| key.trim().eq_ignore_ascii_case(k))
}

fn url(scheme: &str, rest: &str) -> String {
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The user part ends at the last '@' before the path.
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if is_secret(k) => format!("{k}=(hidden)"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn conninfo(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let key = &rest[..eq];
        // libpq allows spaces after '='.
        let spaced = &rest[eq + 1..];
        let after = spaced.trim_start();
        let gap = &spaced[..spaced.len() - after.len()];
        // A value is quoted ('…' with \\' escapes) or runs to the next space.
        let len = if let Some(q) = after.strip_prefix('\'') {
            let mut i = 0;
            let b = q.as_bytes();
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            (i + 2).min(after.len())
        } else {
            after.find(char::is_whitespace).unwrap_or(after.len())
        };
        out.push_str(key);
        out.push('=');
        out.push_str(gap);
        if is_secret(key) {
            out.push_str("(hidden)");
        } else {
            out.push_str(&after[..len]);
        }
        rest = &after[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn passwords_never_survive() {
        let cases = [
            ("postgres://u:PW@h:5432/db", "postgres://u@h:5432/db"),
            ("Postgres://u:PW@h/db", "Postgres://u@h/db"),
            (
                "POSTGRESQL://u:PW@h/db?sslmode=require",
                "POSTGRESQL://u@h/db?sslmode=require",
            ),
            ("mysql://u:PW@h/db", "mysql://u@h/db"),
            (
                "postgres://u@h/db?password=PW&port=1",
                "postgres://u@h/db?password=(hidden)&port=1",
            ),
            ("postgres://u:P%40W@h/db", "postgres://u@h/db"),
            ("postgres://u:P@W@h/db", "postgres://u@h/db"),
            (
                "host=h user=u password=PW dbname=d",
                "host=h user=u password=(hidden) dbname=d",
            ),
            (
                "host=h password='P W' dbname=d",
                "host=h password=(hidden) dbname=d",
            ),
            ("host=h PASSWORD = PW", "host=h PASSWORD = (hidden)"),
            ("sqlite:/var/lib/node.db", "sqlite:/var/lib/node.db"),
            ("kv:/data/kv", "kv:/data/kv"),
        ];
        for (input, want) in cases {
            let got = target(input);
            assert_eq!(got, want, "{input}");
            assert!(!got.contains("PW") && !got.contains("P W"), "{got}");
        }
    }
}
