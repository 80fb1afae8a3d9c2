//! What the sled reader's test binaries share (each file under `tests/` is
//! a crate of its own).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The number of cases of each random test: `SLED_READER_CASES`, 24 by
/// default (`cargo xtask ci` sets 64).
pub(crate) fn cases() -> u32 {
    std::env::var("SLED_READER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// Every file under `dir` (relative path) with its bytes.
pub(crate) fn hash_dir(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Copies a database directory (`blobs/` included).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
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
