//! The cold tier on object storage: a [`Store`] over the [`object_store`] crate (S3, GCS, Azure,
//! a local directory, memory), shared by every cache instance that points at the same bucket.
//!
//! It must never expose a partial or foreign entry, never hold a whole body in memory, and never
//! let a slow or broken bucket hang a request: every operation runs under a timeout and every
//! failure is a [`StoreError`] carrying the key, which the engine treats as a miss (fail open).
//!
//! The layout in the bucket and the reasons for it are documented on [`BucketStore`]; operators'
//! notes (lifecycle rules, permissions) are in `docs/object-store.md`.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreScheme, PutPayload, PutPayloadMut};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use url::Url;

use super::{codec, Store, StoreWriter};
use crate::entry::{EntryBody, Metadata, StoredEntry};
use crate::error::{Error, StoreError};

#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
use object_store::RetryConfig;

/// S3's minimum size for every part but the last; smaller part sizes are raised to it.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
const DEFAULT_UPLOAD_CONCURRENCY: usize = 2;
const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(10);

const POINTER_MAGIC: &[u8; 4] = b"DJO1";
/// magic + crc32 + u16 path length.
const POINTER_HEADER: usize = 10;
/// A pointer larger than this is not ours: refuse to download it.
const MAX_POINTER_LEN: u64 =
    (codec::MAX_PAYLOAD + codec::FRAME_OVERHEAD + POINTER_HEADER) as u64 + u16::MAX as u64;

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
    prefix: Path,
    op_timeout: Duration,
    ttl: Option<Duration>,
    part_size: usize,
    upload_concurrency: usize,
    /// Random per instance, so that body paths from different processes never collide.
    nonce: u64,
    counter: AtomicU64,
}

/// Configures a [`BucketStore`].
///
/// What can be set depends on where the store comes from:
///
/// | setting | `Arc<dyn ObjectStore>` | URL |
/// |---|---|---|
/// | [`op_timeout`](Self::op_timeout), [`ttl`](Self::ttl), [`part_size`](Self::part_size), [`upload_concurrency`](Self::upload_concurrency) | yes | yes |
/// | [`option`](Self::option) (backend config keys: `aws_endpoint`, `timeout`, `allow_http`, ...) | no: configure the store you pass | cloud schemes |
/// | `retry` (`object_store::RetryConfig`, with `aws`/`gcp`/`azure`) | no: configure the store you pass | cloud schemes |
#[derive(Debug)]
#[must_use]
pub struct BucketStoreBuilder {
    source: Source,
    prefix: Path,
    op_timeout: Duration,
    ttl: Option<Duration>,
    part_size: usize,
    upload_concurrency: usize,
    options: Vec<(String, String)>,
    #[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
    retry: Option<RetryConfig>,
}

#[derive(Debug)]
enum Source {
    Store(Arc<dyn ObjectStore>),
    Url(Url, ObjectStoreScheme),
}

fn config_error(what: impl Into<crate::BoxError>) -> StoreError {
    StoreError::Backend {
        key: String::new(),
        source: what.into(),
    }
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
        &self.inner.prefix
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
        self.inner.meta_path(&key_hash(key))
    }
}

impl BucketStoreBuilder {
    fn with_source(source: Source, prefix: Path) -> Self {
        BucketStoreBuilder {
            source,
            prefix,
            op_timeout: DEFAULT_OP_TIMEOUT,
            ttl: None,
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            options: Vec::new(),
            #[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
            retry: None,
        }
    }

