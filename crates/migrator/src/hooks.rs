//! Named points of the online cutover where a test can stop the migration
//! and act (kill the process, stop the server, close the stores), so each
//! hazard of docs/design.md §7.4 has a deterministic test. Compiled in only
//! with the `test-hooks` feature, which only test builds turn on; without
//! it `reached` does nothing.

/// A point of the cutover, in the order a migration reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// Writers are paused (the gate is held), before the last replay.
    Paused,
    /// The last transaction is about to commit, writers paused.
    Committing,
    /// The last transaction committed; the proof and tombstone come next.
    Committed,
    /// The tombstone is written; the switch of the stores comes next.
    Retired,
}

#[cfg(feature = "test-hooks")]
mod imp {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use super::Point;

    /// What a test runs at each point.
    pub type Hook = Arc<dyn Fn(Point) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

    static HOOK: Mutex<Option<Hook>> = Mutex::new(None);

    /// Installs `hook` for every migration of this process (`None` removes
    /// it). Tests that install one run one at a time.
    pub fn set(hook: Option<Hook>) {
        *HOOK.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    pub(crate) async fn reached(point: Point) {
        let hook = HOOK.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hook) = hook {
            hook(point).await;
        }
    }

    static PIECE_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// Makes an online copy on SQLite commit a piece whenever its log
    /// passes `bytes` (0: the default), so that a small test database is
    /// copied in many pieces.
    pub fn set_piece_bytes(bytes: u64) {
        PIECE_BYTES.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn piece_bytes(default: u64) -> u64 {
        match PIECE_BYTES.load(std::sync::atomic::Ordering::Relaxed) {
            0 => default,
            n => n,
        }
    }
}

#[cfg(feature = "test-hooks")]
pub use imp::{Hook, set, set_piece_bytes};

#[cfg(feature = "test-hooks")]
pub(crate) use imp::{piece_bytes, reached};

/// Without the `test-hooks` feature: nothing.
#[cfg(not(feature = "test-hooks"))]
pub(crate) async fn reached(_point: Point) {}

/// Without the `test-hooks` feature: the default.
#[cfg(not(feature = "test-hooks"))]
pub(crate) fn piece_bytes(default: u64) -> u64 {
    default
}
