//! The purge log's objects in the bucket, and the requests on them.
//!
//! ```text
//! <prefix>/_purges/log/<seq, 20 digits>     one purge (sequence numbers are dense, from 1)
//! <prefix>/_purges/checkpoint               oldest retained seq, a head hint, prefix floors
//! ```
//!
//! Entries are created with `PutMode::Create`, so two instances appending at once cannot both
//! take one sequence number: the loser reads what it lost to and tries the next one. Because a
//! writer only tries `n + 1` after it saw `n`, the sequence has no holes, and a reader polls for
//! new purges with one GET of the next number (a 404 when there is nothing new) instead of a
//! LIST: the cost of a poll does not grow with the number of instances or purges, and the log
//! is never listed at all (compaction walks it by number from the checkpoint).

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::record::{Checkpoint, MalformedLogObject, Record, MAX_OBJECT_LEN};
use super::PurgeError;

const SEQ_DIGITS: usize = 20;

/// The purge log of one cache prefix.
#[derive(Debug)]
pub(super) struct Log {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    op_timeout: Duration,
}

fn log_error(path: &Path, source: object_store::Error) -> PurgeError {
    PurgeError::Log {
        path: path.to_string(),
        source,
    }
}

fn malformed(path: &Path, source: MalformedLogObject) -> PurgeError {
    PurgeError::MalformedLogObject {
        path: path.to_string(),
        source,
    }
}

impl Log {
    pub(super) fn new(store: Arc<dyn ObjectStore>, dir: Path, op_timeout: Duration) -> Self {
        Log {
            store,
            dir,
            op_timeout,
        }
    }

    fn entries(&self) -> Path {
        self.dir.clone().join("log")
    }

    fn entry(&self, seq: u64) -> Path {
        self.entries().join(format!("{seq:0SEQ_DIGITS$}"))
    }

    fn checkpoint_path(&self) -> Path {
        self.dir.clone().join("checkpoint")
    }

    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, PurgeError>>,
    ) -> Result<T, PurgeError> {
        tokio::time::timeout(self.op_timeout, fut)
            .await
            .unwrap_or(Err(PurgeError::Timeout(self.op_timeout)))
    }

    /// Reads a small object of the log: `None` when absent.
    async fn read_object(
        &self,
        path: &Path,
    ) -> Result<Option<(bytes::Bytes, UpdateVersion)>, PurgeError> {
        self.timed(async {
            let res = match self.store.get(path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(log_error(path, e)),
            };
            if res.meta.size > MAX_OBJECT_LEN {
                return Err(malformed(path, MalformedLogObject("oversized")));
            }
            let version = UpdateVersion {
                e_tag: res.meta.e_tag.clone(),
                version: res.meta.version.clone(),
            };
            match res.bytes().await {
                Ok(b) => Ok(Some((b, version))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(log_error(path, e)),
            }
        })
        .await
    }

    /// The entry `seq`, if it exists (not yet written, or compacted away, otherwise).
    pub(super) async fn read(&self, seq: u64) -> Result<Option<Record>, PurgeError> {
        let path = self.entry(seq);
        match self.read_object(&path).await? {
            Some((buf, _)) => Record::decode(&buf)
                .map(Some)
                .map_err(|e| malformed(&path, e)),
            None => Ok(None),
        }
    }

    /// Writes entry `seq` unless it exists: `false` when another instance took the number.
    pub(super) async fn append(&self, seq: u64, record: &Record) -> Result<bool, PurgeError> {
        let path = self.entry(seq);
        let opts = PutOptions::from(PutMode::Create);
        self.timed(async {
            match self
                .store
                .put_opts(&path, record.encode().into(), opts)
                .await
            {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(false),
                Err(e) => Err(log_error(&path, e)),
            }
        })
        .await
    }

    /// Deletes entry `seq` (compaction); an entry already gone is not an error.
    pub(super) async fn delete(&self, seq: u64) -> Result<(), PurgeError> {
        let path = self.entry(seq);
        self.timed(async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(log_error(&path, e)),
            }
        })
        .await
    }

    /// The checkpoint and its version; `None` before the first instance wrote one.
    pub(super) async fn checkpoint(
        &self,
    ) -> Result<Option<(Checkpoint, UpdateVersion)>, PurgeError> {
        let path = self.checkpoint_path();
        match self.read_object(&path).await? {
            Some((buf, v)) => Checkpoint::decode(&buf)
                .map(|c| Some((c, v)))
                .map_err(|e| malformed(&path, e)),
            None => Ok(None),
        }
    }

    /// Replaces the checkpoint if it is still at `expected` (`None`: still absent). `false`:
    /// another instance wrote it first. Without conditional updates it overwrites.
    pub(super) async fn put_checkpoint(
        &self,
        c: &Checkpoint,
        expected: Option<&UpdateVersion>,
    ) -> Result<bool, PurgeError> {
        let path = self.checkpoint_path();
        let payload = PutPayload::from(c.encode());
        let mode = expected.map_or(PutMode::Create, |v| PutMode::Update(v.clone()));
        self.timed(async {
            match self
                .store
                .put_opts(&path, payload.clone(), mode.into())
                .await
            {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(false),
                Err(object_store::Error::NotImplemented { .. }) => {
                    let put = self.store.put(&path, payload).await;
                    put.map(|_| true).map_err(|e| log_error(&path, e))
                }
                Err(e) => Err(log_error(&path, e)),
            }
        })
        .await
    }
}