    /// Time limit of each store operation (a lookup, a part upload wait, a commit, a delete), and
    /// of the wait for each next chunk of a body being read. Default 10 s. When it fires the
    /// operation fails with [`StoreError::Timeout`] and the engine serves from the origin.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Entries whose `stored_at` is older than `ttl` are not served: they read as misses (and
    /// [`update_metadata`](Store::update_metadata) reports them absent). This bounds what the
    /// tier serves, not what the bucket holds: pair it with a lifecycle rule (see
    /// [`BucketStore`]). Ages are measured with the reader's clock against the writer's
    /// `stored_at`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Size of each multipart upload part, and of the single-PUT threshold: bodies up to this
    /// size are buffered and uploaded with one PUT. Default 8 MiB; clamped to S3's limits
    /// (5 MiB to 5 GiB).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
        self
    }

    /// How many parts of one body may be uploading at once (at least 1, default 2). A writer
    /// holds at most `(upload_concurrency + 1) * part_size` bytes of body.
    pub fn upload_concurrency(mut self, n: usize) -> Self {
        self.upload_concurrency = n.max(1);
        self
    }

    /// A backend configuration key and value, applied on top of the environment for a cloud
    /// URL (for S3, any `AmazonS3ConfigKey` spelling: `aws_endpoint`, `aws_region`,
    /// `allow_http`, `timeout`, `connect_timeout`, ...). An unknown key fails
    /// [`build`](Self::build). Not used for `file://` and `memory://`, nor for a store passed in.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// object_store's retry policy for a cloud URL (backoff, retry count, total retry time).
    /// Retries happen inside one operation, so keep `retry_timeout` below
    /// [`op_timeout`](Self::op_timeout) if a retried request should still finish in time.
    #[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Builds the store. Fails when a URL's backend cannot be configured (missing bucket or
    /// region, bad option).
    pub fn build(self) -> Result<BucketStore, StoreError> {
        let store: Arc<dyn ObjectStore> = match &self.source {
            Source::Store(s) => s.clone(),
            Source::Url(url, scheme) => self.url_store(url, scheme)?,
        };
        Ok(self.finish(store))
    }

    fn finish(self, store: Arc<dyn ObjectStore>) -> BucketStore {
        let nonce = RandomState::new().build_hasher().finish()
            ^ u64::from(std::process::id()).rotate_left(32);
        BucketStore {
            inner: Arc::new(Inner {
                store,
                prefix: self.prefix,
                op_timeout: self.op_timeout,
                ttl: self.ttl,
                part_size: self.part_size,
                upload_concurrency: self.upload_concurrency,
                nonce,
                counter: AtomicU64::new(0),
            }),
        }
    }

    fn url_store(
        &self,
        url: &Url,
        scheme: &ObjectStoreScheme,
    ) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let local_options = || {
            if self.options.is_empty() {
                Ok(())
            } else {
                Err(config_error(format!(
                    "options are not supported for {url}: configure the directory or pass a store"
                )))
            }
        };
        match scheme {
            ObjectStoreScheme::Local => {
                local_options()?;
                Ok(Arc::new(object_store::local::LocalFileSystem::new()))
            }
            ObjectStoreScheme::Memory => {
                local_options()?;
                Ok(Arc::new(InMemory::new()))
            }
            #[cfg(feature = "aws")]
            ObjectStoreScheme::AmazonS3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
                for (k, v) in &self.options {
                    let key: AmazonS3ConfigKey = k.parse().map_err(config_error)?;
                    b = b.with_config(key, v.clone());
                }
                if let Some(r) = &self.retry {
                    b = b.with_retry(r.clone());
                }
                Ok(Arc::new(b.build().map_err(config_error)?))
            }
            #[cfg(feature = "gcp")]
            ObjectStoreScheme::GoogleCloudStorage => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
                for (k, v) in &self.options {
                    let key: GoogleConfigKey = k.parse().map_err(config_error)?;
                    b = b.with_config(key, v.clone());
                }
                if let Some(r) = &self.retry {
                    b = b.with_retry(r.clone());
                }
                Ok(Arc::new(b.build().map_err(config_error)?))
            }
            #[cfg(feature = "azure")]
            ObjectStoreScheme::MicrosoftAzure => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut b = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
                for (k, v) in &self.options {
                    let key: AzureConfigKey = k.parse().map_err(config_error)?;
                    b = b.with_config(key, v.clone());
                }
                if let Some(r) = &self.retry {
                    b = b.with_retry(r.clone());
                }
                Ok(Arc::new(b.build().map_err(config_error)?))
            }
            other => Err(config_error(format!(
                "unsupported object store scheme {other:?}"
            ))),
        }
    }
}

fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut h = String::with_capacity(64);
    for b in digest {
        let _ = write!(h, "{b:02x}");
    }
    h
}

fn backend(key: &str, e: impl Into<crate::BoxError>) -> StoreError {
    StoreError::Backend {
        key: key.to_owned(),
        source: e.into(),
    }
}

fn corrupt(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Runs `fut` under `limit`, turning expiry into [`StoreError::Timeout`].
async fn timed<T>(
    key: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Timeout {
            key: key.to_owned(),
            after: limit,
        }),
    }
}

/// A decoded pointer object.
struct Pointer {
    key: String,
    meta: Metadata,
    body: Path,
}

fn encode_pointer(body: &Path, key: &str, meta: &Metadata) -> Vec<u8> {
    let record = codec::encode(key, meta);
    let path = body.as_ref().as_bytes();
    let mut rest = Vec::with_capacity(2 + path.len() + record.len());
    // Paths are built by `Inner::new_body_path` and stay far below 64 KiB.
    rest.extend_from_slice(&(path.len().min(u16::MAX as usize) as u16).to_le_bytes());
    rest.extend_from_slice(path);
    rest.extend_from_slice(&record);
    let mut out = Vec::with_capacity(8 + rest.len());
    out.extend_from_slice(POINTER_MAGIC);
    out.extend_from_slice(&crc32fast::hash(&rest).to_le_bytes());
    out.extend_from_slice(&rest);
    out
}

fn decode_pointer(buf: &[u8]) -> Result<Pointer, &'static str> {
    if buf.len() < POINTER_HEADER {
        return Err("short pointer record");
    }
    if &buf[..4] != POINTER_MAGIC {
        return Err("bad pointer magic");
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let rest = &buf[8..];
    if crc32fast::hash(rest) != crc {
        return Err("pointer checksum mismatch");
    }
    let path_len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
    let path_bytes = rest
        .get(2..2 + path_len)
        .ok_or("pointer path out of bounds")?;
    let path = std::str::from_utf8(path_bytes).map_err(|_| "pointer path is not UTF-8")?;
    let body = Path::parse(path).map_err(|_| "invalid pointer path")?;
    let (key, meta) = codec::decode(&rest[2 + path_len..]).map_err(|e| e.0)?;
    Ok(Pointer { key, meta, body })
}

