//! [`BucketStoreBuilder`]: where the store comes from (an `Arc<dyn ObjectStore>` or a URL) and
//! its settings.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme};
use url::Url;

#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
use object_store::RetryConfig;

use super::commit::Swapper;
use super::floors::Floors;
use super::layout::Layout;
use super::pack::{Packing, Packs};
use super::{BucketStore, Inner, MIN_PART_SIZE, PACK_DIR};
use crate::error::StoreError;

const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
const DEFAULT_UPLOAD_CONCURRENCY: usize = 2;
const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(10);

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
    packing: Option<Packing>,
    options: Vec<(String, String)>,
    #[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
    retry: Option<RetryConfig>,
}

#[derive(Debug)]
pub(super) enum Source {
    Store(Arc<dyn ObjectStore>),
    Url(Url, ObjectStoreScheme),
}

pub(super) fn config_error(what: impl Into<crate::BoxError>) -> StoreError {
    StoreError::Backend {
        key: String::new(),
        source: what.into(),
    }
}

/// Builds a cloud backend from the environment, the URL, the options and the retry policy. A
/// macro because the three builders share this shape but no trait.
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
macro_rules! cloud_store {
    ($this:expr, $url:expr, $builder:ty, $key:ty) => {{
        let mut b = <$builder>::from_env().with_url($url.as_str());
        for (k, v) in &$this.options {
            let key: $key = k.parse().map_err(config_error)?;
            b = b.with_config(key, v.clone());
        }
        if let Some(r) = &$this.retry {
            b = b.with_retry(r.clone());
        }
        Ok(Arc::new(b.build().map_err(config_error)?))
    }};
}

impl BucketStoreBuilder {
    pub(super) fn with_source(source: Source, prefix: Path) -> Self {
        BucketStoreBuilder {
            source,
            prefix,
            op_timeout: DEFAULT_OP_TIMEOUT,
            ttl: None,
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            packing: None,
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
    /// [`update_metadata`](crate::store::Store::update_metadata) reports them absent). This bounds what the
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

    /// Packs bodies up to `packing.threshold` bytes into shared pack objects instead of one
    /// object each (off by default): many small fills then cost one PUT per pack, at the price
    /// of a commit waiting up to `packing.flush_after` for its pack to be stored. See
    /// `docs/object-store.md`, *Small objects*.
    pub fn packing(mut self, packing: Packing) -> Self {
        self.packing = Some(packing);
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

    pub(super) fn finish(self, store: Arc<dyn ObjectStore>) -> BucketStore {
        let layout = Layout::new(self.prefix);
        let packs = self.packing.map(|cfg| {
            let dir = layout.under(PACK_DIR);
            Arc::new(Packs::new(
                cfg,
                self.ttl,
                store.clone(),
                dir,
                self.op_timeout,
            ))
        });
        BucketStore {
            inner: Arc::new(Inner {
                store,
                layout,
                packs,
                op_timeout: self.op_timeout,
                ttl: self.ttl,
                part_size: self.part_size,
                upload_concurrency: self.upload_concurrency,
                swapper: Swapper::default(),
                floors: Floors::default(),
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
                cloud_store!(self, url, AmazonS3Builder, AmazonS3ConfigKey)
            }
            #[cfg(feature = "gcp")]
            ObjectStoreScheme::GoogleCloudStorage => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                cloud_store!(self, url, GoogleCloudStorageBuilder, GoogleConfigKey)
            }
            #[cfg(feature = "azure")]
            ObjectStoreScheme::MicrosoftAzure => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                cloud_store!(self, url, MicrosoftAzureBuilder, AzureConfigKey)
            }
            other => Err(config_error(format!(
                "unsupported object store scheme {other:?}"
            ))),
        }
    }
}
