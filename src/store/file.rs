//! File store (stub: being written).
/// File store.
#[derive(Debug)]
pub struct FileStore;
/// Builder for [`FileStore`].
#[derive(Debug)]
pub struct FileStoreBuilder;