impl Inner {
    fn dir(&self, h: &str) -> Path {
        self.prefix.child(&h[0..2]).child(&h[2..4])
    }

    fn meta_path(&self, h: &str) -> Path {
        self.dir(h).child(format!("{h}.meta"))
    }

    fn body_dir(&self, h: &str) -> Path {
        self.dir(h).child(h)
    }

    fn new_body_path(&self, h: &str) -> Path {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.body_dir(h)
            .child(format!("{:016x}-{n:016x}.body", self.nonce))
    }

    /// Whether `body` is a body path of the key hashed to `h`: a pointer never sends a reader
    /// (or a delete) outside its own key's directory, whatever the record says.
    fn owns_body(&self, h: &str, body: &Path) -> bool {
        let dir = self.body_dir(h);
        body.prefix_match(&dir)
            .map(|mut rest| {
                matches!((rest.next(), rest.next()), (Some(name), None) if name.as_ref().ends_with(".body"))
            })
            .unwrap_or(false)
    }

    /// Reads and decodes the pointer of hash `h`. `Ok(None)`: no pointer.
    async fn read_pointer(&self, key: &str, h: &str) -> Result<Option<Pointer>, StoreError> {
        let path = self.meta_path(h);
        let res = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(backend(key, e)),
        };
        if res.meta.size > MAX_POINTER_LEN {
            return Err(corrupt(
                key,
                format!("pointer object of {} bytes", res.meta.size),
            ));
        }
        let buf = match res.bytes().await {
            Ok(b) => b,
            // Deleted between the response headers and the body.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(backend(key, e)),
        };
        let p = decode_pointer(&buf).map_err(|reason| corrupt(key, reason))?;
        if !self.owns_body(h, &p.body) {
            return Err(corrupt(
                key,
                format!("pointer names a foreign body path {}", p.body),
            ));
        }
        Ok(Some(p))
    }

    /// The live entry of `key`: its pointer, when present, for this key and within the TTL.
    async fn lookup(&self, key: &str, h: &str) -> Result<Option<Pointer>, StoreError> {
        let Some(p) = self.read_pointer(key, h).await? else {
            return Ok(None);
        };
        if p.key != key {
            tracing::debug!(key, other = %p.key, "object store: hash collision, treated as a miss");
            return Ok(None);
        }
        if let Some(ttl) = self.ttl {
            if p.meta.age(SystemTime::now()) >= ttl {
                tracing::trace!(
                    key,
                    "object store: entry older than the TTL, treated as a miss"
                );
                return Ok(None);
            }
        }
        Ok(Some(p))
    }

    /// Deletes an object, treating "already gone" as success.
    async fn delete_quiet(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(key, e)),
        }
    }

    /// Deletes a body that no pointer names any more; failure only leaves garbage behind.
    async fn delete_body_best_effort(&self, key: &str, path: &Path) {
        if let Err(e) = timed(key, self.op_timeout, self.delete_quiet(key, path)).await {
            tracing::warn!(key, path = %path, error = %e, "object store: could not delete an unreferenced body (left for the lifecycle rule)");
        }
    }
}

/// A body object's stream that fails (never ends cleanly) when it stalls longer than `idle`,
/// breaks, or turns out longer or shorter than `expected`.
///
/// The stall clock runs only while the consumer waits for a chunk, so a slow client is not taken
/// for a stalled backend. One timer is re-armed rather than a new `timeout` per chunk: backends
/// such as the local filesystem yield many small chunks.
struct BodyStream {
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    key: String,
    expected: u64,
    received: u64,
    idle: Duration,
    stall: Pin<Box<tokio::time::Sleep>>,
    /// Whether `stall` is armed for the chunk being waited for.
    waiting: bool,
    done: bool,
}

