//! The access log: one line per request, in the combined format or as JSON Lines.
//!
//! Off unless `access_log` is set. The request path only copies a few cheap handles (the
//! method, the target, header values: all reference-counted) into a [`Record`] and offers it
//! to a bounded channel; a dedicated thread formats and writes the lines. When the channel is
//! full the record is dropped and counted (`daramjwee_access_log_dropped_total`): a slow disk
//! must never slow or block a response. Nothing here may change a response.

mod format;
mod layer;
mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, StatusCode, Version};

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

/// What one request left in the log. Cheap to build: every field is `Copy` or a
/// reference-counted handle, so the request path allocates nothing for it.
#[derive(Debug)]
pub struct Record {
    /// When the request arrived.
    pub start: SystemTime,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The request method.
    pub method: Method,
    /// The request target (path and query).
    pub target: Option<PathAndQuery>,
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
    pub cache_status: Option<HeaderValue>,
    /// The request id.
    pub request_id: Option<HeaderValue>,
    /// The request's `Referer`.
    pub referer: Option<HeaderValue>,
    /// The request's `User-Agent`.
    pub user_agent: Option<HeaderValue>,
}

/// A slot in the request's extensions where the upstream client writes how long the
/// upstream took to answer with a head, in nanoseconds (0: not called).
#[derive(Debug, Clone, Default)]
pub struct UpstreamTimer(Arc<AtomicU64>);

impl UpstreamTimer {
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
