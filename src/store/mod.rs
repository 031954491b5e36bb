//! Storage tiers: the [`Store`] trait and its implementations.
//!
//! A store keeps entries (metadata plus a body) under string keys. Reads stream the body as `Bytes`
//! chunks; writes go through a [`StoreWriter`] that makes the entry visible only on
//! [`commit`](StoreWriter::commit). Dropping a writer without committing discards what it wrote:
//! no store may ever expose a partial entry.
//!
//! | store | where | notes |
//! |---|---|---|
//! | [`MemStore`] | memory | byte-bounded, sharded, zero-copy hits |
//! | [`FileStore`] | local disk | temp file + fsync + rename, survives restarts |
//! | [`NullStore`] | nowhere | the absent tier |
//!
//! Stores never call back into the engine or the HTTP face.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::entry::{Metadata, StoredEntry};
use crate::error::StoreError;

pub mod codec;
mod file;
mod mem;
mod null;
#[cfg(feature = "object-store")]
mod object;

pub use file::{CommitMode, FileStore, FileStoreBuilder};
pub use mem::{MemStore, MemStoreBuilder};
pub use null::NullStore;
#[cfg(feature = "object-store")]
pub use object::{
    BucketStore, BucketStoreBuilder, MalformedLogObject, PackStats, Packing, Purge, PurgeError,
    SharedPurges, SharedPurgesBuilder, SharedPurgesStats, MIN_PART_SIZE,
};

/// A storage tier.
///
/// Implementations must be cheap to share (`Arc<dyn Store>`) and safe to call concurrently.
/// Every method may fail; the engine treats failures as misses (reads) or skipped fills (writes),
/// so a broken tier degrades to the origin instead of failing requests.
#[async_trait]
pub trait Store: Debug + Send + Sync + 'static {
    /// A short name for logs and metric labels (`"memory"`, `"file"`, ...).
    fn name(&self) -> &'static str;

    /// Reads an entry: its metadata and a stream of its body.
    ///
    /// Returns `Ok(None)` when the key is absent. A body that turns out to be corrupt while
    /// streaming must end with an error item, never with a clean end.
    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError>;

    /// A synchronous lookup for stores that can answer without I/O (memory).
    ///
    /// Returns `None` when the store cannot answer synchronously; the engine then calls
    /// [`get`](Store::get). The default returns `None`.
    fn try_get_now(&self, key: &str) -> Option<Result<Option<StoredEntry>, StoreError>> {
        let _ = key;
        None
    }

    /// Reads an entry's metadata without reading its body.
    async fn head(&self, key: &str) -> Result<Option<Metadata>, StoreError>;

    /// Starts writing an entry. The entry becomes visible (replacing any previous one) only when
    /// the returned writer is committed.
    async fn put(&self, key: &str, meta: Metadata) -> Result<Box<dyn StoreWriter>, StoreError>;

    /// Replaces an existing entry's metadata, keeping its body (a `304 Not Modified` refresh).
    ///
    /// Returns `Ok(false)` when the entry is absent. The body length in the new metadata is
    /// ignored: the stored body's length is kept.
    async fn update_metadata(&self, key: &str, meta: Metadata) -> Result<bool, StoreError>;

    /// Removes an entry. Removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Whether this store never keeps anything (the engine skips it entirely).
    fn is_null(&self) -> bool {
        false
    }

    /// The largest body this store keeps, in bytes, when it has a limit (the default: none).
    ///
    /// The engine places each fill by it: a body declared larger goes to the first lower tier
    /// that keeps it, and a lower tier's entry too large for a tier above is served from where
    /// it is rather than promoted. A store that reports no limit may still refuse a write with
    /// [`StoreError::TooLarge`]; the engine then carries on without it.
    fn object_size_limit(&self) -> Option<u64> {
        None
    }

    /// Bytes currently held (committed entries plus writes in progress), when the store tracks it.
    fn used_bytes(&self) -> Option<u64> {
        None
    }

    /// Number of committed entries, when the store tracks it.
    fn len(&self) -> Option<u64> {
        None
    }

    /// Whether the store holds no entries (`None` when it does not track its size).
    fn is_empty(&self) -> Option<bool> {
        self.len().map(|n| n == 0)
    }

    /// Removes every entry.
    async fn clear(&self) -> Result<(), StoreError>;

    /// Removes every entry whose key starts with `prefix`; returns how many were removed.
    ///
    /// Stores that cannot enumerate their keys return [`StoreError::Unsupported`] (the
    /// default). It may be slow (it visits every entry): it is an administrative operation.
    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let _ = prefix;
        Err(StoreError::Unsupported { op: "purge_prefix" })
    }

    /// Entries evicted so far, when the store evicts and counts it.
    fn evictions(&self) -> Option<u64> {
        None
    }
}

/// A write in progress. Dropping it without [`commit`](StoreWriter::commit) discards it.
#[async_trait]
pub trait StoreWriter: Send {
    /// Appends a chunk. A `TooLarge` error means the store will not keep this entry; the caller
    /// drops the writer and carries on without it.
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;

    /// Makes the entry visible atomically, replacing any previous entry under the same key.
    /// The engine calls it only after the body ended cleanly and matched its declared length.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;

    /// Discards the write explicitly (the same as dropping it, but lets the store clean up
    /// asynchronously and report errors).
    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Bytes written so far.
    fn written(&self) -> u64;
}
