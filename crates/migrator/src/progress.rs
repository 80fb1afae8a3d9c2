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

    /// The store just migrated ended: its last event again, at its total.
    pub(crate) fn finish(&self) -> Result<(), Error> {
        let last = self.last.lock().ok().and_then(|mut l| l.take());
        match (self.inner, last) {
            (Some(inner), Some(e)) if e.done != e.total => inner
                .progress(ProgressEvent { total: e.done, ..e })
                .map_err(Error::Aborted),
            _ => Ok(()),
        }
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
