//! The cold tier on object storage: a [`Store`] over the [`object_store`] crate (S3, GCS, Azure,
//! a local directory, memory), shared by every cache instance that points at the same bucket.
//!
//! It must never expose a partial or foreign entry, never hold a whole body in memory, and never
//! let a slow or broken bucket hang a request: every operation runs under a timeout and every
//! failure is a [`StoreError`] carrying the key, which the engine treats as a miss (fail open).
//!
//! The layout in the bucket and the reasons for it are documented on [`BucketStore`]; operators'
//! notes (lifecycle rules, permissions) are in `docs/object-store.md`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use url::Url;

use super::{Store, StoreWriter};
use crate::entry::{EntryBody, Metadata, StoredEntry};
use crate::error::StoreError;

mod body;
mod builder;
mod commit;
mod entries;
mod floors;
mod layout;
mod multipart;
mod ops;
mod pack;
mod pointer;
mod purge;
#[cfg(test)]
mod tests;
mod writer;

use body::BodyStream;
pub use builder::BucketStoreBuilder;
use builder::{config_error, Source};
use commit::Swapper;
use entries::Found;
use floors::{purge_time, Floors};
use layout::{key_hash, Layout};
use ops::{backend, timed};
use pack::Packs;
pub use pack::{PackStats, Packing};
pub use purge::{
    MalformedLogObject, Purge, PurgeError, SharedPurges, SharedPurgesBuilder, SharedPurgesStats,
};
use writer::BucketWriter;

/// Where the purge log lives under the store's prefix (never a key hash: those are hex).
const PURGE_DIR: &str = "_purges";
/// Where packs of small entries live under the store's prefix.
const PACK_DIR: &str = "_packs";

/// S3's minimum size for every part but the last; smaller part sizes are raised to it.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// A [`Store`] on object storage: the shared cold tier.
///
/// Cheap to clone (the clones share one configuration and one client). Built with
/// [`BucketStore::new`], [`BucketStore::builder`] or [`BucketStore::from_url`].
///
/// # Layout in the bucket
///
/// With `h` the hex SHA-256 of the cache key (keys are data, never paths):
///
/// ```text
/// <prefix>/<h[0..2]>/<h[2..4]>/<h>.meta              pointer: codec record (key + Metadata) + body path
/// <prefix>/<h[0..2]>/<h[2..4]>/<h>/<unique>.body      body bytes, written once, never modified
/// ```
///
/// The two hash levels spread keys over 65 536 prefixes, so no single prefix becomes hot (S3 scales
/// request rates per prefix).
///
/// # Why a sidecar pointer object, not object attributes
///
/// Metadata lives in a small `.meta` object rather than in the body object's user metadata:
///
/// - **Atomic commit.** The body goes to a fresh, unique path (single PUT when small, multipart
///   upload otherwise); the entry becomes visible only when the single small PUT of the pointer
///   lands. Object stores make one PUT atomic, so a reader sees the old entry or the new one,
///   never a mix, and never a body still being uploaded.
/// - **Cheap lookups.** [`head`](Store::head) is one GET of a few hundred bytes, and the record
///   holds everything the engine needs (status, headers, validators, timestamps), not just the
///   2 KiB that S3 allows in user metadata, in the same checksummed [`codec`](crate::store::codec)
///   format as the file tier.
/// - **Cheap refreshes.** A `304 Not Modified` ([`update_metadata`](Store::update_metadata))
///   rewrites only the pointer; with attributes it would need a server-side copy of the body.
///
/// The cost is one extra small request per hit (pointer GET, then body GET) and garbage when a
/// writer dies between the body upload and the pointer PUT: an orphaned `.body` that no pointer
/// names. Orphans are never served (bodies are only reached through a pointer) and are cleaned by
/// a bucket lifecycle rule; see the *Bucket lifecycle* section of `docs/object-store.md`.
///
/// A read checks the pointer's key against the requested one (a hash collision is a miss) and the
/// body object's size against the recorded length (a mismatch is a miss), and the body stream ends
/// with an error, never a clean end, if the object turns out shorter than recorded.
///
/// # Many instances over one bucket
///
/// Every change to a pointer is a conditional PUT against the version read (`PutMode::Create`
/// or `PutMode::Update`): of two instances committing one key at once, one wins and the other
/// deletes its own body, so no body is left without a pointer. A [`delete`](Store::delete)
/// leaves a *tombstone* pointer whose floor is the purge's instant: a fill whose response is
/// older (`stored_at`) never commits afterwards, on any instance. A
/// [`purge_prefix`](Store::purge_prefix) masks the prefix in this instance (entries stored
/// before it read as misses); [`SharedPurges`] carries purges to
/// the other instances. Backends without conditional writes fall back to overwrites (see
/// `docs/object-store.md`, *Concurrent commits*).
///
/// # Small entries
///
/// With [`packing`](BucketStoreBuilder::packing), bodies under a threshold are gathered into
/// shared pack objects (one PUT per pack and one for its index, instead of two per entry) and
/// read with one ranged GET each; see [`Packing`].
///
/// # Bounded cold tier
///
/// A bucket is not bounded and this store does not pretend to run LRU over it. With
/// [`ttl`](BucketStoreBuilder::ttl) set, entries whose `stored_at` is older than the TTL are not
/// served (they read as misses); pair it with a lifecycle rule that expires objects under the
/// prefix some time after the TTL, so the bucket's size stays bounded too.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), daramjwee::StoreError> {
/// use std::time::Duration;
/// use daramjwee::store::{BucketStore, Store};
/// use daramjwee::Metadata;
///
/// // `s3://bucket/prefix` works the same way with the `aws` feature and `AWS_*` variables.
/// let store = BucketStore::from_url("memory:///cache")?
///     .op_timeout(Duration::from_secs(5))
///     .ttl(Duration::from_secs(24 * 3600))
///     .build()?;
///
/// let mut w = store.put("GET /a", Metadata::new(http::StatusCode::OK)).await?;
/// w.write(bytes::Bytes::from_static(b"hello")).await?;
/// w.commit().await?;
///
/// let meta = store.head("GET /a").await?.expect("committed");
/// assert_eq!(meta.content_length, Some(5));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BucketStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    op_timeout: Duration,
    ttl: Option<Duration>,
    part_size: usize,
    upload_concurrency: usize,
    swapper: Swapper,
    floors: Floors,
    packs: Option<Arc<Packs>>,
}

