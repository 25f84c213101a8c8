//! Copying a store to another (backup and restore): incremental, create-only,
//! data files before digests.
//!
//! Every object under the source prefix is copied to the same relative path
//! under the destination prefix, except names with a path segment starting
//! with `.` (editor, NFS and OS droppings, never audit data). An object the
//! destination already holds with the same size (or, with
//! [`CopyOptions::verify_bytes`], the same SHA-256) is skipped, so a rerun
//! after an interruption copies only what is missing. A destination object of
//! the same name with different content is a [`CopyError::Conflict`]: audit
//! data is never overwritten.
//!
//! Digests (`_digests/`) are copied after every data file, and those of one
//! chain in digest order, so an interrupted copy looks like an earlier state
//! of the source: it never holds a digest without the files it lists, nor a
//! digest without its predecessor.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use otel_audit_storage::copy::{CopyOptions, copy_store};
//! use otel_audit_storage::{NoProgress, Store};
//!
//! let from = Store::open("memory://", &Default::default()).unwrap();
//! let to = Store::open("memory://", &Default::default()).unwrap();
//! # use object_store::ObjectStoreExt;
//! # from.object_store().put(&from.location("tenant=a/x"), vec![1u8, 2].into()).await.unwrap();
//! let report = copy_store(&from, &to, &CopyOptions::default(), &NoProgress).await.unwrap();
//! assert_eq!((report.copied, report.skipped), (1, 0));
//! let again = copy_store(&from, &to, &CopyOptions::default(), &NoProgress).await.unwrap();
//! assert_eq!((again.copied, again.skipped), (0, 1));
//! # });
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::{TryStreamExt, stream};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::digest::DIGESTS_DIR;
use crate::store::Store;
use crate::verify::NoProgress;

/// How to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Compare the SHA-256 of objects already in the destination with the
    /// source's, instead of only their sizes (reads both copies).
    pub verify_bytes: bool,
    /// Objects read and written at once (default 8; 0 counts as 1). Memory
    /// use is about this many objects.
    pub concurrency: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            verify_bytes: false,
            concurrency: 8,
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectOutcome {
    /// Written to the destination.
    Copied,
    /// The destination already held it.
    Skipped,
}

/// Receives progress of [`copy_store`]; called from several tasks at once.
pub trait CopyProgress: Send + Sync {
    /// The source was listed: this many objects and bytes will be considered.
    fn start(&self, _objects: u64, _bytes: u64) {}
    /// One object is done.
    fn object_done(&self, _path: &str, _bytes: u64, _outcome: ObjectOutcome) {}
}

impl CopyProgress for NoProgress {}

/// The result of [`copy_store`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// The source store.
    pub from: String,
    /// The destination store.
    pub to: String,
    /// Objects in the source (data files, digests, anything else not hidden).
    pub objects: u64,
    /// Of these, digests (under `_digests/`).
    pub digests: u64,
    /// Objects written to the destination.
    pub copied: u64,
    /// Objects the destination already held.
    pub skipped: u64,
    /// Bytes in the source objects.
    pub bytes: u64,
    /// Bytes written to the destination.
    pub bytes_copied: u64,
    /// Last-modified time of the newest source object: about when the source
    /// was last written (for a backup, when it was last taken).
    pub newest_object: Option<DateTime<Utc>>,
}

/// Why a copy stopped. Objects copied before the error stay in the
/// destination; a rerun skips them.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// One store lies inside the other, so the copy would copy itself.
    #[error("cannot copy between {from} and {to}: one store is inside the other")]
    Overlap {
        /// The source store.
        from: String,
        /// The destination store.
        to: String,
    },
    /// The source holds nothing to copy; most likely a wrong URL or prefix.
    #[error("nothing to copy: no objects found in {url}; check the store URL")]
    EmptySource {
        /// The source store.
        url: String,
    },
    /// A store could not be listed.
    #[error("listing {path} in {url}: {source}")]
    List {
        /// The store.
        url: String,
        /// The path listed, relative to the store root (empty: the root).
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object could not be read.
    #[error("reading {path} from {url}: {source}")]
    Read {
        /// The store read from.
        url: String,
        /// The object, relative to the store root.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object could not be written.
    #[error("writing {path} to {url}: {source}")]
    Write {
        /// The destination store.
        url: String,
        /// The object, relative to the store root.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The destination holds a different object under the same name. It is
    /// never overwritten.
    #[error(
        "{path} already exists in {url} with different content ({reason}); refusing to overwrite"
    )]
    Conflict {
        /// The destination store.
        url: String,
        /// The object, relative to the store root.
        path: String,
        /// How the two differ.
        reason: String,
    },
}

