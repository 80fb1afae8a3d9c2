//! `cargo xtask lint`: formatting and clippy with `-D warnings`.

use crate::{Result, cargo, step};

pub(crate) fn lint() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    step("cargo fmt --check", fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("cargo clippy --workspace --all-targets -D warnings", clippy)
}
