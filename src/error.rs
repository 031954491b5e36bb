//! Error types of the engine and its stores.
//!
//! Errors here describe what failed and where. The HTTP face never turns them into error responses on
//! its own: cache faults fail open (the origin is served) and are logged.

use std::sync::Arc;
use std::time::Duration;

/// A boxed, thread-safe error, as produced by fetchers and origin bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error raised by a [`Store`](crate::store::Store) or one of its writers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error from the filesystem.
    #[error("store I/O error on {key:?}: {source}")]
    Io {
        /// The cache key being read or written (may be empty for store-wide operations).
        key: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The stored entry failed its integrity check (bad magic, checksum, truncated file, key mismatch).
    #[error("corrupt entry for {key:?}: {reason}")]
    Corrupt {
        /// The cache key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The object does not fit in the store (larger than its capacity or its per-object limit).
    #[error("entry for {key:?} is too large for this store ({size} bytes > limit {limit})")]
    TooLarge {
        /// The cache key.
        key: String,
        /// Bytes written so far (or declared).
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A backend-specific error (object storage, user stores).
    #[error("store backend error on {key:?}: {source}")]
    Backend {
        /// The cache key.
        key: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The store operation did not finish in time.
    #[error("store operation on {key:?} timed out after {after:?}")]
    Timeout {
        /// The cache key.
        key: String,
        /// The configured limit.
        after: Duration,
    },
    /// The store is closed or was configured not to accept writes.
    #[error("store is closed")]
    Closed,
    /// The store does not support this operation.
    #[error("store does not support {op}")]
    Unsupported {
        /// The operation.
        op: &'static str,
    },
}

impl StoreError {
    /// Wraps an I/O error with the key it concerns.
    pub fn io(key: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            key: key.into(),
            source,
        }
    }

    /// A short, stable label for the kind of error (used in logs and metric labels).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "io",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::TooLarge { .. } => "too_large",
            StoreError::Backend { .. } => "backend",
            StoreError::Timeout { .. } => "timeout",
            StoreError::Closed => "closed",
            StoreError::Unsupported { .. } => "unsupported",
        }
    }
}

/// An error returned by the [`Cache`](crate::Cache) engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fetcher (the origin) failed before producing a response.
    #[error("origin fetch failed: {0}")]
    Fetch(#[source] BoxError),
    /// The origin body failed part-way; what was sent is incomplete.
    #[error("origin body failed after {received} bytes: {source}")]
    Body {
        /// Bytes received before the failure.
        received: u64,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The body ended before its declared length: the response is truncated.
    #[error("body truncated: got {received} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// Bytes declared (`Content-Length`).
        expected: u64,
    },
    /// The body went past its declared length.
    #[error("body longer than declared: more than {expected} bytes")]
    TooLong {
        /// Bytes declared.
        expected: u64,
    },
    /// A store failed while reading an entry that was already being served.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An operation exceeded its configured time limit.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// The configured limit.
        after: Duration,
    },
    /// The fill this request led or followed ended without a whole body; the cause says why.
    #[error("the shared fill was abandoned")]
    FillAbandoned(#[source] FillError),
    /// The fetcher panicked.
    #[error("the fetcher panicked")]
    Panicked,
    /// The cache was closed.
    #[error("the cache is closed")]
    Closed,
    /// The entry is not cached and the caller asked for cached entries only.
    #[error("not in cache")]
    NotCached,
    /// A newer `set` or `delete` of the key started before this write committed; the write was
    /// discarded.
    #[error("superseded by a newer write or delete of the same key")]
    Superseded,
}

/// An error shared by every reader of one fill: cheap to clone, its cause chain kept.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a fill ended without storing a whole body. Every reader of the fill (its leader and the
/// followers that joined it) sees the same value.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FillError {
    /// The origin failed before a response head. The call that led the fill gets the origin's
    /// own error; followers get this.
    #[error("the origin failed before a response head")]
    Origin,
    /// The origin gave no response head within the limit.
    #[error("the origin did not answer within {0:?}")]
    OriginTimeout(Duration),
    /// The body failed part-way.
    #[error("the body failed after {received} bytes")]
    Body {
        /// Bytes received before the failure.
        received: u64,
        /// The body's error.
        #[source]
        source: SharedError,
    },
    /// No body bytes arrived within the idle limit.
    #[error("the body stalled after {received} bytes")]
    Stalled {
        /// Bytes received before the stall.
        received: u64,
    },
    /// The body ended before its declared length.
    #[error("body truncated: {received} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// Bytes declared.
        expected: u64,
    },
    /// The body went past its declared length.
    #[error("body longer than its declared {expected} bytes")]
    TooLong {
        /// Bytes declared.
        expected: u64,
    },
    /// Every reader left before the body was whole, so the fill stopped.
    #[error("every reader left before the body was whole")]
    Orphaned,
    /// The fetcher answered about a stored entry (not-modified, or serve it stale) and none is
    /// stored.
    #[error("the fetcher answered about a stored entry, and none is stored")]
    NothingStored,
    /// The fill's task panicked.
    #[error("the fill panicked")]
    Panicked,
    /// The fill's task ended without finishing (cancelled at shutdown).
    #[error("the fill ended early")]
    Cancelled,
}

/// Returned by [`Cache::close`](crate::Cache::close) when background work did not drain in time.
#[derive(Debug, thiserror::Error)]
#[error("background work did not drain within {timeout:?}: {pending} task(s) still running")]
pub struct CloseError {
    /// The timeout given to `close`.
    pub timeout: Duration,
    /// Tasks still queued or running.
    pub pending: usize,
}
