//! `nodestore verify`: every record of a key-value database against SQL.

use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use nodestore::verify::{VerifyReport, verify_observed};

use super::progress::Bars;
use nodestore::{Error, Location};

/// Exit code when verify found differences.
pub(crate) const EXIT_DIFFERENCES: u8 = 2;

pub(crate) async fn run(kv: &Path, sql: &Location, json: bool) -> Result<ExitCode, Error> {
    let db = super::migrate::sql_db(sql, true).await?;
    let bars = Arc::new(Bars::new(false));
    let report = verify_observed(kv, &db, Some(bars.clone())).await?;
    drop(bars);
    if json {
        say!(
            "{}",
            nodestore::json_text("the verify report", &report, false)?
        );
    } else {
        print(&report);
    }
    Ok(code(&report))
}

/// 0 when clean, [`EXIT_DIFFERENCES`] otherwise.
pub(crate) fn code(report: &VerifyReport) -> ExitCode {
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DIFFERENCES)
    }
}

pub(crate) fn print(r: &VerifyReport) {
    if r.is_clean() {
        say!("verified: {} records, no differences", r.records);
    } else {
        say!(
            "{} differences in {} records:",
            r.differences.len(),
            r.records
        );
        for d in &r.differences {
            say!("  {}: {}", d.record, d.detail);
        }
    }
}
