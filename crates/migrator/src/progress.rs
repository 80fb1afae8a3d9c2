//! Progress of the data step, told to an observer chunk by chunk.

use std::sync::Mutex;

use sqldb::BoxError;

use crate::Error;

/// A progress report, sent after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressEvent {
    /// The store being migrated (`"accounts"`, …).
    pub store: &'static str,
    /// Records of that store migrated and verified so far.
    pub done: u64,
    /// Records of that store in total (an estimate from the tree size).
    pub total: u64,
}

/// Receives progress; returning `Err` stops the migration and rolls it back.
pub trait Progress: Send + Sync {
    /// Called after each verified chunk.
    fn progress(&self, event: ProgressEvent) -> Result<(), BoxError>;

    /// Called once a store is migrated and proved, after its last
    /// [`Progress::progress`]: an offline copy proves a table after its
    /// last chunk (docs/design.md §5.7), so the time between a store's
    /// last event and this call is its proof. `store` is the migrator's
    /// store (`"accounts"`, `"sessions"`, `"firewall"`, `"actions"`),
    /// whose chunks may have been told under other names (the firewall's
    /// `"kv-stores"` and `"privacy pairs"`). Does nothing by default.
    fn store_done(&self, store: &'static str) {
        let _ = store;
    }
}

/// Passes progress on, and when a store is done tells its last count as
/// its total: a store's total is an estimate from its tree (which also
/// holds index entries), and an observer's bar must end at its total.
pub(crate) struct EndsAtTotal<'a> {
    inner: Option<&'a dyn Progress>,
    last: Mutex<Option<ProgressEvent>>,
}

impl<'a> EndsAtTotal<'a> {
    pub(crate) fn new(inner: Option<&'a dyn Progress>) -> Self {
        EndsAtTotal {
            inner,
            last: Mutex::new(None),
        }
    }

    pub(crate) fn observer(&self) -> Option<&dyn Progress> {
        self.inner.map(|_| self as &dyn Progress)
    }

    /// `store` just migrated and proved: its last event again, at its
    /// total, then [`Progress::store_done`].
    pub(crate) fn finish(&self, store: &'static str) -> Result<(), Error> {
        let last = self.last.lock().ok().and_then(|mut l| l.take());
        let Some(inner) = self.inner else {
            return Ok(());
        };
        if let Some(e) = last.filter(|e| e.done != e.total) {
            inner
                .progress(ProgressEvent { total: e.done, ..e })
                .map_err(Error::Aborted)?;
        }
        inner.store_done(store);
        Ok(())
    }
}

impl Progress for EndsAtTotal<'_> {
    fn progress(&self, event: ProgressEvent) -> Result<(), BoxError> {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(event);
        }
        match self.inner {
            Some(inner) => inner.progress(event),
            None => Ok(()),
        }
    }
}
