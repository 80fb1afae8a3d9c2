//! `nodestore dump` and `nodestore import`: every store as one canonical
//! JSON document, and back into a new key-value database.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use nodestore::dump::Dump;
use nodestore::{Error, Location};

use super::progress::Bars;

pub(crate) async fn dump(from: &Location, out: Option<&Path>) -> Result<ExitCode, Error> {
    let bars = Arc::new(Bars::new(false));
    let d = nodestore::dump::dump_observed(from, Some(bars.clone())).await?;
    drop(bars);
    match out {
        Some(path) => d.write(path)?,
        None => say_raw!("{}", d.to_json()?),
    }
    Ok(ExitCode::SUCCESS)
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
