//! An order-independent digest of a set of records, with their count: what
//! an offline copy compares to prove that the tables hold exactly the
//! records it wrote, read back after the load instead of chunk by chunk
//! during it (docs/design.md §5.7); and the pieces of that proof the
//! stores share: [`Proof`], [`set_aside_for_load`], [`prove_whole`]
//! (over [`read_pages`]), [`PageDigest`] (which the actions' pass over
//! their table uses too) and [`differs`].
//!
//! Each record is hashed with SHA-256 through its `Hash` implementation and
//! the first 16 bytes of each hash are added modulo 2^128. The sum does not
//! depend on the order records are added in, so the copy can add them in
//! the order it reads the source and the check in the order it reads the
//! table. Unlike an XOR, a record added twice does not cancel out. Two sets
//! that differ give the same sum only by a 128-bit accident; the count is
//! compared too.
//!
//! `Hash` feeds the same bytes for equal values within one process, and
//! std's implementations keep fields apart (a length before every slice, a
//! terminator after every string), so equal digests mean equal records.
//! Both sides of a comparison are computed in the same process, so the
//! platform's byte order and `Hash`'s layout never have to agree across
//! builds: the digest is never stored.

use std::hash::{Hash, Hasher};

use sha2::{Digest as _, Sha256};
use sqldb::Tx;

use crate::Error;
use crate::copy::CopyCtx;
use crate::diff::{Difference, Differences};
use crate::feed::Damage;

/// How a copy proves what it wrote (docs/design.md §5.7).
pub(crate) enum Proof {
    /// Each chunk is read back and compared as it is written: an online
    /// copy commits pieces and replays records between chunks, so its
    /// tables are never the set it wrote.
    EachChunk,
    /// The count and digest of every record written, as it must read
    /// back, and the SQL id ranges of the chunks it was written in; the
    /// tables are read back whole after the load and compared.
    Whole(SetDigest, Vec<(i64, i64)>),
    /// Nothing is written: each chunk of a second read of the source is
    /// read back and compared, to name the record that differs after
    /// [`Proof::Whole`] found that something does.
    Diagnose,
}

impl Proof {
    /// The proof an offline copy (`live` false) or an online one makes.
    pub(crate) fn for_copy(live: bool) -> Proof {
        if live {
            Proof::EachChunk
        } else {
            Proof::Whole(SetDigest::default(), Vec::new())
        }
    }

    /// True when the copy writes its chunks (it does, but to diagnose).
    pub(crate) fn writes(&self) -> bool {
        !matches!(self, Proof::Diagnose)
    }
}

/// Chunks per append on PostgreSQL when a table is proved whole after the
/// copy: each append is a `COPY` per table with a fixed cost that chunks
/// of a few hundred records pay hundreds of times (docs/bench.md).
const APPEND_CHUNKS: usize = 8;

/// Records a copy proved whole buffers before it appends them: on
/// PostgreSQL [`APPEND_CHUNKS`] chunks of `chunk_size`; on SQLite, whose
/// append is prepared inserts with no fixed cost, each chunk as it comes.
pub(crate) fn append_at(dialect: sqldb::Dialect, chunk_size: usize) -> usize {
    match dialect {
        sqldb::Dialect::Postgres => chunk_size * APPEND_CHUNKS,
        sqldb::Dialect::Sqlite => 1,
    }
}

/// A store's fetch of the rows of the records with SQL ids in an
/// inclusive range, not yet decoded.
pub(crate) type FetchRange<P, E> =
    for<'t> fn(
        &'t mut dyn Tx,
        i64,
        i64,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<P, E>> + Send + 't>>;

/// A store's read of the records with SQL ids in a range (its own range
/// loader, so what is digested is what the store serves), in two halves:
/// `fetch` runs on the executor, `decode` makes the records from what it
/// fetched on the blocking pool ([`PageDigest`]).
pub(crate) struct ReadRange<P, T, E> {
    pub(crate) fetch: FetchRange<P, E>,
    pub(crate) decode: fn(P) -> Result<Vec<T>, E>,
}

/// Pages of fetched rows decoded into records and added to a digest on
/// the blocking pool, one page waiting, while the caller fetches the next:
/// decoding a few thousand rows takes milliseconds, which would stall the
/// executor, and the fetch and the decode overlap.
pub(crate) struct PageDigest<P> {
    what: String,
    pages: tokio::sync::mpsc::Sender<(String, P)>,
    worker: tokio::task::JoinHandle<Result<SetDigest, Error>>,
}