impl BucketStore {
    /// A store over `store`, keeping its objects under `prefix`, with default settings.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<Path>) -> Self {
        BucketStoreBuilder::with_source(Source::Store(store.clone()), prefix.into()).finish(store)
    }

    /// A builder for a store over `store`, keeping its objects under `prefix`.
    pub fn builder(store: Arc<dyn ObjectStore>, prefix: impl Into<Path>) -> BucketStoreBuilder {
        BucketStoreBuilder::with_source(Source::Store(store), prefix.into())
    }

    /// A builder for the store a URL names, the path of the URL being the key prefix.
    ///
    /// Parsed by object_store's own [`ObjectStoreScheme`]. Supported:
    ///
    /// - `file:///path/to/dir` and `memory:///prefix` always (each `memory://` store is private);
    /// - `s3://bucket/prefix` (and `s3a://`, `https://...amazonaws.com/...`) with the `aws`
    ///   feature, configured from the `AWS_*` environment variables
    ///   (`AmazonS3Builder::from_env`: `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    ///   `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...);
    /// - `gs://bucket/prefix` with `gcp` (`GOOGLE_*` variables);
    /// - `az://container/prefix`, `abfss://...` with `azure` (`AZURE_*` variables).
    ///
    /// Nothing is contacted until the first operation; credentials and the backend client are
    /// built by [`BucketStoreBuilder::build`].
    pub fn from_url(url: &str) -> Result<BucketStoreBuilder, StoreError> {
        let url = Url::parse(url).map_err(config_error)?;
        let (scheme, prefix) = ObjectStoreScheme::parse(&url).map_err(config_error)?;
        // With every backend feature enabled all arms are `true`; the match keeps them per feature.
        #[allow(clippy::match_like_matches_macro)]
        let supported = match scheme {
            ObjectStoreScheme::Local | ObjectStoreScheme::Memory => true,
            ObjectStoreScheme::AmazonS3 => cfg!(feature = "aws"),
            ObjectStoreScheme::GoogleCloudStorage => cfg!(feature = "gcp"),
            ObjectStoreScheme::MicrosoftAzure => cfg!(feature = "azure"),
            _ => false,
        };
        if !supported {
            return Err(config_error(format!(
                "unsupported object store URL {url} ({scheme:?}): enable the matching cargo feature \
                 (aws, gcp, azure)"
            )));
        }
        Ok(BucketStoreBuilder::with_source(
            Source::Url(url, scheme),
            prefix,
        ))
    }

    /// The object store this tier writes to.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The prefix every object of this tier lives under.
    pub fn prefix(&self) -> &Path {
        self.inner.layout.prefix()
    }

    /// The time limit of each operation.
    pub fn op_timeout(&self) -> Duration {
        self.inner.op_timeout
    }

    /// The age past which entries are not served, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.inner.ttl
    }

    /// The path of the pointer object of `key` (exposed for tests and tooling).
    pub fn meta_path(&self, key: &str) -> Path {
        self.inner.layout.meta_path(&key_hash(key))
    }

    /// The packs this instance knows of, when [packing](BucketStoreBuilder::packing) is on.
    pub fn pack_stats(&self) -> Option<PackStats> {
        self.inner.packs.as_ref().map(|p| p.stats())
    }
}

