//! Reading sled on the blocking pool while the SQL side writes.
//!
//! A [`Feed`] runs a reader closure on tokio's blocking pool; the reader
//! pushes items (chunks of records) into a channel of two, so at most a few
//! chunks are in memory, and sled reads overlap the SQL writes. When the
//! writing side stops early (an error), dropping the feed closes the
//! channel and the reader stops at its next send.
//!
//! The reader must say it finished: the feed ends only on that word. A
//! reader that stops without it (sled panicking on a damaged file, say) is
//! an error, never a short but clean end of the data.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Error, Problem};

enum Msg<T> {
    Item(Result<T, Error>),
    Done,
}

/// The reading end, handed to the reader closure.
pub(crate) struct Sink<T> {
    tx: mpsc::Sender<Msg<T>>,
    damage: Arc<Damage>,
}

impl<T> Sink<T> {
    /// Sends an item; false when the writer is gone and reading should stop.
    pub(crate) fn send(&self, item: T) -> bool {
        self.tx.blocking_send(Msg::Item(Ok(item))).is_ok()
    }

    /// Reports a failure; the reader should return afterwards.
    pub(crate) fn fail(&self, error: Error) {
        let _ = self.tx.blocking_send(Msg::Item(Err(error)));
    }

    /// True when `error` is damage the migration accepts: it is recorded,
    /// and the reader skips the record and goes on.
    pub(crate) fn skip(&self, error: &Error) -> bool {
        self.damage.skip(error)
    }
}

impl<T> Sink<Vec<T>> {
    /// Sends `items` in chunks of `chunk_size`, leaving out the `None`s.
    /// Stops at the first error that is not accepted damage, which it
    /// reports, or when the writer is gone.
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
                Err(e) if self.skip(&e) => continue,
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
    tree: &'static str,
    items: mpsc::Receiver<Msg<T>>,
    reader: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Feed<T> {
    /// Starts `read` on the blocking pool, reading `tree`.
    pub(crate) fn spawn(
        tree: &'static str,
        damage: &Arc<Damage>,
        read: impl FnOnce(Sink<T>) + Send + 'static,
    ) -> Feed<T> {
        let (tx, items) = mpsc::channel(2);
        let damage = damage.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let done = tx.clone();
            read(Sink { tx, damage });
            // Not reached when `read` panics: the feed then reports it.
            let _ = done.blocking_send(Msg::Done);
        });
        Feed {
            tree,
            items,
            reader: Some(reader),
        }
    }

    /// The next item; `None` once the reader said it is done.
    pub(crate) async fn next(&mut self) -> Option<Result<T, Error>> {
        match self.items.recv().await {
            Some(Msg::Item(item)) => Some(item),
            Some(Msg::Done) => None,
            None => {
                let reason = match self.reader.take() {
                    Some(h) => match h.await {
                        Err(e) if e.is_panic() => {
                            let p = e.into_panic();
                            p.downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                                .unwrap_or_else(|| "the reader panicked".into())
                        }
                        Err(e) => e.to_string(),
                        Ok(()) => "the reader ended without finishing".into(),
                    },
                    None => "the reader ended without finishing".into(),
                };
                Some(Err(Error::ReaderStopped {
                    tree: self.tree,
                    reason: format!("{reason} (a damaged database file?)"),
                }))
            }
        }
    }

    /// Stops the reader (if still going) and waits for it.
    pub(crate) async fn finish(mut self) {
        drop(self.items);
        if let Some(r) = self.reader.take() {
            let _ = r.await;
        }
    }
}

/// Found damage: every record that does not decode is recorded and
/// skipped, so a refusal counts them all (docs/sled-format.md §6); with
/// [`Options::accept_damaged`](crate::Options::accept_damaged) the run then goes on without them.
#[derive(Default)]
pub(crate) struct Damage {
    /// An offline run skips and records every damaged record, then refuses
    /// the run unless damage is accepted; an online run, which has no such
    /// final check, fails at the first.
    skipping: bool,
    found: std::sync::Mutex<Vec<Problem>>,
    /// The source, whose own reads record what they could not read (log
    /// ranges at its open, pages since).
    source: Option<Arc<tombstone::MigrationSource>>,
    /// Damage known before this run's reads: writes lost at the log's end
    /// (`crate::check::lost_writes`), or for a second read, whatever the
    /// first had found.
    found_before: bool,
}

impl std::fmt::Debug for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Damage")
            .field("skipping", &self.skipping)
            .field("found", &self.found)
            .finish_non_exhaustive()
    }
}

impl Damage {
    /// `skipping`: see the field.
    pub(crate) fn new(skipping: bool) -> Damage {
        Damage {
            skipping,
            found: std::sync::Mutex::new(Vec::new()),
            source: None,
            found_before: false,
        }
    }

    /// Damage of a run reading `source`, which [`Damage::found_any`] asks
    /// too.
    /// `writes_lost`: [`crate::SourceFacts::writes_lost`], damage that
    /// leaves nothing for a read to meet, though a record it took is
    /// missing all the same.
    pub(crate) fn reading(
        self,
        source: Arc<tombstone::MigrationSource>,
        writes_lost: bool,
    ) -> Damage {
        Damage {
            found_before: self.found_before || writes_lost,
            source: Some(source),
            ..self
        }
    }

    /// The bookkeeping of a second read that diagnoses a failed proof
    /// (`CopyCtx::second_read`): it skips whatever `first`, the run's own,
    /// skipped, records that are damaged or whose links damage took alike.
    pub(crate) fn second_read(first: &Damage) -> Arc<Damage> {
        Arc::new(Damage {
            source: first.source.clone(),
            found_before: first.found_any(),
            ..Damage::new(true)
        })
    }

    /// Records `e` and returns true when it is damage that may be skipped.
    pub(crate) fn skip(&self, e: &Error) -> bool {
        if !(self.skipping && e.is_damage()) {
            return false;
        }
        if let Ok(mut f) = self.found.lock() {
            f.push(e.as_problem());
        }
        true
    }

    /// For a record (`key` of `tree`) that links to `linked`, which is not
    /// in SQL: once damage was found, the linked record may be missing
    /// because of it, and the record is skipped as damage (recorded, and
    /// true returned) rather than migrated with its link dropped, altered
    /// (docs/design.md §5.3). False when no damage was found (the link is
    /// dropped by the migration's rules) or the run does not skip damage.
    pub(crate) fn skip_lost_link(&self, tree: &'static str, key: &[u8], linked: &str) -> bool {
        self.found_any()
            && self.skip(&Error::Decode {
                tree,
                key: hex::encode(key),
                source: format!(
                    "it links to {linked}, which is missing: lost to the damage or removed, \
                     so it is not migrated without the link"
                )
                .into(),
            })
    }

    /// True once any damage was found, by the run's decoding or by the
    /// source's reads: a record that then refers to one that is missing may
    /// be missing it because of that damage.
    pub(crate) fn found_any(&self) -> bool {
        self.found_before
            || self.found.lock().map(|f| !f.is_empty()).unwrap_or(true)
            || self
                .source
                .as_ref()
                .is_some_and(|s| !s.salvaged().is_empty())
    }

    pub(crate) fn take(&self) -> Vec<Problem> {
        self.found
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }
}
