//! The places a command reads or writes (`kv:DIR`, `sqlite:PATH`,
//! `postgres://…`), parsed once, by clap, into [`Location`]s: a wrong one is
//! refused before anything runs, and the refusal never shows a password.

use std::ffi::OsStr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use nodestore::Location;

/// Which locations an argument takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Accepts {
    /// A key-value or SQL database.
    Any,
    /// A SQL database.
    Sql,
    /// A key-value database.
    Kv,
}

/// Parses an argument into a [`Location`] of the kinds it accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocationParser(pub(crate) Accepts);

impl TypedValueParser for LocationParser {
    type Value = Location;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Location, clap::Error> {
        let name = arg
            .and_then(|a| a.get_long())
            .map(|l| format!("--{l}: "))
            .unwrap_or_default();
        // clap's own message would repeat the value, password and all.
        let refuse =
            |why: String| clap::Error::raw(ErrorKind::InvalidValue, format!("{name}{why}\n"));
        let text = value
            .to_str()
            .ok_or_else(|| refuse("not valid UTF-8".into()))?;
        let location: Location = text.parse().map_err(|e| match e {
            nodestore::Error::Config(why) => refuse(why),
            other => refuse(other.to_string()),
        })?;
        match (self.0, &location) {
            (Accepts::Sql, Location::Kv(_)) => Err(refuse(format!(
                "{location}: expected a SQL database (sqlite:PATH or postgres://…)"
            ))),
            (Accepts::Kv, Location::Sqlite(_) | Location::Postgres(_)) => Err(refuse(format!(
                "{location}: expected a key-value database (kv:DIR)"
            ))),
            _ => Ok(location),
        }
    }
}

/// The SQL target given on the command line, or else the one the
/// environment names, as sqlx's `DATABASE_URL` does: `NODESTORE_POSTGRES_URL`
/// or `NODESTORE_SQLITE_FILE` (`NODESTORE_BACKEND` decides when both are set).
pub(crate) fn sql_or_environment(
    given: Option<Location>,
    flag: &str,
) -> Result<Location, nodestore::Error> {
    if let Some(location) = given {
        return Ok(location);
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let postgres = var("NODESTORE_POSTGRES_URL");
    let sqlite = var("NODESTORE_SQLITE_FILE");
    let chosen = match (postgres, sqlite, var("NODESTORE_BACKEND").as_deref()) {
        (Some(url), None, _) | (Some(url), Some(_), Some("postgres")) => url.parse::<Location>()?,
        (None, Some(file), _) | (Some(_), Some(file), Some("sqlite")) => {
            Location::Sqlite(file.into())
        }
        (Some(_), Some(_), _) => {
            return Err(nodestore::Error::Config(format!(
                "{flag} not given, and both NODESTORE_POSTGRES_URL and NODESTORE_SQLITE_FILE are \
                 set: give {flag}, or NODESTORE_BACKEND=postgres or sqlite"
            )));
        }
        (None, None, _) => {
            return Err(nodestore::Error::Config(format!(
                "no SQL database: give {flag} sqlite:PATH or postgres://…, or set \
                 NODESTORE_POSTGRES_URL or NODESTORE_SQLITE_FILE"
            )));
        }
    };
    match chosen {
        Location::Kv(_) => Err(nodestore::Error::Config(
            "NODESTORE_POSTGRES_URL: expected postgres://…".into(),
        )),
        sql => Ok(sql),
    }
}
