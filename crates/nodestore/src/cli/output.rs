//! Printing that never panics, and error reports one cause per line.

/// Exit code when standard output is closed early (a reader such as `head`
/// stopped reading): 128 + SIGPIPE, what a shell shows for it.
pub(crate) const EXIT_CLOSED_STDOUT: i32 = 141;

/// `println!` that never panics: a closed standard output ends the command
/// quietly with [`EXIT_CLOSED_STDOUT`].
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit($crate::cli::output::EXIT_CLOSED_STDOUT);
        }
    }};
}

/// `print!` that never panics (see [`say!`]).
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit($crate::cli::output::EXIT_CLOSED_STDOUT);
        }
    }};
}

/// `eprintln!` that never panics: a closed standard error loses the line.
macro_rules! warn_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Reports `e` on standard error, one line per cause, each said once.
pub(crate) fn report_error(e: &(dyn std::error::Error + 'static)) {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !lines.iter().any(|l| l.contains(&text)) {
            lines.push(text);
        }
        cur = err.source();
    }
    for (i, l) in lines.iter().enumerate() {
        for (j, part) in l.lines().enumerate() {
            let lead = if i == 0 && j == 0 {
                "error: "
            } else if j == 0 {
                "caused by: "
            } else {
                "  "
            };
            warn_line!("{lead}{part}");
        }
    }
}
