//! The [`Fetcher`] trait: how the engine asks the origin for an entry.

use std::future::Future;
use std::sync::Arc;

use crate::entry::{EntryBody, Metadata};
use crate::error::{BoxError, FillError};

/// What a fetcher answered.
///
/// `P` is what a response that must not be stored is handed back as ([`Fetched::Pass`]):
/// [`Passthrough`] for closure fetchers, the origin's own response for the HTTP layer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Fetched<P = Passthrough> {
    /// A new entry to store and serve. Use [`Metadata::negative`] for a cacheable not-found,
    /// which is kept with the tier's negative TTL.
    Entry {
        /// The entry's metadata.
        meta: Metadata,
        /// The entry's body.
        body: EntryBody,
    },
    /// The previous entry is still valid (the origin answered `304 Not Modified`). The metadata,
    /// when given, replaces the stored one (new freshness, updated headers); the body is kept.
    NotModified {
        /// Refreshed metadata, or `None` to only reset the entry's `stored_at`.
        meta: Option<Metadata>,
    },
    /// A new entry stored under another key, `key`, with `marker` (an entry with an empty body
    /// that says how to find it) stored under the looked-up key. Both are stored by the one
    /// fill: the HTTP layer stores a response that names request fields in `Vary` this way.
    /// Readers of the fill get the marker; a lookup of `key` then follows the entry's fill.
    Variant {
        /// The key the entry is stored under.
        key: String,
        /// The entry stored under the looked-up key.
        marker: Metadata,
        /// The entry's metadata.
        meta: Metadata,
        /// The entry's body.
        body: EntryBody,
    },
    /// A response that must not be stored or shared (for example a `private` one). It is handed
    /// back, as it is, to the call that fetched it; coalesced followers fetch on their own.
    Pass(P),
    /// The origin failed, and the stored entry (the `previous` the fetcher was given) may be
    /// served as it is (RFC 5861 `stale-if-error`). Nothing is written; readers of the fill are
    /// answered [`Outcome::StaleOnError`](crate::Outcome::StaleOnError).
    Stale {
        /// The origin's error status, if it answered one.
        status: Option<http::StatusCode>,
    },
}

/// A response a closure fetcher passes through unstored ([`Fetched::Pass`]).
#[derive(Debug)]
pub struct Passthrough {
    /// The response's metadata.
    pub meta: Metadata,
    /// The response's body.
    pub body: EntryBody,
}

/// Fetches an entry from the origin.
///
/// The engine calls it at most once, with the metadata of the entry it holds (if any), so the
/// fetcher can send validators (`If-None-Match`, `If-Modified-Since`) and answer
/// [`Fetched::NotModified`]. What it passes through unstored ([`Fetcher::Pass`]) and its own
/// error ([`Fetcher::Error`]) reach the call that fetched as they are: the engine never makes
/// placeholders of them.
///
/// Any `FnOnce(Option<Arc<Metadata>>) -> impl Future<Output = Result<Fetched, BoxError>>` closure
/// is a fetcher:
///
/// ```
/// use daramjwee::{Fetched, Metadata, EntryBody};
///
/// let fetcher = |_previous: Option<std::sync::Arc<Metadata>>| async {
///     Ok::<_, daramjwee::BoxError>(Fetched::Entry {
///         meta: Metadata::new(http::StatusCode::OK),
///         body: EntryBody::from_bytes("hello"),
///     })
/// };
/// # let _ = fetcher;
/// ```
pub trait Fetcher: Send + 'static {
    /// What a response that must not be stored is handed back as.
    type Pass: Send + 'static;
    /// The origin's error.
    type Error: Send + 'static;

    /// Fetches the entry. `previous` is the stored entry's metadata, if the cache has one.
    fn fetch(
        self,
        previous: Option<Arc<Metadata>>,
    ) -> impl Future<Output = Result<Fetched<Self::Pass>, Self::Error>> + Send + 'static;

    /// What the followers of a fill that failed with `error` are told: the error itself goes
    /// only to the call whose fetcher produced it. By default, that the origin failed.
    fn failure(error: &Self::Error) -> FillError {
        let _ = error;
        FillError::Origin
    }
}

impl<F, Fut> Fetcher for F
where
    F: FnOnce(Option<Arc<Metadata>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Fetched, BoxError>> + Send + 'static,
{
    type Pass = Passthrough;
    type Error = BoxError;

    fn fetch(
        self,
        previous: Option<Arc<Metadata>>,
    ) -> impl Future<Output = Result<Fetched, BoxError>> + Send + 'static {
        self(previous)
    }
}