impl<P: Send + 'static> PageDigest<P> {
    /// Starts the worker that decodes each page with `decode`; `what` names
    /// the records read in an error that has no page to name.
    pub(crate) fn spawn<T: Hash + 'static, E>(
        what: &str,
        decode: fn(P) -> Result<Vec<T>, E>,
    ) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let (pages, mut received) = tokio::sync::mpsc::channel::<(String, P)>(1);
        let worker = tokio::task::spawn_blocking(move || {
            let mut read = SetDigest::default();
            while let Some((records, page)) = received.blocking_recv() {
                let page = decode(page).map_err(|e| Error::ReadBack {
                    records,
                    source: Box::new(e),
                })?;
                for record in &page {
                    read.add(record);
                }
            }
            Ok(read)
        });
        PageDigest {
            what: what.to_owned(),
            pages,
            worker,
        }
    }

    /// Hands over `page`, the rows of `records` (named if they do not
    /// decode). False when the worker has stopped at a page that did not
    /// decode: fetch no more, [`PageDigest::finish`] returns its error.
    pub(crate) async fn add(&self, records: String, page: P) -> bool {
        self.pages.send((records, page)).await.is_ok()
    }

    /// The count and digest of every record of the pages handed over, or
    /// the error of the first page that did not decode.
    pub(crate) async fn finish(self) -> Result<SetDigest, Error> {
        drop(self.pages);
        self.worker.await.map_err(|e| Error::ReadBack {
            records: self.what,
            source: Box::new(e),
        })?
    }
}

/// The count and digest of the records with SQL ids in `ranges`, each
/// range fetched with one call of `read.fetch`, decoded and digested on
/// the blocking pool beside the next fetch ([`PageDigest`]). The ranges
/// are the copy's chunks, which bound the rows each holds, children
/// included; a copy that wrote ids in order loaded its tables in that
/// order, so each range is one index range.
pub(crate) async fn read_pages<P, T, E>(
    tx: &mut dyn Tx,
    what: &str,
    ranges: &[(i64, i64)],
    read: ReadRange<P, T, E>,
) -> Result<SetDigest, Error>
where
    P: Send + 'static,
    T: Hash + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let digest = PageDigest::spawn(what, read.decode);
    let mut fetched = Ok(());
    for &(first, last) in ranges {
        let records = format!("{what} {first}..={last}");
        match (read.fetch)(tx, first, last).await {
            Ok(page) => {
                if !digest.add(records, page).await {
                    break;
                }
            }
            Err(e) => {
                fetched = Err(Error::ReadBack {
                    records,
                    source: Box::new(e),
                });
                break;
            }
        }
    }
    let read = digest.finish().await;
    fetched?;
    read
}

/// Sets aside the indexes of `tables`, tables a copy that proves them
/// whole (design §5.7) loads, for the load; none when `proof` reads each
/// chunk back, which needs them. The caller passes only tables whose
/// unique indexes the copy's own rules already keep unique (a child
/// table's key rows a record holds in a set or a map; the sessions' id
/// and public key), so rebuilding them cannot fail on data.
pub(crate) async fn set_aside_for_load(
    tx: &mut dyn Tx,
    proof: &Proof,
    tables: &[sea_query::DynIden],
) -> Result<Option<sqldb::deferred::SetAside>, Error> {
    if !matches!(proof, Proof::Whole(..)) {
        return Ok(None);
    }
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    Ok(Some(sqldb::deferred::set_aside(tx, &names).await?))
}

/// A store's copy run again over a second read of the source with
/// [`Proof::Diagnose`]: it writes nothing and compares chunk by chunk.
pub(crate) type Diagnose =
    for<'t> fn(
        &'t mut dyn Tx,
        CopyCtx<'t>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 't>>;

/// What a store's table is proved whole with ([`prove_whole`]).
pub(crate) struct WholeTable<P, T, E> {
    /// The record, as errors name it (`"account"`).
    pub(crate) what: &'static str,
    /// The table holding one row per record.
    pub(crate) table: sea_query::DynIden,
    /// The store's range read.
    pub(crate) read: ReadRange<P, T, E>,
    /// The store's copy, to name the record when the proof fails.
    pub(crate) diagnose: Diagnose,
}

/// Proves an offline copy whole (design §5.7) when `proof` says so: every
/// record written (the ranges of [`Proof::Whole`]: its chunks' SQL ids)
/// read back through the store's range read ([`read_pages`]), its count
/// and digest compared with what was written and with the table's row
/// count. When they differ, the store's copy runs again to diagnose, which
/// names the record and the field that differ; when it names none, the
/// counts or digests are the error ([`differs`]). Child rows are part of
/// each record read back; one under an id no record has breaks its foreign
/// key, checked after the load (`step.rs`).
pub(crate) async fn prove_whole<P, T, E>(
    tx: &mut dyn Tx,
    ctx: CopyCtx<'_>,
    proof: &Proof,
    table: WholeTable<P, T, E>,
) -> Result<(), Error>
where
    P: Send + 'static,
    T: Hash + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let Proof::Whole(written, ranges) = proof else {
        return Ok(());
    };
    let what = table.what;
    let started = std::time::Instant::now();
    let read = read_pages(tx, &plural(what), ranges, table.read).await?;
    let rows = crate::shared::count_rows(tx, table.table).await?;
    tracing::debug!(
        records = read.count,
        duration_ms = crate::shared::millis(started),
        "{} read back whole",
        plural(what)
    );
    let Some(differs) = differs(what, written, &read, rows) else {
        return Ok(());
    };
    let damage = Damage::second_read(ctx.damage);
    (table.diagnose)(tx, ctx.second_read(&damage)).await?;
    Err(differs)
}

