//! Cache entries: [`Metadata`] (status, headers, validators, timestamps) and [`EntryBody`], the
//! stream of `Bytes` chunks that carries a stored or in-flight body.
//!
//! The engine treats metadata as opaque data: it reads timestamps to decide freshness and validators
//! to answer conditional gets, but it never parses HTTP headers. The HTTP face fills them in.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_core::Stream;
use http::{HeaderMap, StatusCode};

use crate::error::Error;

/// Whether an entry is a normal response or a cached "not found".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A normal, positive entry.
    Positive,
    /// A cacheable not-found (negative caching); freshness uses the tier's negative TTL.
    Negative,
}

/// Everything the cache keeps about an entry besides its body.
///
/// Built with [`Metadata::new`] and the `with_*` methods:
///
/// ```
/// use daramjwee::Metadata;
/// use std::time::Duration;
///
/// let meta = Metadata::new(http::StatusCode::OK)
///     .with_etag("\"v1\"")
///     .with_ttl(Duration::from_secs(60));
/// assert_eq!(meta.etag.as_deref(), Some("\"v1\""));
/// assert!(meta.is_fresh(std::time::SystemTime::now(), None));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// The response status to replay.
    pub status: StatusCode,
    /// The response headers to replay (hop-by-hop headers already removed by the HTTP face).
    pub headers: HeaderMap,
    /// Entity tag, used for `If-None-Match` revalidation.
    pub etag: Option<String>,
    /// Last modification time, used for `If-Modified-Since` revalidation.
    pub last_modified: Option<SystemTime>,
    /// When the entry was stored (or last revalidated).
    pub stored_at: SystemTime,
    /// When the entry stops being fresh. `None`: the tier's configured TTL applies from `stored_at`.
    pub fresh_until: Option<SystemTime>,
    /// How long after `fresh_until` a stale entry may still be served while it is revalidated.
    /// `None`: the engine's default applies.
    pub stale_for: Option<Duration>,
    /// Positive or negative entry.
    pub kind: EntryKind,
    /// Body length in bytes when known. When set on a fill, the body must match it exactly or the
    /// entry is discarded.
    pub content_length: Option<u64>,
}

impl Metadata {
    /// A positive entry with the given status, stored now, with no headers or validators.
    pub fn new(status: StatusCode) -> Self {
        Metadata {
            status,
            headers: HeaderMap::new(),
            etag: None,
            last_modified: None,
            stored_at: SystemTime::now(),
            fresh_until: None,
            stale_for: None,
            kind: EntryKind::Positive,
            content_length: None,
        }
    }

    /// A negative ("not found") entry with the given status.
    pub fn negative(status: StatusCode) -> Self {
        Metadata {
            kind: EntryKind::Negative,
            ..Metadata::new(status)
        }
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the entity tag.
    pub fn with_etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// Sets the last modification time.
    pub fn with_last_modified(mut self, t: SystemTime) -> Self {
        self.last_modified = Some(t);
        self
    }

    /// Sets an explicit freshness lifetime counted from `stored_at`. A lifetime that reaches
    /// past [`far_future`] (`Duration::MAX` included) means the entry never expires.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.fresh_until = Some(add_saturating(self.stored_at, ttl));
        self
    }

    /// Sets the declared body length.
    pub fn with_content_length(mut self, len: u64) -> Self {
        self.content_length = Some(len);
        self
    }

    /// Whether this is a negative entry.
    pub fn is_negative(&self) -> bool {
        self.kind == EntryKind::Negative
    }

    /// The instant the entry stops being fresh, using `default_ttl` when it has no explicit one.
    /// `None` means it never expires; so does an instant at [`far_future`].
    pub fn expires_at(&self, default_ttl: Option<Duration>) -> Option<SystemTime> {
        self.fresh_until
            .or_else(|| default_ttl.map(|ttl| add_saturating(self.stored_at, ttl)))
    }

    /// Whether the entry is fresh at `now`.
    pub fn is_fresh(&self, now: SystemTime, default_ttl: Option<Duration>) -> bool {
        match self.expires_at(default_ttl) {
            Some(t) => now < t,
            None => true,
        }
    }

    /// How long the entry has been stored at `now` (zero if the clock went backwards).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stored_at).unwrap_or_default()
    }
}

/// Header fields a response made from an entry may add to the stored ones (the HTTP layer's
/// `Content-Length` or `Content-Range`, `Age` and `Cache-Status`, and one for a layer above).
/// A response's headers are stored with room for them in their index, so a memory-tier hit
/// copies them with a plain clone: no field is hashed again and the copy's index does not
/// grow.
pub(crate) const HEADER_ROOM: usize = 4;

/// A copy of `headers`, in their order, whose index has [`HEADER_ROOM`] more slots (and whose
/// field list has as many spare places: a clone of it keeps the index's room without them).
pub(crate) fn with_header_room(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.keys_len() + HEADER_ROOM);
    for (name, value) in headers {
        copy.append(name.clone(), value.clone());
    }
    copy
}

/// Seconds from the Unix epoch to 9999-12-31T23:59:59Z, the last instant an HTTP date can name.
const FAR_FUTURE_SECS: u64 = 253_402_300_799;

