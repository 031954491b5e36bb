//! The write side: a body buffered up to one part and sent with one PUT, or streamed as a
//! multipart upload, then made visible by the pointer swap.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayloadMut};

use super::commit::Swap;
use super::layout::key_hash;
use super::multipart::Multipart;
use super::ops::{backend, corrupt, timed};
use super::pointer::{encode_pointer, Slot};
use super::Inner;
use crate::entry::Metadata;
use crate::error::StoreError;
use crate::store::StoreWriter;

pub(super) enum WriteState {
    /// Up to one part of body, uploaded with a single PUT if the body ends there.
    Buffering(PutPayloadMut),
    /// The body outgrew one part: a multipart upload is running.
    Uploading(Multipart),
    /// Committed or aborted.
    Done,
}

/// The writer of one [`BucketStore`] entry. See [`Store::put`].
pub(super) struct BucketWriter {
    inner: Arc<Inner>,
    key: String,
    h: String,
    meta: Metadata,
    body: Path,
    written: u64,
    state: WriteState,
}

impl BucketWriter {
    pub(super) fn new(inner: Arc<Inner>, key: &str, meta: Metadata) -> Self {
        let h = key_hash(key);
        let body = inner.layout.new_body_path(&h);
        BucketWriter {
            inner,
            key: key.to_owned(),
            h,
            meta,
            body,
            written: 0,
            state: WriteState::Buffering(PutPayloadMut::new()),
        }
    }

    async fn start_multipart(&mut self, pending: PutPayloadMut) -> Result<Multipart, StoreError> {
        let inner = &self.inner;
        let key = &self.key;
        let upload = timed(key, inner.op_timeout, async {
            inner
                .store
                .put_multipart(&self.body)
                .await
                .map_err(|e| backend(key, e))
        })
        .await?;
        let mut mp = Multipart::new(upload, inner.part_size, inner.op_timeout, key.clone());
        for chunk in pending.freeze() {
            mp.push(chunk);
        }
        Ok(mp)
    }

    /// Uploads the body; afterwards it exists at `self.body`, unreferenced.
    async fn upload_body(&mut self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        let key = self.key.clone();
        match std::mem::replace(&mut self.state, WriteState::Done) {
            WriteState::Buffering(buf) => {
                timed(&key, inner.op_timeout, async {
                    inner
                        .store
                        .put(&self.body, buf.freeze())
                        .await
                        .map(drop)
                        .map_err(|e| backend(&key, e))
                })
                .await
            }
            WriteState::Uploading(mut mp) => {
                // On timeout `mp` is dropped here, which aborts the upload.
                timed(&key, inner.op_timeout, mp.complete()).await
            }
            WriteState::Done => Err(StoreError::Closed),
        }
    }
}

#[async_trait]
impl StoreWriter for BucketWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.written += chunk.len() as u64;
        let part_size = self.inner.part_size;
        if let WriteState::Buffering(buf) = &mut self.state {
            if buf.content_length() + chunk.len() <= part_size {
                buf.push(chunk);
                return Ok(());
            }
            let pending = std::mem::take(buf);
            self.state = WriteState::Done;
            let mp = self.start_multipart(pending).await?;
            self.state = WriteState::Uploading(mp);
        }
        match &mut self.state {
            WriteState::Uploading(mp) => {
                mp.push(chunk);
                let limit = self.inner.op_timeout;
                let max = self.inner.upload_concurrency;
                // Backpressure: the fill waits for part uploads instead of buffering the body.
                timed(&self.key, limit, mp.wait_for_capacity(max)).await
            }
            _ => Err(StoreError::Closed),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let key = self.key.clone();
        if let Some(declared) = self.meta.content_length {
            if declared != self.written {
                let _ = self.abort_upload().await;
                return Err(corrupt(
                    &key,
                    format!("declared {declared} bytes, wrote {}", self.written),
                ));
            }
        }
        self.meta.content_length = Some(self.written);
        if let Some(packed) = self.commit_packed().await {
            return packed;
        }
        // Read the pointer before uploading: a fill a purge overtook costs no PUT.
        let inner = self.inner.clone();
        let slot = match timed(&key, inner.op_timeout, inner.read_slot(&key, &self.h)).await {
            Ok(slot) => slot,
            Err(e) => {
                let _ = self.abort_upload().await;
                return Err(e);
            }
        };
        if inner.is_purged(&slot, &key, self.meta.stored_at) {
            tracing::debug!(
                key,
                "object store: fill older than a purge of its key, not committed"
            );
            return self.abort_upload().await;
        }
        self.upload_body().await?;
        // From here the body exists unreferenced: a failure or a lost swap deletes it, a
        // cancellation leaves it to the lifecycle rule.
        self.swap(slot).await
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.abort_upload().await
    }

    fn written(&self) -> u64 {
        self.written
    }
}

impl BucketWriter {
    /// Commits a small body into a pack, when packing is on and the body fits. `None`: not
    /// packed, commit as an object of its own. The key's pointer is not read: a reader weighs
    /// the packed entry against the pointer's floor and entry.
    async fn commit_packed(&mut self) -> Option<Result<(), StoreError>> {
        let packs = self.inner.packs.clone()?;
        let fits = usize::try_from(self.written).is_ok_and(|n| n <= packs.threshold());
        if !fits || !matches!(self.state, WriteState::Buffering(_)) {
            return None;
        }
        let WriteState::Buffering(buf) = std::mem::replace(&mut self.state, WriteState::Done)
        else {
            return None;
        };
        if self.meta.stored_at <= self.inner.floors.floor_for(&self.key) {
            return Some(Ok(())); // purged by a prefix before it was stored
        }
        let body = bytes::Bytes::from(object_store::PutPayload::from(buf));
        Some(packs.add(&self.key, &self.meta, &body).await)
    }

    /// Makes the uploaded body the key's entry if the pointer is still as `slot` found it.
    async fn swap(&mut self, slot: Slot) -> Result<(), StoreError> {
        let (inner, key) = (&self.inner, self.key.as_str());
        let record = encode_pointer(&self.body, key, &self.meta, slot.floor);
        let path = inner.layout.meta_path(&self.h);
        let store = inner.store.as_ref();
        let swap = inner
            .swapper
            .swap(store, key, &path, slot.version.as_ref(), record);
        match timed(key, inner.op_timeout, swap).await {
            Ok(Swap::Done) => {
                // Exactly the entry the swap replaced: no other writer can have taken it.
                if let Some(old) = slot.entry.filter(|p| p.body != self.body) {
                    inner.delete_body_best_effort(key, &old.body).await;
                }
                Ok(())
            }
            Ok(Swap::Lost) => {
                // Another instance committed or purged this key since we read it: its entry
                // stands, as if ours had been committed first and replaced.
                tracing::debug!(key, "object store: commit lost to a concurrent writer");
                inner.delete_body_best_effort(key, &self.body).await;
                Ok(())
            }
            Err(e) => {
                inner.delete_body_best_effort(key, &self.body).await;
                Err(e)
            }
        }
    }

    async fn abort_upload(&mut self) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.state, WriteState::Done) {
            WriteState::Uploading(mut mp) => mp.abort().await,
            WriteState::Buffering(_) | WriteState::Done => Ok(()),
        }
    }
}
