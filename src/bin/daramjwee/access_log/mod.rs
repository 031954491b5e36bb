//! The access log: one line per request, in the combined format or as JSON Lines.
//!
//! Off unless `access_log` is set. The request path renders what it logs of the request (the
//! method, the target, a few header values) and of the response head into a draft of the
//! line kept with the request (`format::Draft`) and, when the response is over, finishes the
//! line into a buffer of its thread; a dedicated thread writes the buffers out in batches
//! (`writer`). When the buffers are full the line is dropped and counted
//! (`daramjwee_access_log_dropped_total`): a slow disk must never slow or block a response.
//! Nothing here may change a response.

mod buf;
mod format;
mod layer;
mod writer;

#[cfg(test)]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
#[cfg(test)]
use std::time::SystemTime;

#[cfg(test)]
use http::{Method, StatusCode, Version};

pub use layer::{AccessLogLayer, AccessLogSwitch};
pub use writer::{start, AccessLogError};

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// The process's standard output.
    Stdout,
    /// A file, appended to (created if missing).
    File(PathBuf),
}

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// The NCSA combined format, then `rt=` (seconds), `urt=` (upstream seconds), `cs="..."`
    /// (Cache-Status) and `rid=` (request id), as nginx logs its extra variables.
    Combined,
    /// One JSON object per line.
    Json,
}

/// The access log settings: off when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Where the lines go.
    pub destination: Destination,
    /// How they are written.
    pub format: Format,
}

/// What one request left in the log, as whole values: how the tests describe a line (the
/// request path renders its values into a draft as it goes instead, see `format`).
#[cfg(test)]
#[derive(Debug)]
pub struct Record {
    /// When the request arrived.
    pub start: SystemTime,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The request method.
    pub method: Method,
    /// The request target (path and query).
    pub target: Option<Text>,
    /// The client's HTTP version.
    pub version: Version,
    /// The response status.
    pub status: StatusCode,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// From the request's arrival to the end of the response body (or its abandonment).
    pub duration: Duration,
    /// Time to the upstream's response head, when this request went upstream.
    pub upstream: Option<Duration>,
    /// The response's `Cache-Status`.
    pub cache_status: Option<Text>,
    /// The request id.
    pub request_id: Option<Text>,
    /// The request's `Referer`.
    pub referer: Option<Text>,
    /// The request's `User-Agent`.
    pub user_agent: Option<Text>,
}

/// Bytes of a [`Record`]. Values up to [`Text::INLINE`] bytes are kept in the record itself.
#[cfg(test)]
#[derive(Clone)]
pub enum Text {
    /// A short value, in place: its length and bytes.
    Inline(u8, [u8; Text::INLINE]),
    /// A longer one.
    Heap(Box<[u8]>),
}

#[cfg(test)]
impl Text {
    /// The longest value kept without an allocation.
    pub const INLINE: usize = 80;

    /// A copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Text {
        match u8::try_from(bytes.len()) {
            Ok(n) if bytes.len() <= Text::INLINE => {
                let mut buf = [0; Text::INLINE];
                buf[..bytes.len()].copy_from_slice(bytes);
                Text::Inline(n, buf)
            }
            _ => Text::Heap(bytes.into()),
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline(n, buf) => &buf[..usize::from(*n)],
            Text::Heap(b) => b,
        }
    }

    /// The value as text (invalid UTF-8 replaced).
    pub fn to_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

#[cfg(test)]
impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.to_lossy(), f)
    }
}

/// Where the upstream client writes how long the upstream took to answer with a head, in
/// nanoseconds (0: not called). It travels in the request's
/// [`ClientConn`](crate::proxy::ClientConn).
#[derive(Debug, Clone, Default)]
pub struct UpstreamTimer(Arc<AtomicU64>);

impl UpstreamTimer {
    /// Clears this timer for a new request when nothing else holds it, or replaces it with a
    /// new one when an earlier request still does.
    pub fn reuse(&mut self) {
        match Arc::get_mut(&mut self.0) {
            Some(slot) => *slot.get_mut() = 0,
            None => *self = UpstreamTimer::default(),
        }
    }

    /// Records the time to the upstream's response head.
    pub fn set(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.0.store(nanos, Ordering::Relaxed);
    }

    /// The recorded time, if the upstream answered.
    pub fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}