/// The error saying that what was written and what the table holds are not
/// the same set (`rows`: the table's row count), or `None` when they are.
/// Used when no record can be named: first the counts, then the digests.
pub(crate) fn differs(
    what: &str,
    written: &SetDigest,
    read: &SetDigest,
    rows: u64,
) -> Option<Error> {
    let diff = if written.count != rows || read.count != rows {
        let read = if read.count != written.count {
            read.count
        } else {
            rows
        };
        Difference::Count {
            written: written.count as usize,
            read: read as usize,
        }
    } else if written != read {
        Difference::Field {
            field: format!("digest of every {what}"),
            kv: written.short(),
            sql: read.short(),
        }
    } else {
        return None;
    };
    Some(Error::Mismatch {
        record: plural(what),
        diff: Differences::one(diff),
    })
}

/// The plural of a record's name (`"account"`, `"kv-store entry"`).
fn plural(what: &str) -> String {
    match what.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{what}s"),
    }
}

/// The count and digest of a set of records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SetDigest {
    /// Records added.
    pub(crate) count: u64,
    sum: u128,
}

impl SetDigest {
    /// Adds one record.
    pub(crate) fn add<T: Hash + ?Sized>(&mut self, record: &T) {
        let mut h = Sha256Hasher(Sha256::new());
        record.hash(&mut h);
        let hash = h.0.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
        self.count += 1;
    }

    /// The digest's first bytes, for a message.
    pub(crate) fn short(&self) -> String {
        format!("{:08x}…", (self.sum >> 96) as u32)
    }
}

/// `Hash` into SHA-256: every byte a record's `Hash` writes is hashed.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Not used by [`SetDigest`], which takes the whole hash; a `Hasher`
    /// must still give a `u64`.
    fn finish(&self) -> u64 {
        let hash = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of<T: Hash>(records: &[T]) -> SetDigest {
        let mut d = SetDigest::default();
        for r in records {
            d.add(r);
        }
        d
    }

    #[test]
    fn the_order_records_are_added_in_does_not_matter() {
        let a = [(1, "a".to_owned()), (2, "b".into()), (3, "c".into())];
        let b = [(3, "c".to_owned()), (1, "a".into()), (2, "b".into())];
        assert_eq!(of(&a), of(&b));
        assert_eq!(of(&a).count, 3);
    }

    #[test]
    fn a_changed_missing_or_repeated_record_changes_it() {
        let base = of(&[(1, "a"), (2, "b")]);
        assert_ne!(base, of(&[(1, "a"), (2, "c")]));
        assert_ne!(base, of(&[(1, "a")]));
        // Added twice, a record does not cancel out as it would in an XOR.
        let twice = of(&[(1, "a"), (2, "b"), (2, "b"), (2, "b")]);
        assert_ne!(base.sum, twice.sum);
    }

    #[test]
    fn differs_says_counts_first_then_digests() {
        let written = of(&[(1, "a"), (2, "b")]);
        assert!(differs("account", &written, &written, 2).is_none());
        // A row outside the ranges read: the table's count tells.
        let extra = differs("account", &written, &written, 3)
            .unwrap()
            .to_string();
        assert!(extra.contains("2 written, 3 read back"), "{extra}");
        // A row not kept: the read's own count tells.
        let missing = differs("account", &written, &of(&[(1, "a")]), 1)
            .unwrap()
            .to_string();
        assert!(missing.contains("2 written, 1 read back"), "{missing}");
        let altered = differs("account", &written, &of(&[(1, "a"), (2, "c")]), 2)
            .unwrap()
            .to_string();
        assert!(altered.contains("digest of every account"), "{altered}");
        let entries = differs("kv-store entry", &written, &written, 3)
            .unwrap()
            .to_string();
        assert!(entries.contains("kv-store entries"), "{entries}");
    }

    #[test]
    fn fields_are_kept_apart() {
        // The same bytes split differently between two fields.
        assert_ne!(of(&[("ab", "c")]), of(&[("a", "bc")]));
        assert_ne!(
            of(&[(vec![1u8, 2], vec![3u8])]),
            of(&[(vec![1u8], vec![2u8, 3])])
        );
    }
}
