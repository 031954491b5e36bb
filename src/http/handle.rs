//! [`CacheHandle`]: operate the cache behind a layer (stats, purge, clear).

use std::sync::Arc;

use http::Request;

use super::config::HttpConfig;
use crate::cache::{Cache, CacheStats};
use crate::error::Error;

/// A control handle for the cache behind a [`CacheLayer`](super::CacheLayer).
///
/// Every clone of the layer, and every service it built, shares the cache this handle
/// controls. Purging by URL uses the layer's own key function, so it removes exactly what
/// the layer stored for that URL.
///
/// ```
/// use daramjwee::{http::CacheLayer, Cache};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), daramjwee::Error> {
/// let layer = CacheLayer::new(Cache::builder().build());
/// let handle = layer.handle();
/// handle.purge_url("http://example.com/report").await?;
/// let removed = handle.purge_prefix("http://example.com/assets/").await?;
/// println!("{removed} removed, {:?}", handle.stats());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CacheHandle {
    cache: Cache,
    config: Arc<HttpConfig>,
}

impl std::fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CacheHandle {
    pub(crate) fn new(cache: Cache, config: Arc<HttpConfig>) -> Self {
        CacheHandle { cache, config }
    }

    /// The engine.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A snapshot of the cache's counters.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The key the layer stores a GET of `url` under (with its `Host` taken from the URL).
    pub fn key_for(&self, url: &str) -> Result<String, Error> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::Fetch(Box::new(e)))?;
        let mut req = Request::get(uri.clone());
        if let Some(a) = uri.authority() {
            req = req.header(http::header::HOST, a.as_str());
        }
        let (parts, ()) = req
            .body(())
            .map_err(|e| Error::Fetch(Box::new(e)))?
            .into_parts();
        Ok(self.config.key.make(&parts))
    }

    /// Removes what the layer stored for a GET of `url`.
    pub async fn purge_url(&self, url: &str) -> Result<(), Error> {
        let key = self.key_for(url)?;
        self.cache.delete(&key).await
    }

    /// Removes one entry by its cache key.
    pub async fn purge_key(&self, key: &str) -> Result<(), Error> {
        self.cache.delete(key).await
    }

    /// Removes every entry whose key starts with `prefix` (for the default key function, a
    /// URL prefix such as `http://example.com/assets/`). Returns how many were removed.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<u64, Error> {
        self.cache.purge_prefix(prefix).await
    }

    /// Empties one tier (0 is hot).
    pub async fn clear_tier(&self, tier: usize) -> Result<(), Error> {
        self.cache.clear_tier(tier).await
    }
}
