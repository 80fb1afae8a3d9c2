//! Reading sled on the blocking pool while the SQL side writes.
//!
//! A [`Feed`] runs a reader closure on tokio's blocking pool; the reader
//! pushes items (chunks of records) into a channel of two, so at most a few
//! chunks are in memory, and sled reads overlap the SQL writes. When the
//! writing side stops early (an error), dropping the feed closes the
//! channel and the reader stops at its next send.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;

/// The reading end, handed to the reader closure.
pub(crate) struct Sink<T>(mpsc::Sender<Result<T, Error>>);

impl<T> Sink<T> {
    /// Sends an item; false when the writer is gone and reading should stop.
    pub(crate) fn send(&self, item: T) -> bool {
        self.0.blocking_send(Ok(item)).is_ok()
    }

    /// Reports a failure; the reader should return afterwards.
    pub(crate) fn fail(&self, error: Error) {
        let _ = self.0.blocking_send(Err(error));
    }
}

/// The writing end.
pub(crate) struct Feed<T> {
    items: mpsc::Receiver<Result<T, Error>>,
    reader: JoinHandle<()>,
}

impl<T: Send + 'static> Feed<T> {
    /// Starts `read` on the blocking pool.
    pub(crate) fn spawn(read: impl FnOnce(Sink<T>) + Send + 'static) -> Feed<T> {
        let (sender, items) = mpsc::channel(2);
        let reader = tokio::task::spawn_blocking(move || read(Sink(sender)));
        Feed { items, reader }
    }

    /// The next item; `None` once the reader is done.
    pub(crate) async fn next(&mut self) -> Option<Result<T, Error>> {
        self.items.recv().await
    }

    /// Stops the reader (if still going) and waits for it.
    pub(crate) async fn finish(self) {
        drop(self.items);
        let _ = self.reader.await;
    }
}