/// An object of the source, by path relative to the store root.
#[derive(Debug, Clone)]
struct Item {
    rel: String,
    size: u64,
    modified: DateTime<Utc>,
}

/// Copies every object of `from` that `to` lacks (see the module
/// documentation), data files first, then digests.
///
/// Both stores are listed once; objects in `to` that `from` does not hold are
/// left alone. The copy is not verified here: run [`crate::verify()`] on `to`.
pub async fn copy_store(
    from: &Store,
    to: &Store,
    opts: &CopyOptions,
    progress: &dyn CopyProgress,
) -> Result<CopyReport, CopyError> {
    if nested(from.url(), to.url()) || nested(to.url(), from.url()) {
        return Err(CopyError::Overlap {
            from: from.url().to_owned(),
            to: to.url().to_owned(),
        });
    }
    // Digests are listed before the data: a digest is written after the files
    // it lists, so every file a listed digest names is already there when the
    // data is listed, even while a collector keeps writing to the source.
    let digests = list(from, DIGESTS_DIR).await?;
    let data: Vec<Item> = list(from, "")
        .await?
        .into_iter()
        .filter(|i| !in_digests(&i.rel))
        .collect();
    let present: HashMap<String, u64> = list(to, "")
        .await?
        .into_iter()
        .map(|i| (i.rel, i.size))
        .collect();

    let mut report = CopyReport {
        from: from.url().to_owned(),
        to: to.url().to_owned(),
        objects: (data.len() + digests.len()) as u64,
        digests: digests.len() as u64,
        bytes: data.iter().chain(&digests).map(|i| i.size).sum(),
        newest_object: data.iter().chain(&digests).map(|i| i.modified).max(),
        ..CopyReport::default()
    };
    if report.objects == 0 {
        return Err(CopyError::EmptySource {
            url: from.url().to_owned(),
        });
    }
    progress.start(report.objects, report.bytes);

    let totals = Mutex::new((0u64, 0u64, 0u64));
    let ctx = Ctx {
        from,
        to,
        opts,
        progress,
        present: &present,
        totals: &totals,
    };
    let width = opts.concurrency.max(1);
    stream::iter(data.iter().map(Ok))
        .try_for_each_concurrent(width, |item| ctx.copy_one(item))
        .await?;

    // One chain's digests form a linked sequence; copying them in name
    // (= digest seq) order keeps an interrupted copy free of gaps.
    let mut chains: BTreeMap<&str, Vec<&Item>> = BTreeMap::new();
    for d in &digests {
        let dir = d.rel.rsplit_once('/').map_or("", |(dir, _)| dir);
        chains.entry(dir).or_default().push(d);
    }
    stream::iter(chains.into_values().map(Ok))
        .try_for_each_concurrent(width, |items| {
            let ctx = &ctx;
            async move {
                for item in items {
                    ctx.copy_one(item).await?;
                }
                Ok(())
            }
        })
        .await?;

    let (copied, skipped, bytes_copied) = *totals.lock().unwrap_or_else(|e| e.into_inner());
    report.copied = copied;
    report.skipped = skipped;
    report.bytes_copied = bytes_copied;
    Ok(report)
}

/// Whether `inner` is a store below `outer` (`file:///a` and `file:///a/b`).
fn nested(outer: &str, inner: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.starts_with('/') || outer.ends_with('/'))
        && inner != outer
}

fn in_digests(rel: &str) -> bool {
    rel.split('/').next() == Some(DIGESTS_DIR)
}

/// Every object below `dir` (relative to the store root; `""` for all),
/// hidden names left out, sorted by path.
async fn list(store: &Store, dir: &str) -> Result<Vec<Item>, CopyError> {
    let location = store.location(dir);
    let prefix = (!location.as_ref().is_empty()).then_some(&location);
    let metas: Vec<ObjectMeta> = store
        .object_store()
        .list(prefix)
        .try_collect()
        .await
        .map_err(|source| CopyError::List {
            url: store.url().to_owned(),
            path: dir.to_owned(),
            source,
        })?;
    let mut items: Vec<Item> = metas
        .into_iter()
        .filter_map(|m| {
            let rel = store.relative(&m.location)?;
            let hidden = rel.is_empty() || rel.split('/').any(|s| s.starts_with('.'));
            (!hidden).then_some(Item {
                rel,
                size: m.size,
                modified: m.last_modified,
            })
        })
        .collect();
    items.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(items)
}

