//! `nodestore dump` and `nodestore import`: every store as one canonical
//! JSON document, and back into a new key-value database.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use nodestore::dump::Dump;
use nodestore::{Error, Location};

use super::progress::Bars;

/// The exit code of a dump that was written but leaves out damaged records.
pub(crate) const EXIT_PARTIAL: u8 = 2;

pub(crate) async fn dump(from: &Location, out: Option<&Path>) -> Result<ExitCode, Error> {
    let bars = Arc::new(Bars::new(false));
    // A key-value database is dumped as far as it can be read, and what was
    // left out is listed (docs/cli.md).
    let (d, unreadable) = match from {
        Location::Kv(dir) => nodestore::dump::dump_kv_salvaged(dir, Some(bars.clone())).await?,
        sql => (
            nodestore::dump::dump_observed(sql, Some(bars.clone())).await?,
            Vec::new(),
        ),
    };
    drop(bars);
    match out {
        Some(path) => d.write(path)?,
        None => say_raw!("{}", d.to_json()?),
    }
    if unreadable.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    warn_line!(
        "warning: {from} is damaged: the dump leaves out {} damaged record(s) or key range(s):",
        unreadable.len()
    );
    for u in &unreadable {
        warn_line!("  {u}");
    }
    Ok(ExitCode::from(EXIT_PARTIAL))
}

pub(crate) async fn import(to: &Location, file: &PathBuf) -> Result<ExitCode, Error> {
    let Location::Kv(dir) = to else {
        return Err(Error::Config(format!(
            "{to}: import writes a key-value database (kv:DIR)"
        )));
    };
    let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
        path: file.clone(),
        source,
    })?;
    let d = Dump::from_json(&text)?;
    nodestore::dump::import(&d, dir).await?;
    say!(
        "imported {} accounts, {} sessions, {} kv-store entries, {} privacy pairs, {} actions into {}",
        d.accounts.len(),
        d.sessions.len(),
        d.kv_entries.len(),
        d.privacy_pairs.len(),
        d.actions.len(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
