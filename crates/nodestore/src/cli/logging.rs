//! The command's logs: `tracing` events of the library and the command, on
//! standard error, filtered by `RUST_LOG` when set and by `-v`/`-q`
//! otherwise, as text for people or JSON lines for machines.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, with the span fields.
    Json,
}

/// The level `-v`/`-q` choose when `RUST_LOG` is not set: warnings by
/// default, then info, debug and trace with each `-v`; errors only with
/// `-q`, nothing with `-qq`.
pub(crate) fn level(verbose: u8, quiet: u8) -> &'static str {
    match (verbose, quiet) {
        (0, 0) => "warn",
        (1, _) => "info",
        (2, _) => "debug",
        (v, _) if v >= 3 => "trace",
        (_, 1) => "error",
        _ => "off",
    }
}

/// Installs the subscriber for the whole process.
pub(crate) fn install(verbose: u8, quiet: u8, format: LogFormat) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(level(verbose, quiet)),
    };
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // A second install (tests running main twice) keeps the first.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level(0, 0), "warn");
        assert_eq!(level(1, 0), "info");
        assert_eq!(level(2, 0), "debug");
        assert_eq!(level(5, 0), "trace");
        assert_eq!(level(0, 1), "error");
        assert_eq!(level(0, 2), "off");
    }
}
