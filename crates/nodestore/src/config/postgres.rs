//! The PostgreSQL backend's settings: a URL as given, or one composed from
//! LiT's separate settings, with the pool, the timeout and TLS
//! (docs/design.md §3.5).

use super::{BackendConfig, Key, SEPARATE_POSTGRES, Setting, Settings, default_pool_size};
use crate::Error;

/// The PostgreSQL URL the settings describe: the `url` as given, or one
/// composed from LiT's separate settings; pool size, connect timeout and
/// TLS settings apply to either form (docs/design.md §3.5).
pub(super) fn postgres_backend<'a>(
    settings: &'a Settings,
    required: &dyn Fn(Key) -> Result<&'a Setting, Error>,
) -> Result<BackendConfig, Error> {
    let get = |k: Key| settings.get(&k);
    let mut url = match get(Key::Url) {
        Some(url) => {
            if let Some(other) = SEPARATE_POSTGRES.into_iter().find_map(get) {
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
            let user = required(Key::User)?;
            let dbname = required(Key::Dbname)?;
            let password = match (get(Key::Password), get(Key::PasswordFile)) {
                (Some(_), Some(file)) => {
                    return Err(file.error("give either password or password_file, not both"));
                }
                (Some(p), None) => Some(p.value.clone()),
                (None, Some(file)) => Some(read_password(file)?),
                (None, None) => None,
            };
            let host = get(Key::Host).map_or("localhost", |h| h.value.as_str());
            let port: u16 = match get(Key::Port) {
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
    if let Some(t) = get(Key::ConnectTimeout) {
        let secs: u64 = t.number("a number of seconds")?;
        params.push(format!("connect_timeout={secs}"));
    }
    match (get(Key::RequireSsl), get(Key::Sslmode)) {
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
    for (key, param) in [
        (Key::Sslrootcert, "sslrootcert"),
        (Key::Sslcert, "sslcert"),
        (Key::Sslkey, "sslkey"),
    ] {
        if let Some(v) = get(key) {
            params.push(format!("{param}={}", encode(&v.value)));
        }
    }
    if !params.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&params.join("&"));
    }
    let pool_size = match get(Key::MaxConnections) {
        Some(n) => {
            let n: usize = n.number("a number of connections from 1")?;
            if n == 0 {
                return Err(settings[&Key::MaxConnections].error("must be at least 1"));
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