impl BodyStream {
    fn new(
        inner: BoxStream<'static, object_store::Result<Bytes>>,
        key: String,
        expected: u64,
        idle: Duration,
    ) -> Self {
        BodyStream {
            inner,
            key,
            expected,
            received: 0,
            idle,
            stall: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            done: false,
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.waiting {
            let deadline = tokio::time::Instant::now() + this.idle;
            this.stall.as_mut().reset(deadline);
            this.waiting = true;
        }
        let polled = this.inner.as_mut().poll_next(cx);
        if polled.is_ready() {
            this.waiting = false;
        }
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                if this.received > this.expected {
                    return this.fail(Error::TooLong {
                        expected: this.expected,
                    });
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = Error::Store(backend(&this.key, e));
                this.fail(e)
            }
            Poll::Ready(None) if this.received == this.expected => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                let e = Error::Truncated {
                    received: this.received,
                    expected: this.expected,
                };
                this.fail(e)
            }
            Poll::Pending => match this.stall.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let e = Error::Store(StoreError::Timeout {
                        key: this.key.clone(),
                        after: this.idle,
                    });
                    this.fail(e)
                }
                Poll::Pending => Poll::Pending,
            },
        }
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
            let Some(p) = inner.lookup(key, &h).await? else {
                return Ok(None);
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
            Ok(inner.lookup(key, &h).await?.map(|p| p.meta))
        })
        .await
    }

    async fn put(&self, key: &str, meta: Metadata) -> Result<Box<dyn StoreWriter>, StoreError> {
        let h = key_hash(key);
        let body = self.inner.new_body_path(&h);
        Ok(Box::new(BucketWriter {
            inner: self.inner.clone(),
            key: key.to_owned(),
            h,
            meta,
            body,
            written: 0,
            state: WriteState::Buffering(PutPayloadMut::new()),
        }))
    }

    async fn update_metadata(&self, key: &str, mut meta: Metadata) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let h = key_hash(key);
        timed(key, inner.op_timeout, async {
            let Some(old) = inner.lookup(key, &h).await? else {
                return Ok(false);
            };
            meta.content_length = old.meta.content_length;
            // A writer committing concurrently may delete `old.body` after we read the pointer;
            // this pointer then names a missing body and reads as a miss, never as wrong bytes.
            let record = encode_pointer(&old.body, key, &meta);
            inner
                .store
                .put(&inner.meta_path(&h), PutPayload::from(record))
                .await
                .map_err(|e| backend(key, e))?;
            Ok(true)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let inner = &self.inner;
        let h = key_hash(key);
        timed(key, inner.op_timeout, async {
            let body = match inner.read_pointer(key, &h).await {
                Ok(Some(p)) if p.key != key => return Ok(()), // another key's entry
                Ok(Some(p)) => Some(p.body),
                Ok(None) => return Ok(()),
                // An unreadable pointer under this key's hash is removed all the same.
                Err(StoreError::Corrupt { .. }) => None,
                Err(e) => return Err(e),
            };
            inner.delete_quiet(key, &inner.meta_path(&h)).await?;
            if let Some(body) = body {
                if let Err(e) = inner.delete_quiet(key, &body).await {
                    tracing::warn!(key, error = %e, "object store: body left behind after delete (left for the lifecycle rule)");
                }
            }
            Ok(())
        })
        .await
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let prefix = (!inner.prefix.as_ref().is_empty()).then_some(&inner.prefix);
        let listing = inner
            .store
            .list(prefix)
            .map(|r| r.map(|m| m.location))
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

/// A multipart upload in progress. Dropping it before [`complete`](Self::complete) aborts the
/// upload in the background, so a cancelled fill leaves no dangling upload (which S3 would
/// otherwise keep, and bill, until a lifecycle rule removes it).
struct Multipart {
    upload: Option<Box<dyn MultipartUpload>>,
    buf: PutPayloadMut,
    tasks: JoinSet<object_store::Result<()>>,
    part_size: usize,
    abort_timeout: Duration,
    key: String,
}

impl Multipart {
    /// Buffers `bytes`, starting a part upload each time a part is full.
    fn push(&mut self, mut bytes: Bytes) {
        let Some(upload) = self.upload.as_mut() else {
            return;
        };
        while !bytes.is_empty() {
            let room = self.part_size - self.buf.content_length();
            if bytes.len() < room {
                self.buf.push(bytes);
                return;
            }
            self.buf.push(bytes.split_to(room));
            let part = std::mem::take(&mut self.buf).freeze();
            self.tasks.spawn(upload.put_part(part));
        }
    }

    /// Waits until fewer than `max` parts are uploading, surfacing the first failed part.
    async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        while !self.tasks.is_empty() && self.tasks.len() >= max {
            match self.tasks.join_next().await {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(e))) => return Err(backend(&self.key, e)),
                Some(Err(e)) => return Err(backend(&self.key, e)),
            }
        }
        Ok(())
    }

    /// Uploads the last part and completes the upload. On failure the upload is aborted.
    async fn complete(&mut self) -> Result<(), StoreError> {
        if let Some(upload) = self.upload.as_mut() {
            if !self.buf.is_empty() {
                let part = std::mem::take(&mut self.buf).freeze();
                self.tasks.spawn(upload.put_part(part));
            }
        }
        let res = async {
            self.wait_for_capacity(1).await?;
            match self.upload.as_mut() {
                Some(u) => u
                    .complete()
                    .await
                    .map(drop)
                    .map_err(|e| backend(&self.key, e)),
                None => Err(StoreError::Closed),
            }
        }
        .await;
        match res {
            Ok(()) => {
                self.upload = None;
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = self.abort().await {
                    tracing::warn!(key = %self.key, error = %abort, "object store: could not abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn abort(&mut self) -> Result<(), StoreError> {
        self.tasks.shutdown().await;
        match self.upload.take() {
            Some(mut u) => {
                timed(&self.key, self.abort_timeout, async {
                    u.abort().await.map_err(|e| backend(&self.key, e))
                })
                .await
            }
            None => Ok(()),
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let mut tasks = std::mem::take(&mut self.tasks);
        let key = std::mem::take(&mut self.key);
        let limit = self.abort_timeout;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tasks.shutdown().await;
                    match tokio::time::timeout(limit, upload.abort()).await {
                        Ok(Ok(())) => tracing::debug!(key, "object store: dropped multipart upload aborted"),
                        Ok(Err(e)) => tracing::warn!(key, error = %e, "object store: could not abort a dropped multipart upload (left for the lifecycle rule)"),
                        Err(_) => tracing::warn!(key, "object store: aborting a dropped multipart upload timed out (left for the lifecycle rule)"),
                    }
                });
            }
            Err(_) => {
                tracing::warn!(key, "object store: multipart upload dropped outside a runtime, not aborted (left for the lifecycle rule)");
            }
        }
    }
}

