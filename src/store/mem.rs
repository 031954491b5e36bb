//! In-memory store (stub: being written).
/// In-memory store.
#[derive(Debug)]
pub struct MemStore;
/// Builder for [`MemStore`].
#[derive(Debug)]
pub struct MemStoreBuilder;
impl MemStore {
    /// Temporary.
    pub fn new(_capacity: u64) -> Self {
        MemStore
    }
}
#[async_trait::async_trait]
impl super::Store for MemStore {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn get(&self, _key: &str) -> Result<Option<crate::StoredEntry>, crate::StoreError> {
        Ok(None)
    }
    async fn head(&self, _key: &str) -> Result<Option<crate::Metadata>, crate::StoreError> {
        Ok(None)
    }
    async fn put(
        &self,
        _key: &str,
        _meta: crate::Metadata,
    ) -> Result<Box<dyn super::StoreWriter>, crate::StoreError> {
        Err(crate::StoreError::Closed)
    }
    async fn update_metadata(
        &self,
        _key: &str,
        _meta: crate::Metadata,
    ) -> Result<bool, crate::StoreError> {
        Ok(false)
    }
    async fn delete(&self, _key: &str) -> Result<(), crate::StoreError> {
        Ok(())
    }
    async fn clear(&self) -> Result<(), crate::StoreError> {
        Ok(())
    }
}
