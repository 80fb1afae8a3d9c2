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

impl<T> Sink<Vec<T>> {
    /// Sends `items` in chunks of `chunk_size`, leaving out the `None`s.
    /// Stops at the first error, which it reports, or when the writer is
    /// gone.
    pub(crate) fn send_chunks(
        &self,
        items: impl IntoIterator<Item = Result<Option<T>, Error>>,
        chunk_size: usize,
    ) {
        let mut chunk = Vec::with_capacity(chunk_size);
        for item in items {
            match item {
                Ok(Some(x)) => chunk.push(x),
                Ok(None) => continue,
                Err(e) => return self.fail(e),
            }
            if chunk.len() >= chunk_size && !self.send(std::mem::take(&mut chunk)) {
                return;
            }
        }
        if !chunk.is_empty() {
            self.send(chunk);
        }
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
