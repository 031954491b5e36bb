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
// One value per fill, moved once from the fetcher to the fill task: boxing the large variant
// would cost an allocation per variant fill to save a few hundred bytes on the stack.
#[allow(clippy::large_enum_variant)]
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

/// Fetches an entry from the origin: the simple form, for engine users.
///
/// The engine calls it at most once, with the metadata of the entry it holds (if any), so the
/// fetcher can send validators (`If-None-Match`, `If-Modified-Since`) and answer
/// [`Fetched::NotModified`]. Every fetcher is an [`Origin`] whose pass-through is a
/// [`Passthrough`] and whose error is a [`BoxError`].
///
/// Any `FnOnce(Option<Arc<Metadata>>) -> impl Future<Output = Result<Fetched, BoxError>>` closure
/// is a fetcher:
///
/// ```
/// use daramjwee::{Fetched, Metadata, EntryBody};
///
/// let fetcher = |_previous: Option<std::sync::Arc<Metadata>>| async {
///     Ok::<Fetched, daramjwee::BoxError>(Fetched::Entry {
///         meta: Metadata::new(http::StatusCode::OK),
///         body: EntryBody::from_bytes("hello"),
///     })
/// };
/// # let _ = fetcher;
/// ```
pub trait Fetcher: Send + 'static {
    /// Fetches the entry. `previous` is the stored entry's metadata, if the cache has one.
    fn fetch(
        self,
        previous: Option<Arc<Metadata>>,
    ) -> impl Future<Output = Result<Fetched, BoxError>> + Send + 'static;
}

impl<F, Fut> Fetcher for F
where
    F: FnOnce(Option<Arc<Metadata>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Fetched, BoxError>> + Send + 'static,
{
    fn fetch(
        self,
        previous: Option<Arc<Metadata>>,
    ) -> impl Future<Output = Result<Fetched, BoxError>> + Send + 'static {
        self(previous)
    }
}

/// The origin as the engine sees it: a [`Fetcher`] whose pass-through value and error are its
/// own types.
///
/// What it passes through unstored ([`Origin::Pass`]) and its error ([`Origin::Error`]) reach
/// the call whose origin produced them as they are: the engine never makes placeholders of
/// them. The followers of that call's fill get [`Origin::failure`] instead. The HTTP layer's
/// origin passes the inner service's own response and error this way; every [`Fetcher`] is an
/// `Origin` with [`Passthrough`] and [`BoxError`].
pub trait Origin: Send + 'static {
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
    /// only to the call whose origin produced it. By default, that the origin failed.
    fn failure(error: &Self::Error) -> FillError {
        let _ = error;
        FillError::Origin
    }
}

impl<F: Fetcher> Origin for F {
    type Pass = Passthrough;
    type Error = BoxError;

    fn fetch(
        self,
        previous: Option<Arc<Metadata>>,
    ) -> impl Future<Output = Result<Fetched, BoxError>> + Send + 'static {
        Fetcher::fetch(self, previous)
    }
}
