//! The store that keeps nothing: the absent cold tier.

use async_trait::async_trait;
use bytes::Bytes;

use super::{Store, StoreWriter};
use crate::entry::{Metadata, StoredEntry};
use crate::error::StoreError;

/// A store that keeps nothing. Every read misses and every write is discarded.
///
/// ```
/// use daramjwee::store::{NullStore, Store};
/// assert!(NullStore.is_null());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NullStore;

struct NullWriter(u64);

#[async_trait]
impl StoreWriter for NullWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.0 += chunk.len() as u64;
        Ok(())
    }
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
    fn written(&self) -> u64 {
        self.0
    }
}

#[async_trait]
impl Store for NullStore {
    fn name(&self) -> &'static str {
        "null"
    }
    async fn get(&self, _key: &str) -> Result<Option<StoredEntry>, StoreError> {
        Ok(None)
    }
    fn try_get_now(&self, _key: &str) -> Option<Result<Option<StoredEntry>, StoreError>> {
        Some(Ok(None))
    }
    async fn head(&self, _key: &str) -> Result<Option<Metadata>, StoreError> {
        Ok(None)
    }
    async fn put(&self, _key: &str, _meta: Metadata) -> Result<Box<dyn StoreWriter>, StoreError> {
        Ok(Box::new(NullWriter(0)))
    }
    async fn update_metadata(&self, _key: &str, _meta: Metadata) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn delete(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn is_null(&self) -> bool {
        true
    }
    fn used_bytes(&self) -> Option<u64> {
        Some(0)
    }
    fn len(&self) -> Option<u64> {
        Some(0)
    }
    async fn clear(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
