//! The small helpers every object-store operation shares: error mapping and time limits.

use std::future::Future;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::StoreError;

/// A backend failure on `key`, keeping the backend's error as the source.
pub(super) fn backend(key: &str, e: impl Into<crate::BoxError>) -> StoreError {
    StoreError::Backend {
        key: key.to_owned(),
        source: e.into(),
    }
}

/// An entry that failed an integrity check.
pub(super) fn corrupt(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Runs `fut` under `limit`, turning expiry into [`StoreError::Timeout`].
pub(super) async fn timed<T>(
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

/// Deletes an object, treating "already gone" as success.
pub(super) async fn delete_quiet(
    store: &dyn ObjectStore,
    key: &str,
    path: &Path,
) -> Result<(), StoreError> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(backend(key, e)),
    }
}

/// Failures of the object-store tier's own protocol (the backend's errors are kept as they are).
#[derive(Debug, thiserror::Error)]
pub(super) enum ProtocolError {
    /// Every conditional write of a pointer lost to another writer.
    #[error("pointer kept changing under concurrent writers ({attempts} conditional writes lost)")]
    Contended {
        /// How many swaps were tried.
        attempts: u32,
    },
    /// The pack holding this entry could not be stored.
    #[error("the pack holding this entry could not be stored")]
    PackFlush {
        /// Why (shared by every entry of the pack).
        #[source]
        source: std::sync::Arc<StoreError>,
    },
}
