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
