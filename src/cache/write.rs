//! [`CacheWriter`]: the streaming writer returned by [`Cache::set`].

use bytes::Bytes;

use super::keys::Usage;
use super::Cache;
use crate::error::{Error, StoreError};
use crate::store::StoreWriter;

/// A streaming write into the cache, from [`Cache::set`].
///
/// Write the body with [`write`](CacheWriter::write), then [`commit`](CacheWriter::commit).
/// Dropping it without committing discards everything written: no partial entry is ever
/// visible.
///
/// ```
/// use daramjwee::{Cache, Metadata};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), daramjwee::Error> {
/// let cache = Cache::builder().build();
/// let mut w = cache.set("k", Metadata::new(http::StatusCode::OK)).await?;
/// w.write("hello ".into()).await?;
/// w.write("world".into()).await?;
/// w.commit().await?;
/// let hit = cache.get("k", |_| async { unreachable!() }).await?;
/// assert_eq!(hit.body.collect().await?, "hello world");
/// # Ok(()) }
/// ```
pub struct CacheWriter {
    cache: Cache,
    key: String,
    usage: Usage,
    declared: Option<u64>,
    written: u64,
    writers: Vec<(usize, Box<dyn StoreWriter>)>,
}

impl std::fmt::Debug for CacheWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheWriter")
            .field("written", &self.written)
            .field("declared", &self.declared)
            .finish_non_exhaustive()
    }
}

impl CacheWriter {
    pub(super) fn new(
        cache: Cache,
        key: String,
        usage: Usage,
        declared: Option<u64>,
        writers: Vec<(usize, Box<dyn StoreWriter>)>,
    ) -> Self {
        CacheWriter {
            cache,
            key,
            usage,
            declared,
            written: 0,
            writers,
        }
    }

    /// Appends a chunk. Fails if the hot tier refuses it (the write is then unusable); a lower
    /// tier that fails is dropped from this write.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.written += chunk.len() as u64;
        if let Some(d) = self.declared {
            if self.written > d {
                return Err(Error::TooLong { expected: d });
            }
        }
        self.cache
            .write_all(&self.key, &mut self.writers, &chunk, true)
            .await
            .map_err(Error::Store)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the entry visible. Fails with [`Error::Truncated`] if fewer bytes than declared
    /// were written, and with [`Error::Superseded`] if a newer `set` or `delete` of the key
    /// started meanwhile (this write is then discarded).
    pub async fn commit(self) -> Result<(), Error> {
        if let Some(d) = self.declared {
            if self.written != d {
                return Err(Error::Truncated {
                    received: self.written,
                    expected: d,
                });
            }
        }
        let Some(lock) = self.usage.lock_if_current().await else {
            return Err(Error::Superseded);
        };
        let op = self.cache.op_timeout();
        let mut hot = Ok(());
        let mut committed = Vec::with_capacity(self.writers.len());
        for (tier, w) in self.writers {
            let res = tokio::time::timeout(op, w.commit())
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Timeout {
                        key: self.key.clone(),
                        after: op,
                    })
                });
            match res {
                Ok(()) => committed.push(tier),
                Err(e) if tier == 0 => hot = Err(Error::Store(e)),
                Err(e) => tracing::warn!(error = %e, "lower tier failed to commit a set"),
            }
        }
        drop(lock);
        hot?;
        self.cache
            .after_set_commit(&self.key, self.usage.ticket, committed);
        Ok(())
    }

    /// Discards the write.
    pub async fn abort(self) {
        for (_, w) in self.writers {
            let _ = w.abort().await;
        }
    }
}