/// What every object copy shares.
struct Ctx<'a> {
    from: &'a Store,
    to: &'a Store,
    opts: &'a CopyOptions,
    progress: &'a dyn CopyProgress,
    present: &'a HashMap<String, u64>,
    /// Copied, skipped, bytes copied.
    totals: &'a Mutex<(u64, u64, u64)>,
}

impl Ctx<'_> {
    async fn copy_one(&self, item: &Item) -> Result<(), CopyError> {
        let outcome = self.copy_or_skip(item).await?;
        {
            let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                ObjectOutcome::Copied => {
                    t.0 += 1;
                    t.2 += item.size;
                }
                ObjectOutcome::Skipped => t.1 += 1,
            }
        }
        self.progress.object_done(&item.rel, item.size, outcome);
        Ok(())
    }

    async fn copy_or_skip(&self, item: &Item) -> Result<ObjectOutcome, CopyError> {
        if let Some(&size) = self.present.get(&item.rel) {
            if size != item.size {
                return Err(self.conflict(
                    item,
                    format!(
                        "{size} bytes in the destination, {} in the source",
                        item.size
                    ),
                ));
            }
            if !self.opts.verify_bytes {
                return Ok(ObjectOutcome::Skipped);
            }
            let src = sha256(&self.read(self.from, &item.rel).await?);
            return self.compare_existing(item, src).await;
        }
        let bytes = self.read(self.from, &item.rel).await?;
        match self.to.put_new(&item.rel, bytes.clone()).await {
            Ok(None) => Ok(ObjectOutcome::Copied),
            // Written since the destination was listed (another copy running).
            Ok(Some(existing)) => self.compare(item, sha256(&bytes), sha256(&existing)),
            Err(source) => Err(CopyError::Write {
                url: self.to.url().to_owned(),
                path: item.rel.clone(),
                source,
            }),
        }
    }

    /// Skips the object when the destination's copy has the SHA-256 `src`.
    async fn compare_existing(
        &self,
        item: &Item,
        src: [u8; 32],
    ) -> Result<ObjectOutcome, CopyError> {
        let dst = sha256(&self.read(self.to, &item.rel).await?);
        self.compare(item, src, dst)
    }

    /// Skips the object when both copies have the same SHA-256.
    fn compare(
        &self,
        item: &Item,
        src: [u8; 32],
        dst: [u8; 32],
    ) -> Result<ObjectOutcome, CopyError> {
        if dst == src {
            Ok(ObjectOutcome::Skipped)
        } else {
            Err(self.conflict(
                item,
                format!(
                    "sha256 {} in the destination, {} in the source",
                    hex::encode(dst),
                    hex::encode(src)
                ),
            ))
        }
    }

    async fn read(&self, store: &Store, rel: &str) -> Result<bytes::Bytes, CopyError> {
        let err = |source| CopyError::Read {
            url: store.url().to_owned(),
            path: rel.to_owned(),
            source,
        };
        let location: Path = store.location(rel);
        store
            .object_store()
            .get(&location)
            .await
            .map_err(err)?
            .bytes()
            .await
            .map_err(err)
    }

    fn conflict(&self, item: &Item, reason: String) -> CopyError {
        CopyError::Conflict {
            url: self.to.url().to_owned(),
            path: item.rel.clone(),
            reason,
        }
    }
}

// Hashed on the runtime thread: objects are at most tens of MB (tens of ms),
// and the copy is bound by I/O, not by these.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting() {
        assert!(nested("file:///a", "file:///a/b"));
        assert!(!nested("file:///a", "file:///ab"));
        assert!(!nested("file:///a", "file:///a"));
        assert!(!nested("memory://", "memory://"));
        assert!(nested("s3://b", "s3://b/p"));
        assert!(!nested("s3://b/p", "s3://b"));
    }

    #[test]
    fn digests_are_recognised() {
        assert!(in_digests("_digests/tenant=a/chain=c/x.json"));
        assert!(!in_digests("tenant=a/_digests"));
        assert!(!in_digests("_digestsx/a"));
    }
}