enum WriteState {
    /// Up to one part of body, uploaded with a single PUT if the body ends there.
    Buffering(PutPayloadMut),
    /// The body outgrew one part: a multipart upload is running.
    Uploading(Multipart),
    /// Committed or aborted.
    Done,
}

/// The writer of one [`BucketStore`] entry. See [`Store::put`].
struct BucketWriter {
    inner: Arc<Inner>,
    key: String,
    h: String,
    meta: Metadata,
    body: Path,
    written: u64,
    state: WriteState,
}

impl BucketWriter {
    async fn start_multipart(&mut self, pending: PutPayloadMut) -> Result<Multipart, StoreError> {
        let inner = &self.inner;
        let key = &self.key;
        let upload = timed(key, inner.op_timeout, async {
            inner
                .store
                .put_multipart(&self.body)
                .await
                .map_err(|e| backend(key, e))
        })
        .await?;
        let mut mp = Multipart {
            upload: Some(upload),
            buf: PutPayloadMut::new(),
            tasks: JoinSet::new(),
            part_size: inner.part_size,
            abort_timeout: inner.op_timeout,
            key: key.clone(),
        };
        for chunk in pending.freeze() {
            mp.push(chunk);
        }
        Ok(mp)
    }

    /// Uploads the body; afterwards it exists at `self.body`, unreferenced.
    async fn upload_body(&mut self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        let key = self.key.clone();
        match std::mem::replace(&mut self.state, WriteState::Done) {
            WriteState::Buffering(buf) => {
                timed(&key, inner.op_timeout, async {
                    inner
                        .store
                        .put(&self.body, buf.freeze())
                        .await
                        .map(drop)
                        .map_err(|e| backend(&key, e))
                })
                .await
            }
            WriteState::Uploading(mut mp) => {
                // On timeout `mp` is dropped here, which aborts the upload.
                timed(&key, inner.op_timeout, mp.complete()).await
            }
            WriteState::Done => Err(StoreError::Closed),
        }
    }
}

#[async_trait]
impl StoreWriter for BucketWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.written += chunk.len() as u64;
        let part_size = self.inner.part_size;
        if let WriteState::Buffering(buf) = &mut self.state {
            if buf.content_length() + chunk.len() <= part_size {
                buf.push(chunk);
                return Ok(());
            }
            let pending = std::mem::take(buf);
            self.state = WriteState::Done;
            let mp = self.start_multipart(pending).await?;
            self.state = WriteState::Uploading(mp);
        }
        match &mut self.state {
            WriteState::Uploading(mp) => {
                mp.push(chunk);
                let limit = self.inner.op_timeout;
                let max = self.inner.upload_concurrency;
                // Backpressure: the fill waits for part uploads instead of buffering the body.
                timed(&self.key, limit, mp.wait_for_capacity(max)).await
            }
            _ => Err(StoreError::Closed),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let key = self.key.clone();
        if let Some(declared) = self.meta.content_length {
            if declared != self.written {
                let _ = self.abort_upload().await;
                return Err(corrupt(
                    &key,
                    format!("declared {declared} bytes, wrote {}", self.written),
                ));
            }
        }
        self.meta.content_length = Some(self.written);
        self.upload_body().await?;

        // From here the body exists unreferenced: a failure leaves it for deletion below, a
        // cancellation leaves it to the lifecycle rule.
        let inner = self.inner.clone();
        let h = self.h.clone();
        let old = match timed(&key, inner.op_timeout, inner.read_pointer(&key, &h)).await {
            Ok(Some(p)) if p.key == key && p.body != self.body => Some(p.body),
            _ => None,
        };
        let record = encode_pointer(&self.body, &key, &self.meta);
        let swapped = timed(&key, inner.op_timeout, async {
            inner
                .store
                .put(&inner.meta_path(&h), PutPayload::from(record))
                .await
                .map(drop)
                .map_err(|e| backend(&key, e))
        })
        .await;
        if let Err(e) = swapped {
            inner.delete_body_best_effort(&key, &self.body).await;
            return Err(e);
        }
        if let Some(old) = old {
            inner.delete_body_best_effort(&key, &old).await;
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.abort_upload().await
    }

    fn written(&self) -> u64 {
        self.written
    }
}

