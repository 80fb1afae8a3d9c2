//! Files of a database directory in tests: copying one (to damage or
//! migrate a copy) and reading every byte of one (to prove a read wrote
//! nothing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Copies a directory tree (a key-value database, `blobs/` included).
///
/// # Panics
/// When a file cannot be read or written: a test's setup failed.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for e in std::fs::read_dir(from).expect("list the directory") {
        let e = e.expect("a directory entry");
        if e.file_type().expect("its type").is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy a file");
        }
    }
}

/// Waits until no process holds the sled database in `dir`: sled's threads
/// let go of its log's lock shortly after the last handle is dropped.
///
/// # Panics
/// When the log cannot be opened or its lock released.
pub fn wait_released(dir: &Path) {
    let f = std::fs::File::open(dir.join("db")).expect("open the log");
    while f.try_lock().is_err() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f.unlock().expect("release the log's lock");
}

/// Every file under `dir`, by its path relative to `dir`, with its bytes.
///
/// # Panics
/// When a file cannot be read.
pub fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list the directory") {
            let e = e.expect("a directory entry");
            if e.file_type().expect("its type").is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).expect("under dir").to_path_buf();
                out.insert(rel, std::fs::read(e.path()).expect("read a file"));
            }
        }
    }
    out
}
