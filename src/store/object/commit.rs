//! The pointer swap: every change to a pointer object is a conditional PUT against the version
//! that was read (`PutMode::Create` when there was none, `PutMode::Update` otherwise).
//!
//! This is what lets many instances share one bucket without a lock server. Two writers that
//! read the same version cannot both swap: the loser learns it lost ([`Swap::Lost`]) and deletes
//! its own body, the winner deletes exactly the body it replaced, so every body in the bucket is
//! named by a pointer (up to the deletes that fail, which the lifecycle rule collects).
//!
//! A backend without conditional writes answers `NotImplemented` (the local filesystem for
//! `Update`, S3 with `aws_conditional_put=disabled`). The swap then falls back to a plain
//! overwrite, as before conditional writes existed: the last writer wins, the loser's body or the
//! replaced one can be left unreferenced, and the bucket lifecycle rule is the backstop. A
//! warning is logged once per store.

use std::sync::atomic::{AtomicBool, Ordering};

use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::ops::backend;
use crate::error::StoreError;

/// How a conditional pointer write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Swap {
    /// The pointer now holds the new record.
    Done,
    /// Another writer changed the pointer since it was read: nothing was written.
    Lost,
}

/// The conditional writer of pointer objects of one store.
#[derive(Debug, Default)]
pub(super) struct Swapper {
    /// Whether the fallback to plain overwrites was already reported.
    warned: AtomicBool,
}

impl Swapper {
    /// Writes `record` at `path` if the object is still at `expected` (`None`: still absent).
    pub(super) async fn swap(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        path: &Path,
        expected: Option<&UpdateVersion>,
        record: Vec<u8>,
    ) -> Result<Swap, StoreError> {
        let payload = PutPayload::from(record);
        let mode = match expected {
            None => PutMode::Create,
            // A version without an ETag or a version id cannot be matched on: no condition.
            Some(v) if v.e_tag.is_none() && v.version.is_none() => {
                return self
                    .overwrite(store, key, path, payload, "no version")
                    .await
            }
            Some(v) => PutMode::Update(v.clone()),
        };
        match store
            .put_opts(path, payload.clone(), PutOptions::from(mode))
            .await
        {
            Ok(_) => Ok(Swap::Done),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Swap::Lost),
            Err(object_store::Error::NotImplemented { .. }) => {
                self.overwrite(store, key, path, payload, "not implemented")
                    .await
            }
            Err(e) => Err(backend(key, e)),
        }
    }

    async fn overwrite(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        path: &Path,
        payload: PutPayload,
        why: &'static str,
    ) -> Result<Swap, StoreError> {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                store = %store,
                why,
                "object store: conditional writes unavailable, pointers are overwritten \
                 (concurrent commits may leave unreferenced bodies for the lifecycle rule)"
            );
        }
        store
            .put_opts(path, payload, PutOptions::default())
            .await
            .map(|_| Swap::Done)
            .map_err(|e| backend(key, e))
    }
}
