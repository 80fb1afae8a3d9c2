//! `cargo xtask lint`: formatting, clippy with `-D warnings`, and clippy
//! again with each backend feature built alone.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Result, cargo, step};

/// The backend features a crate may offer (docs/design.md §4.4).
const BACKEND_FEATURES: [&str; 3] = ["kv", "sqlite", "postgres"];

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
    step("cargo clippy --workspace --all-targets -D warnings", clippy)?;
    each_backend_alone()
}

/// Every crate with backend features, built with one backend and nothing
/// else: a node that needs only SQLite must not have to build the
/// PostgreSQL client (or sled), and every `cfg` must hold on its own.
fn each_backend_alone() -> Result<()> {
    for (feature, packages) in packages_by_backend_feature()? {
        let mut clippy = cargo();
        clippy.arg("clippy");
        for p in &packages {
            clippy.args(["-p", p]);
        }
        clippy.args(["--no-default-features", "--features", feature]);
        clippy.args(["--", "-D", "warnings"]);
        step(
            &format!(
                "cargo clippy --no-default-features --features {feature} ({})",
                packages.join(", ")
            ),
            clippy,
        )?;
    }
    Ok(())
}

/// For each backend feature, the workspace crates that declare it.
fn packages_by_backend_feature() -> Result<BTreeMap<&'static str, Vec<String>>> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let meta: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let mut by_feature: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let Some(name) = p["name"].as_str() else {
            continue;
        };
        for feature in BACKEND_FEATURES {
            if p["features"].get(feature).is_some() {
                by_feature.entry(feature).or_default().push(name.to_owned());
            }
        }
    }
    if by_feature.len() != BACKEND_FEATURES.len() {
        return Err(format!(
            "expected crates with each backend feature {BACKEND_FEATURES:?}, found {:?}",
            by_feature.keys().collect::<Vec<_>>()
        ));
    }
    Ok(by_feature)
}
