//! What the sled reader's test binaries share (each file under `tests/` is
//! a crate of its own).

use std::path::Path;
use std::time::Duration;

pub(crate) use testkit::files::{contents as hash_dir, copy_dir};

/// The number of cases of each random test: `SLED_READER_CASES`, 24 by
/// default (`cargo xtask ci` sets 64).
pub(crate) fn cases() -> u32 {
    std::env::var("SLED_READER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// Waits until sled's background threads have closed the database at
/// `dir` (they hold its file lock until then), so its files stop changing.
pub(crate) fn wait_released(dir: &Path) {
    let f = std::fs::File::open(dir.join("db")).unwrap();
    for _ in 0..400 {
        if f.try_lock().is_ok() {
            f.unlock().unwrap();
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("sled kept {} open", dir.display())
}

/// The proptest configuration of the random tests: [`cases`] cases, and
/// failing cases saved beside the test (`*.regressions`) and run first.
pub(crate) fn config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}