#[async_trait]
impl Store for BucketStore {
    fn name(&self) -> &'static str {
        "object"
    }

    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        let inner = &self.inner;
        let h = key_hash(key);
        timed(key, inner.op_timeout, async {
            let p = match inner.lookup(key, &h).await? {
                None => return Ok(None),
                Some(Found::Packed(meta, body)) => {
                    let body = EntryBody::from_bytes(body);
                    return Ok(Some(StoredEntry::new(Arc::new(meta), body)));
                }
                Some(Found::Pointer(p)) => p,
            };
            let res = match inner.store.get(&p.body).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => {
                    // Replaced or expired by a lifecycle rule since the pointer was read.
                    tracing::debug!(key, body = %p.body, "object store: body gone, treated as a miss");
                    return Ok(None);
                }
                Err(e) => return Err(backend(key, e)),
            };
            let size = res.meta.size;
            let expected = p.meta.content_length;
            if expected != Some(size) {
                tracing::warn!(key, body = %p.body, size = res.meta.size, ?expected, "object store: body size differs from its metadata, treated as a miss");
                return Ok(None);
            }
            let stream = BodyStream::new(res.into_stream(), key.to_owned(), size, inner.op_timeout);
            Ok(Some(StoredEntry::new(
                Arc::new(p.meta),
                EntryBody::from_stream(stream),
            )))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<Metadata>, StoreError> {
        let inner = &self.inner;
        let h = key_hash(key);
        timed(key, inner.op_timeout, async {
            Ok(inner.lookup(key, &h).await?.map(|found| match found {
                Found::Pointer(p) => p.meta,
                Found::Packed(meta, _) => meta,
            }))
        })
        .await
    }

    async fn put(&self, key: &str, meta: Metadata) -> Result<Box<dyn StoreWriter>, StoreError> {
        Ok(Box::new(BucketWriter::new(self.inner.clone(), key, meta)))
    }

    async fn update_metadata(&self, key: &str, meta: Metadata) -> Result<bool, StoreError> {
        let h = key_hash(key);
        timed(
            key,
            self.inner.op_timeout,
            self.inner.refresh(key, &h, meta),
        )
        .await
    }

    /// Purges `key` (see [`BucketStore`]'s *Purges* section): its pointer becomes a tombstone.
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let h = key_hash(key);
        timed(key, self.inner.op_timeout, self.inner.tombstone(key, &h)).await
    }

    /// Masks every entry whose key starts with `prefix` and that was stored before now (or
    /// before the purge being replayed): they read as misses and cannot be committed. Returns 0:
    /// the bucket cannot count what it masks without reading every pointer.
    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        self.inner.floors.raise(prefix, purge_time());
        Ok(0)
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        if let Some(packs) = &inner.packs {
            packs.forget_all();
        }
        let root = inner.layout.prefix();
        let prefix = (!root.as_ref().is_empty()).then_some(root);
        // The purge log is not an entry: instances sharing the bucket keep reading it.
        let log = inner.layout.under(PURGE_DIR);
        let listing = inner
            .store
            .list(prefix)
            .map(|r| r.map(|m| m.location))
            .filter(move |r| std::future::ready(!matches!(r, Ok(p) if p.prefix_matches(&log))))
            .boxed();
        let mut deleted = inner.store.delete_stream(listing);
        // No overall limit (a big prefix takes long), but no step may stall past the op timeout.
        loop {
            match tokio::time::timeout(inner.op_timeout, deleted.next()).await {
                Err(_) => {
                    return Err(StoreError::Timeout {
                        key: String::new(),
                        after: inner.op_timeout,
                    })
                }
                Ok(None) => return Ok(()),
                Ok(Some(Ok(_))) | Ok(Some(Err(object_store::Error::NotFound { .. }))) => {}
                Ok(Some(Err(e))) => return Err(backend("", e)),
            }
        }
    }
}
