//! Streaming a stored body from disk in bounded reads.
//!
//! It must never end a corrupt body cleanly: the crc is checked as the body streams, and a
//! mismatch replaces the last chunk with an error item.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::format::{self, FileIdent, CHUNK};
use super::index::{blocking, Loc};
use super::FileStore;
use crate::error::{Error, StoreError};

/// Streams a body from an open file in bounded reads, checking its crc; a mismatch (or a file
/// that shrank) ends the stream with an error instead of a clean end and removes the file.
pub(super) struct BodyReader {
    pub(super) store: FileStore,
    pub(super) key: String,
    pub(super) loc: Loc,
    pub(super) ident: FileIdent,
    pub(super) file: Arc<File>,
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) expected_crc: u32,
    pub(super) crc: crc32fast::Hasher,
    pub(super) done: bool,
}

impl BodyReader {
    pub(super) async fn next_chunk(&mut self) -> Option<Result<Bytes, Error>> {
        if self.done || self.pos >= self.end {
            return None;
        }
        let n = (self.end - self.pos).min(CHUNK as u64) as usize;
        let (file, pos) = (Arc::clone(&self.file), self.pos);
        let mut buf = vec![0u8; n];
        // Page-cached bytes are read inline: a hop to a blocking thread costs more than the
        // copy. Only a read that would wait for the disk takes the hop.
        let read = match format::read_cached_at(&file, &mut buf, pos) {
            Ok(true) => Ok(buf),
            Ok(false) => {
                blocking(move || format::read_exact_at(&file, &mut buf, pos).map(|()| buf)).await
            }
            Err(e) => Err(e),
        };
        let buf = match read {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Some(Err(self.corrupt("file shrank while being read").await))
            }
            Err(e) => {
                self.done = true;
                return Some(Err(Error::Store(StoreError::io(self.key.clone(), e))));
            }
        };
        self.crc.update(&buf);
        self.pos += n as u64;
        if self.pos == self.end {
            self.done = true;
            let crc = std::mem::take(&mut self.crc).finalize();
            if crc != self.expected_crc {
                // Withhold the last chunk: the consumer sees an error, never a clean end.
                return Some(Err(self.corrupt("body checksum mismatch").await));
            }
        }
        Some(Ok(Bytes::from(buf)))
    }

    pub(super) async fn corrupt(&mut self, reason: &str) -> Error {
        self.done = true;
        self.store
            .remove_corrupt(&self.key, self.loc, self.ident, reason)
            .await;
        Error::Store(StoreError::Corrupt {
            key: self.key.clone(),
            reason: reason.to_owned(),
        })
    }
}