impl BucketWriter {
    async fn abort_upload(&mut self) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.state, WriteState::Done) {
            WriteState::Uploading(mut mp) => mp.abort().await,
            WriteState::Buffering(_) | WriteState::Done => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use object_store::local::LocalFileSystem;
    use object_store::throttle::{ThrottleConfig, ThrottledStore};

    use super::*;

    const MIB: usize = 1024 * 1024;

    fn body(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    fn ok_meta() -> Metadata {
        Metadata::new(http::StatusCode::OK).with_etag("\"v1\"")
    }

    async fn fill(store: &BucketStore, key: &str, data: &Bytes, chunk: usize) {
        let mut w = store.put(key, ok_meta()).await.expect("put");
        for c in data.chunks(chunk.max(1)) {
            w.write(data.slice_ref(c)).await.expect("write");
        }
        w.commit().await.expect("commit");
    }

    async fn read(store: &BucketStore, key: &str) -> Option<(Arc<Metadata>, Bytes)> {
        let e = store.get(key).await.expect("get")?;
        Some((e.meta, e.body.collect().await.expect("body")))
    }

    async fn objects(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
        let prefix = Path::from(prefix);
        let mut out: Vec<String> = store
            .list(Some(&prefix))
            .map(|m| m.expect("list").location.to_string())
            .collect()
            .await;
        out.sort();
        out
    }

    fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    fn memory() -> (Arc<dyn ObjectStore>, BucketStore) {
        let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = BucketStore::builder(os.clone(), "cache")
            .part_size(MIN_PART_SIZE)
            .build();
        (os, store.expect("build"))
    }

    fn local(dir: &tempfile::TempDir) -> BucketStore {
        let os = LocalFileSystem::new_with_prefix(dir.path()).expect("local fs");
        BucketStore::builder(Arc::new(os), "cache")
            .part_size(MIN_PART_SIZE)
            .build()
            .expect("build")
    }

    #[tokio::test]
    async fn committed_entry_reads_back_byte_for_byte_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mem) = memory();
        for store in [mem, local(&dir)] {
            for (key, len) in [("empty", 0), ("small", 1000), ("multipart", 11 * MIB + 7)] {
                let data = body(len);
                fill(&store, key, &data, 256 * 1024).await;
                let (meta, got) = read(&store, key).await.expect("hit");
                assert_eq!(got, data, "{key}");
                assert_eq!(meta.content_length, Some(len as u64));
                assert_eq!(meta.etag.as_deref(), Some("\"v1\""));
            }
        }
    }

    #[tokio::test]
    async fn uncommitted_entry_is_invisible() {
        let (os, store) = memory();
        let mut w = store.put("k", ok_meta()).await.unwrap();
        w.write(body(100)).await.unwrap();
        assert!(store.head("k").await.unwrap().is_none());
        assert!(store.get("k").await.unwrap().is_none());
        drop(w);
        assert!(objects(&os, "cache").await.is_empty());
    }

    #[tokio::test]
    async fn head_reads_the_pointer_without_touching_the_body() {
        let (os, store) = memory();
        fill(&store, "k", &body(5000), 5000).await;
        // Remove every body object: head must still answer from the pointer alone.
        for p in objects(&os, "cache").await {
            if p.ends_with(".body") {
                os.delete(&Path::from(p)).await.unwrap();
            }
        }
        let meta = store.head("k").await.unwrap().expect("head from pointer");
        assert_eq!(meta.content_length, Some(5000));
        // ...while a get, which needs the body, is a miss.
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn overwrite_replaces_entry_and_deletes_the_old_body() {
        let (os, store) = memory();
        fill(&store, "k", &body(10), 10).await;
        let second = Bytes::from_static(b"second version");
        let mut w = store.put("k", ok_meta().with_etag("\"v2\"")).await.unwrap();
        w.write(second.clone()).await.unwrap();
        w.commit().await.unwrap();
        let (meta, got) = read(&store, "k").await.unwrap();
        assert_eq!(got, second);
        assert_eq!(meta.etag.as_deref(), Some("\"v2\""));
        let objs = objects(&os, "cache").await;
        assert_eq!(
            objs.iter().filter(|p| p.ends_with(".body")).count(),
            1,
            "{objs:?}"
        );
        assert_eq!(
            objs.iter().filter(|p| p.ends_with(".meta")).count(),
            1,
            "{objs:?}"
        );
    }

    #[tokio::test]
    async fn delete_removes_pointer_and_body() {
        let (os, store) = memory();
        fill(&store, "k", &body(10), 10).await;
        fill(&store, "other", &body(10), 10).await;
        store.delete("k").await.unwrap();
        store.delete("never-stored").await.unwrap();
        assert!(store.get("k").await.unwrap().is_none());
        assert_eq!(objects(&os, "cache").await.len(), 2, "only `other` is left");
        assert!(read(&store, "other").await.is_some());
    }

    #[tokio::test]
    async fn update_metadata_keeps_the_body_and_its_length() {
        let (_, store) = memory();
        let data = body(3000);
        fill(&store, "k", &data, 1000).await;
        let refreshed = ok_meta().with_etag("\"v9\"").with_content_length(1);
        assert!(store.update_metadata("k", refreshed).await.unwrap());
        let (meta, got) = read(&store, "k").await.unwrap();
        assert_eq!(got, data);
        assert_eq!(meta.etag.as_deref(), Some("\"v9\""));
        assert_eq!(meta.content_length, Some(3000));
        assert!(!store.update_metadata("absent", ok_meta()).await.unwrap());
    }

    #[tokio::test]
    async fn aborted_multipart_upload_leaves_no_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(&dir);
        let mut w = store.put("big", ok_meta()).await.unwrap();
        for _ in 0..12 {
            w.write(body(MIB)).await.unwrap();
        }
        assert!(
            !files_under(dir.path()).is_empty(),
            "the upload is staged on disk"
        );
        w.abort().await.unwrap();
        assert_eq!(files_under(dir.path()), Vec::<std::path::PathBuf>::new());
        assert!(store.get("big").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn dropped_multipart_writer_is_aborted_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(&dir);
        let mut w = store.put("big", ok_meta()).await.unwrap();
        for _ in 0..12 {
            w.write(body(MIB)).await.unwrap();
        }
        assert!(!files_under(dir.path()).is_empty());
        drop(w);
        // The abort runs on a spawned task; give it a bounded number of turns.
        let mut left = files_under(dir.path());
        for _ in 0..500 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            left = files_under(dir.path());
        }
        assert_eq!(left, Vec::<std::path::PathBuf>::new());
    }

    #[tokio::test]
    async fn body_not_matching_declared_length_is_not_committed() {
        let (os, store) = memory();
        let mut w = store
            .put("k", ok_meta().with_content_length(10))
            .await
            .unwrap();
        w.write(body(9)).await.unwrap();
        assert!(matches!(w.commit().await, Err(StoreError::Corrupt { .. })));
        assert!(store.head("k").await.unwrap().is_none());
        assert!(objects(&os, "cache").await.is_empty());
    }

    #[tokio::test]
    async fn entry_older_than_the_ttl_is_a_miss() {
        let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = BucketStore::builder(os, "c")
            .ttl(Duration::from_secs(3600))
            .build()
            .unwrap();
        let mut old = ok_meta();
        old.stored_at = SystemTime::now() - Duration::from_secs(7200);
        let mut w = store.put("old", old.clone()).await.unwrap();
        w.write(body(10)).await.unwrap();
        w.commit().await.unwrap();
        fill(&store, "new", &body(10), 10).await;

        assert!(store.get("old").await.unwrap().is_none());
        assert!(store.head("old").await.unwrap().is_none());
        assert!(!store.update_metadata("old", old).await.unwrap());
        assert!(read(&store, "new").await.is_some());
    }

    #[tokio::test]
    async fn hash_collision_is_a_miss_not_another_keys_body() {
        let (os, store) = memory();
        // What key "a" would have written if it hashed like "b": its body in b's directory and
        // a pointer at b's path that records "a".
        let h = key_hash("b");
        let body_path = store.inner.new_body_path(&h);
        os.put(&body_path, body(10).into()).await.unwrap();
        let record = encode_pointer(&body_path, "a", &ok_meta().with_content_length(10));
        os.put(&store.meta_path("b"), record.into()).await.unwrap();

        assert!(store.get("b").await.unwrap().is_none());
        assert!(store.head("b").await.unwrap().is_none());
        assert!(!store.update_metadata("b", ok_meta()).await.unwrap());
        // Deleting `b` must not take the other key's entry with it.
        store.delete("b").await.unwrap();
        assert!(os.head(&store.meta_path("b")).await.is_ok());
        assert!(os.head(&body_path).await.is_ok());
    }

    #[tokio::test]
    async fn corrupt_pointer_is_an_error_and_can_be_deleted() {
        let (os, store) = memory();
        fill(&store, "k", &body(10), 10).await;
        let path = store.meta_path("k");
        let mut raw = os.get(&path).await.unwrap().bytes().await.unwrap().to_vec();
        let last = raw.len() - 1;
        raw[last] ^= 0x55;
        os.put(&path, raw.into()).await.unwrap();
        assert!(matches!(
            store.get("k").await,
            Err(StoreError::Corrupt { .. })
        ));
        os.put(&path, Bytes::from_static(b"garbage").into())
            .await
            .unwrap();
        assert!(matches!(
            store.head("k").await,
            Err(StoreError::Corrupt { .. })
        ));
        store.delete("k").await.unwrap();
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn pointer_naming_a_foreign_path_is_rejected() {
        let (os, store) = memory();
        fill(&store, "victim", &body(10), 10).await;
        let foreign = Path::from("cache/elsewhere/x.body");
        os.put(&foreign, Bytes::from_static(b"0123456789").into())
            .await
            .unwrap();
        let meta = ok_meta().with_content_length(10);
        let record = encode_pointer(&foreign, "k", &meta);
        os.put(&store.meta_path("k"), record.into()).await.unwrap();
        assert!(matches!(
            store.get("k").await,
            Err(StoreError::Corrupt { .. })
        ));
        store.delete("k").await.unwrap();
        assert!(
            os.head(&foreign).await.is_ok(),
            "delete stays inside the key's directory"
        );
    }

    #[tokio::test]
    async fn body_of_the_wrong_size_is_a_miss() {
        let (os, store) = memory();
        fill(&store, "k", &body(100), 100).await;
        let body_path = objects(&os, "cache")
            .await
            .into_iter()
            .find(|p| p.ends_with(".body"))
            .unwrap();
        os.put(&Path::from(body_path), body(99).into())
            .await
            .unwrap();
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[test]
    fn pointer_record_round_trips_and_rejects_every_bit_flip() {
        let body = Path::from("p/ab/cd/h/x.body");
        let mut meta = ok_meta().with_content_length(42);
        // The codec keeps microseconds.
        meta.stored_at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let rec = encode_pointer(&body, "key", &meta);
        let p = decode_pointer(&rec).unwrap();
        assert_eq!((p.key.as_str(), p.body.as_ref()), ("key", body.as_ref()));
        assert_eq!(p.meta, meta);
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x10;
            assert!(decode_pointer(&bad).is_err(), "flip at {i} accepted");
        }
        for n in 0..rec.len() {
            assert!(decode_pointer(&rec[..n]).is_err());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_backend_times_out_instead_of_hanging() {
        let os = InMemory::new();
        let slow = ThrottledStore::new(
            os,
            ThrottleConfig {
                wait_get_per_call: Duration::from_secs(3600),
                wait_put_per_call: Duration::from_secs(3600),
                wait_delete_per_call: Duration::from_secs(3600),
                ..ThrottleConfig::default()
            },
        );
        let store = BucketStore::builder(Arc::new(slow), "c")
            .op_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let timed_out = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Timeout { ref key, .. }) if key == "k");
        assert!(timed_out(store.get("k").await.map(drop)));
        assert!(timed_out(store.head("k").await.map(drop)));
        assert!(timed_out(store.delete("k").await));
        assert!(timed_out(
            store.update_metadata("k", ok_meta()).await.map(drop)
        ));
        let mut w = store.put("k", ok_meta()).await.unwrap();
        w.write(body(10)).await.unwrap();
        assert!(timed_out(w.commit().await));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_body_ends_with_a_timeout_error() {
        let first = futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))]);
        let inner = first.chain(futures_util::stream::pending()).boxed();
        let mut s = BodyStream::new(inner, "k".into(), 6, Duration::from_secs(1));
        assert_eq!(s.next().await.unwrap().unwrap(), "abc");
        assert!(matches!(
            s.next().await,
            Some(Err(Error::Store(StoreError::Timeout { .. })))
        ));
        assert!(s.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_consumer_is_not_taken_for_a_stalled_body() {
        // Each chunk takes half the idle limit to arrive once asked for.
        let inner = futures_util::stream::unfold(0u8, |i| async move {
            if i == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some((Ok(Bytes::from(vec![i; 2])), i + 1))
        })
        .boxed();
        let mut s = BodyStream::new(inner, "k".into(), 6, Duration::from_secs(1));
        let mut got = Vec::new();
        while let Some(chunk) = s.next().await {
            got.extend_from_slice(&chunk.expect("no stall"));
            // The client takes far longer than the idle limit between reads.
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        assert_eq!(got, [0, 0, 1, 1, 2, 2]);
    }

    #[tokio::test]
    async fn body_shorter_or_longer_than_expected_ends_with_an_error() {
        let short = futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))]).boxed();
        let mut s = BodyStream::new(short, "k".into(), 4, Duration::from_secs(1));
        assert!(s.next().await.unwrap().is_ok());
        assert!(matches!(s.next().await, Some(Err(Error::Truncated { .. }))));
        let long = futures_util::stream::iter([Ok(Bytes::from_static(b"abcde"))]).boxed();
        let mut s = BodyStream::new(long, "k".into(), 4, Duration::from_secs(1));
        assert!(matches!(s.next().await, Some(Err(Error::TooLong { .. }))));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn two_instances_on_one_bucket_see_each_others_entries() {
        let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = BucketStore::new(os.clone(), "shared");
        let b = BucketStore::new(os, "shared");
        fill(&a, "k", &body(1234), 100).await;
        assert_eq!(read(&b, "k").await.unwrap().1, body(1234));
        b.delete("k").await.unwrap();
        assert!(a.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn clear_removes_everything_under_the_prefix_only() {
        let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = BucketStore::new(os.clone(), "a");
        let b = BucketStore::new(os.clone(), "b");
        fill(&a, "k1", &body(10), 10).await;
        fill(&a, "k2", &body(10), 10).await;
        fill(&b, "k1", &body(10), 10).await;
        a.clear().await.unwrap();
        assert!(objects(&os, "a").await.is_empty());
        assert_eq!(objects(&os, "b").await.len(), 2);
    }

    #[tokio::test]
    async fn file_url_stores_under_the_urls_directory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/cold", dir.path().display());
        let store = BucketStore::from_url(&url).unwrap().build().unwrap();
        fill(&store, "k", &body(10), 10).await;
        assert_eq!(read(&store, "k").await.unwrap().1, body(10));
        let files = files_under(&dir.path().join("cold"));
        assert_eq!(files.len(), 2, "{files:?}");
    }

    #[test]
    fn unsupported_urls_are_errors() {
        assert!(BucketStore::from_url("ftp://host/x").is_err());
        assert!(BucketStore::from_url("not a url").is_err());
        assert!(BucketStore::from_url("memory:///x")
            .unwrap()
            .option("k", "v")
            .build()
            .is_err());
        #[cfg(not(feature = "aws"))]
        assert!(BucketStore::from_url("s3://bucket/x").is_err());
    }
}
