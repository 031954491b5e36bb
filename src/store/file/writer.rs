//! The file store's writer: streams a body to a temp file, then commits it atomically.
//!
//! It must never make a partial entry visible: until `commit` renames it, the entry exists only
//! as a temp file, which dropping or aborting the writer removes.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::format::{self, FOOTER_LEN};
use super::index::{blocking, remove_if_exists, Inner, Loc};
use super::{FileStore, WRITE_BUFFER};
use crate::entry::Metadata;
use crate::error::StoreError;
use crate::store::StoreWriter;

/// A temp file and the bytes reserved for it. Dropping it (an uncommitted or cancelled write)
/// removes the file and releases the reservation.
pub(super) struct TempFile {
    inner: Arc<Inner>,
    path: PathBuf,
    /// Bytes of the store's capacity this write holds.
    pub(super) reserved: u64,
    /// Whether the file may still exist at `path` (false once renamed or removed).
    live: bool,
}

impl TempFile {
    pub(super) fn new(inner: Arc<Inner>, path: PathBuf) -> Self {
        TempFile {
            inner,
            path,
            reserved: 0,
            live: true,
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the finished file at `dest` and hands its reservation over: returns the bytes the
    /// caller must move into the index in the same step.
    pub(super) fn install(&mut self, dest: &Path) -> io::Result<u64> {
        self.inner.install(&self.path, dest)?;
        self.live = false;
        Ok(std::mem::take(&mut self.reserved))
    }

    /// Removes the file now, reporting errors (the reservation is released on drop).
    pub(super) fn remove(&mut self) -> io::Result<()> {
        self.live = false;
        remove_if_exists(&self.path).map(|_| ())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.live {
            // Best effort and synchronous: a single unlink, and Drop cannot await.
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove temp file");
                }
            }
        }
        self.inner.release(self.reserved);
    }
}

pub(super) struct Sink {
    pub(super) file: File,
    pub(super) crc: crc32fast::Hasher,
}

impl Sink {
    pub(super) fn write_all(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        for c in chunks {
            self.crc.update(c);
            self.file.write_all(c)?;
        }
        Ok(())
    }
}

/// A write in progress: a temp file, plus small chunks buffered until 64 KiB.
pub(super) struct FileStoreWriter {
    pub(super) store: FileStore,
    pub(super) key: String,
    pub(super) meta: Metadata,
    pub(super) loc: Loc,
    /// `None` once a blocking write was cancelled or failed: the writer is unusable.
    pub(super) sink: Option<Sink>,
    /// `None` once the write was given up (too large) or committed.
    pub(super) temp: Option<TempFile>,
    pub(super) buf: Vec<Bytes>,
    pub(super) buffered: usize,
    pub(super) written: u64,
}

impl FileStoreWriter {
    pub(super) fn broken(&self) -> StoreError {
        StoreError::io(
            self.key.clone(),
            io::Error::other("cache write was interrupted or failed earlier"),
        )
    }

    /// Hands the buffered chunks to a blocking write.
    pub(super) async fn flush(&mut self) -> Result<(), StoreError> {
        let mut sink = self.sink.take().ok_or_else(|| self.broken())?;
        let chunks = std::mem::take(&mut self.buf);
        self.buffered = 0;
        let (sink, res) = tokio::task::spawn_blocking(move || {
            let res = sink.write_all(&chunks);
            (sink, res)
        })
        .await
        .map_err(|e| StoreError::io(self.key.clone(), io::Error::other(e.to_string())))?;
        res.map_err(|e| StoreError::io(self.key.clone(), e))?;
        self.sink = Some(sink);
        Ok(())
    }

    /// Reserves `n` more bytes for this write (a chunk, or the trailer), on top of what it
    /// holds, evicting to make room; gives the write up when the capacity cannot provide them.
    async fn reserve_more(&mut self, n: u64) -> Result<(), StoreError> {
        let held = self.temp.as_ref().map_or(0, |t| t.reserved);
        let (res, victims) = self.store.inner.reserve(&self.key, n, held);
        if res.is_ok() {
            if let Some(t) = self.temp.as_mut() {
                t.reserved += n;
            }
        }
        self.store.remove_victims(victims).await;
        if let Err(e) = res {
            self.give_up();
            return Err(e);
        }
        Ok(())
    }

    /// Gives the write up: removes the temp file and releases its reservation now.
    pub(super) fn give_up(&mut self) {
        self.temp = None;
        self.sink = None;
        self.buf.clear();
    }
}

#[async_trait]
impl StoreWriter for FileStoreWriter {
    /// Appends a chunk, reserving its bytes (and evicting to make room) first. Fails with
    /// [`StoreError::TooLarge`] when the body passes the per-object limit, or when the other writes
    /// in progress leave no room; the temp file is removed at once.
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if self.temp.is_none() || self.sink.is_none() {
            return Err(self.broken());
        }
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        let total = self.written + n;
        let limit = self.store.inner.max_object_size;
        if total > limit {
            self.give_up();
            return Err(StoreError::TooLarge {
                key: self.key.clone(),
                size: total,
                limit,
            });
        }
        self.reserve_more(n).await?;
        self.written = total;
        self.buffered += chunk.len();
        self.buf.push(chunk);
        if self.buffered >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.temp.is_none() || self.sink.is_none() {
            return Err(self.broken());
        }
        let key = self.key.clone();
        if let Some(declared) = self.meta.content_length.filter(|&d| d != self.written) {
            self.give_up();
            return Err(StoreError::Corrupt {
                key,
                reason: format!("body of {} bytes, {declared} declared", self.written),
            });
        }
        let record = format::record(&key, &self.meta, self.written);
        let trailer_len = (record.len() + FOOTER_LEN) as u64;
        let size = self.written + trailer_len;
        self.reserve_more(trailer_len).await?;

        // From here on the temp file and its reservation travel with the blocking tasks, which
        // run to completion (or clean up on drop) even if this future is cancelled.
        let (Some(mut sink), Some(temp)) = (self.sink.take(), self.temp.take()) else {
            return Err(self.broken());
        };
        let chunks = std::mem::take(&mut self.buf);
        let (body_len, fsync) = (self.written, self.store.inner.fsync);
        let temp = {
            let key = key.clone();
            blocking(move || {
                sink.write_all(&chunks)?;
                let Sink { mut file, crc } = sink;
                file.write_all(&record)?;
                file.write_all(&format::footer(body_len, crc.finalize(), &record)?)?;
                if fsync {
                    file.sync_all()?;
                }
                Ok(temp)
            })
            .await
            .map_err(|e| StoreError::io(key, e))?
        };

        install(Arc::clone(&self.store.inner), self.loc, temp, size)
            .await
            .map_err(|e| StoreError::io(key, e))
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.buf.clear();
        self.sink = None;
        if let Some(mut temp) = self.temp.take() {
            let key = self.key.clone();
            blocking(move || temp.remove())
                .await
                .map_err(|e| StoreError::io(key, e))?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }
}

/// Puts a written temp file in place of the entry at `loc` (under the entry's stripe lock,
/// released before the directory is synced) and indexes it at `size` bytes.
async fn install(inner: Arc<Inner>, loc: Loc, mut temp: TempFile, size: u64) -> io::Result<()> {
    let guard = inner.stripe(&loc).lock_owned().await;
    blocking(move || {
        let path = loc.path(&inner.objects);
        let reserved = temp.install(&path)?;
        inner.index_committed(&loc, size, reserved);
        drop(guard);
        if inner.fsync {
            format::sync_dir(path.parent().unwrap_or(&inner.objects))?;
        }
        Ok(())
    })
    .await
}
