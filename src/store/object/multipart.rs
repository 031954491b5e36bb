//! Multipart uploads of large bodies: bounded part buffers, bounded parallel part uploads, and an
//! abort (in the background when dropped) so a cancelled fill never leaves a billed upload behind.

use std::time::Duration;

use bytes::Bytes;
use object_store::{MultipartUpload, PutPayloadMut};
use tokio::task::JoinSet;

use super::ops::{backend, timed};
use crate::error::StoreError;

/// A multipart upload in progress. Dropping it before [`complete`](Self::complete) aborts the
/// upload in the background, so a cancelled fill leaves no dangling upload (which S3 would
/// otherwise keep, and bill, until a lifecycle rule removes it).
pub(super) struct Multipart {
    upload: Option<Box<dyn MultipartUpload>>,
    buf: PutPayloadMut,
    tasks: JoinSet<object_store::Result<()>>,
    part_size: usize,
    abort_timeout: Duration,
    key: String,
}

impl Multipart {
    /// Takes over a started upload of `key`'s body.
    pub(super) fn new(
        upload: Box<dyn MultipartUpload>,
        part_size: usize,
        abort_timeout: Duration,
        key: String,
    ) -> Self {
        Multipart {
            upload: Some(upload),
            buf: PutPayloadMut::new(),
            tasks: JoinSet::new(),
            part_size,
            abort_timeout,
            key,
        }
    }

    /// Buffers `bytes`, starting a part upload each time a part is full.
    pub(super) fn push(&mut self, mut bytes: Bytes) {
        let Some(upload) = self.upload.as_mut() else {
            return;
        };
        while !bytes.is_empty() {
            let room = self.part_size - self.buf.content_length();
            if bytes.len() < room {
                self.buf.push(bytes);
                return;
            }
            self.buf.push(bytes.split_to(room));
            let part = std::mem::take(&mut self.buf).freeze();
            self.tasks.spawn(upload.put_part(part));
        }
    }

    /// Waits until fewer than `max` parts are uploading, surfacing the first failed part.
    pub(super) async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        while !self.tasks.is_empty() && self.tasks.len() >= max {
            match self.tasks.join_next().await {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(e))) => return Err(backend(&self.key, e)),
                Some(Err(e)) => return Err(backend(&self.key, e)),
            }
        }
        Ok(())
    }

    /// Uploads the last part and completes the upload. On failure the upload is aborted.
    pub(super) async fn complete(&mut self) -> Result<(), StoreError> {
        if let Some(upload) = self.upload.as_mut() {
            if !self.buf.is_empty() {
                let part = std::mem::take(&mut self.buf).freeze();
                self.tasks.spawn(upload.put_part(part));
            }
        }
        let res = async {
            self.wait_for_capacity(1).await?;
            match self.upload.as_mut() {
                Some(u) => u
                    .complete()
                    .await
                    .map(drop)
                    .map_err(|e| backend(&self.key, e)),
                None => Err(StoreError::Closed),
            }
        }
        .await;
        match res {
            Ok(()) => {
                self.upload = None;
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = self.abort().await {
                    tracing::warn!(key = %self.key, error = %abort, "object store: could not abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    pub(super) async fn abort(&mut self) -> Result<(), StoreError> {
        self.tasks.shutdown().await;
        match self.upload.take() {
            Some(mut u) => {
                timed(&self.key, self.abort_timeout, async {
                    u.abort().await.map_err(|e| backend(&self.key, e))
                })
                .await
            }
            None => Ok(()),
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let mut tasks = std::mem::take(&mut self.tasks);
        let key = std::mem::take(&mut self.key);
        let limit = self.abort_timeout;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tasks.shutdown().await;
                    match tokio::time::timeout(limit, upload.abort()).await {
                        Ok(Ok(())) => tracing::debug!(key, "object store: dropped multipart upload aborted"),
                        Ok(Err(e)) => tracing::warn!(key, error = %e, "object store: could not abort a dropped multipart upload (left for the lifecycle rule)"),
                        Err(_) => tracing::warn!(key, "object store: aborting a dropped multipart upload timed out (left for the lifecycle rule)"),
                    }
                });
            }
            Err(_) => {
                tracing::warn!(key, "object store: multipart upload dropped outside a runtime, not aborted (left for the lifecycle rule)");
            }
        }
    }
}