/// The instant that stands for "never": 9999-12-31T23:59:59Z.
///
/// Every instant the crate computes from a duration is at most this one ([`add_saturating`]),
/// so an entry that never expires still has a time that the metadata codec (microseconds in
/// a `u64`) stores, an HTTP date can name, and a later addition of a bounded duration (the
/// engine's stale window) cannot overflow.
pub fn far_future() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(FAR_FUTURE_SECS)
}

/// `t + d`, saturating at [`far_future`] instead of overflowing: `SystemTime + Duration`
/// panics past the platform's range, and any configured TTL or window (up to `Duration::MAX`)
/// must mean "for ever", never a panic in a worker.
///
/// ```
/// use daramjwee::entry::{add_saturating, far_future};
/// use std::time::{Duration, SystemTime};
///
/// let now = SystemTime::now();
/// assert_eq!(add_saturating(now, Duration::from_secs(60)), now + Duration::from_secs(60));
/// assert_eq!(add_saturating(now, Duration::MAX), far_future());
/// ```
pub fn add_saturating(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d)
        .map_or_else(far_future, |sum| sum.min(far_future()))
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("etag", &self.etag)
            .field("stored_at", &self.stored_at)
            .field("fresh_until", &self.fresh_until)
            .field("kind", &self.kind)
            .field("content_length", &self.content_length)
            .finish()
    }
}

/// A boxed stream of body chunks.
pub type BoxChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send + 'static>>;

/// The body of an entry: a stream of `Bytes` chunks.
///
/// A memory-resident body is a list of shared chunks, served by cloning `Bytes` (no copy, no
/// allocation); any other body is a boxed stream. An error item means the body is incomplete and
/// must not be treated as a clean end.
pub struct EntryBody {
    inner: BodyInner,
}

enum BodyInner {
    Chunks { chunks: Arc<[Bytes]>, next: usize },
    Stream(BoxChunkStream),
}

impl EntryBody {
    /// An empty body.
    pub fn empty() -> Self {
        EntryBody::from_chunks(Arc::from(Vec::new()))
    }

    /// A body made of shared, already complete chunks.
    pub fn from_chunks(chunks: Arc<[Bytes]>) -> Self {
        EntryBody {
            inner: BodyInner::Chunks { chunks, next: 0 },
        }
    }

    /// A body of one chunk.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        EntryBody::from_chunks(Arc::from(vec![bytes.into()]))
    }

    /// A body backed by any stream of chunks.
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + 'static,
    {
        EntryBody {
            inner: BodyInner::Stream(Box::pin(stream)),
        }
    }

    /// Remaining length when it is known without reading (memory bodies only).
    pub fn remaining_len(&self) -> Option<u64> {
        match &self.inner {
            BodyInner::Chunks { chunks, next } => {
                Some(chunks[*next..].iter().map(|c| c.len() as u64).sum())
            }
            BodyInner::Stream(_) => None,
        }
    }

    /// Reads the whole body into one buffer. Meant for tests and small bodies only.
    pub async fn collect(mut self) -> Result<Bytes, Error> {
        use futures_util::StreamExt;
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }
}

impl Stream for EntryBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.inner {
            BodyInner::Chunks { chunks, next } => {
                // Skip empty chunks so a consumer never sees a zero-length frame.
                while let Some(chunk) = chunks.get(*next) {
                    *next += 1;
                    if !chunk.is_empty() {
                        return Poll::Ready(Some(Ok(chunk.clone())));
                    }
                }
                Poll::Ready(None)
            }
            BodyInner::Stream(s) => s.as_mut().poll_next(cx),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.inner {
            BodyInner::Chunks { chunks, next } => (0, Some(chunks.len() - next)),
            BodyInner::Stream(s) => s.size_hint(),
        }
    }
}

impl fmt::Debug for EntryBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            BodyInner::Chunks { chunks, next } => f
                .debug_struct("EntryBody::Chunks")
                .field("chunks", &chunks.len())
                .field("next", next)
                .finish(),
            BodyInner::Stream(_) => f.write_str("EntryBody::Stream"),
        }
    }
}

/// An entry read from a store: its metadata and its body.
#[derive(Debug)]
#[non_exhaustive]
pub struct StoredEntry {
    /// The entry's metadata, shared so that a hit does not copy headers.
    pub meta: Arc<Metadata>,
    /// The entry's body.
    pub body: EntryBody,
}

impl StoredEntry {
    /// Pairs metadata with a body.
    pub fn new(meta: Arc<Metadata>, body: EntryBody) -> Self {
        StoredEntry { meta, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec;

    #[test]
    fn lifetimes_past_the_clock_saturate_at_far_future() {
        let m = Metadata::new(StatusCode::OK).with_ttl(Duration::MAX);
        assert_eq!(m.fresh_until, Some(far_future()));
        assert!(m.is_fresh(far_future() - Duration::from_secs(1), None));
        assert!(!m.is_fresh(far_future(), None));
        let plain = Metadata::new(StatusCode::OK);
        for ttl in [Duration::MAX, Duration::from_secs(u64::MAX)] {
            assert_eq!(plain.expires_at(Some(ttl)), Some(far_future()));
        }
        // The far future survives the stored form (microseconds in a u64).
        let (_, back) = codec::decode(&codec::encode("k", &m)).unwrap();
        assert_eq!(back.fresh_until, Some(far_future()));
    }
}
