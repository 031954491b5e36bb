//! In-memory store (stub: being written).
/// In-memory store.
#[derive(Debug)]
pub struct MemStore;
/// Builder for [`MemStore`].
#[derive(Debug)]
pub struct MemStoreBuilder;
