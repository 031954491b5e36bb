//! How a site purges: on its own tiers, or, when its cold tier is a shared bucket, through the
//! bucket's purge log ([`SharedPurges`](daramjwee::store::SharedPurges)), so a purge on one
//! instance reaches every instance's hot tier within the log's poll interval.

use daramjwee::Cache;

/// Why a purge failed: on this instance's tiers, or publishing it to the shared bucket.
#[derive(Debug, thiserror::Error)]
pub enum PurgeFailed {
    /// Removing from this instance's tiers failed.
    #[error(transparent)]
    Local(#[from] daramjwee::Error),
    /// The purge could not be written to the bucket's purge log.
    #[cfg(feature = "object-store")]
    #[error(transparent)]
    Shared(#[from] daramjwee::store::PurgeError),
}

/// A site's purges.
#[derive(Clone, Debug)]
pub struct Purger {
    cache: Cache,
    #[cfg(feature = "object-store")]
    shared: Option<daramjwee::store::SharedPurges>,
}

impl Purger {
    /// Purges applied to this instance's tiers only.
    pub fn local(cache: Cache) -> Purger {
        Purger {
            cache,
            #[cfg(feature = "object-store")]
            shared: None,
        }
    }

    /// Purges shared through `bucket` (the site's cold tier) with every instance using it.
    #[cfg(feature = "object-store")]
    pub async fn shared(
        cache: Cache,
        bucket: daramjwee::store::BucketStore,
    ) -> Result<Purger, daramjwee::store::PurgeError> {
        let shared = daramjwee::store::SharedPurges::builder(cache.clone(), bucket)
            .start()
            .await?;
        Ok(Purger {
            cache,
            shared: Some(shared),
        })
    }

    /// Whether purges reach the other instances sharing the bucket.
    pub fn is_shared(&self) -> bool {
        #[cfg(feature = "object-store")]
        return self.shared.is_some();
        #[cfg(not(feature = "object-store"))]
        false
    }

    /// Purges one key.
    pub async fn key(&self, key: &str) -> Result<(), PurgeFailed> {
        #[cfg(feature = "object-store")]
        if let Some(shared) = &self.shared {
            return Ok(shared.purge_key(key).await?);
        }
        Ok(self.cache.delete(key).await?)
    }

    /// Purges every key under `prefix`; the count of removed entries when it is known (a
    /// shared purge is applied by each instance on its own).
    pub async fn prefix(&self, prefix: &str) -> Result<Option<u64>, PurgeFailed> {
        #[cfg(feature = "object-store")]
        if let Some(shared) = &self.shared {
            shared.purge_prefix(prefix).await?;
            return Ok(None);
        }
        Ok(Some(self.cache.purge_prefix(prefix).await?))
    }

    /// Stops following the shared log (a site being dropped or closed).
    pub fn shutdown(&self) {
        #[cfg(feature = "object-store")]
        if let Some(shared) = &self.shared {
            shared.shutdown();
        }
    }
}
