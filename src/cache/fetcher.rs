//! The [`Fetcher`] trait: how the engine asks the origin for an entry.

use std::future::Future;
use std::sync::Arc;

use crate::entry::{EntryBody, Metadata};
use crate::error::BoxError;

/// What a fetcher answered.
#[derive(Debug)]
#[non_exhaustive]
pub enum Fetched {
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
    /// A response that must not be stored or shared (for example a `private` one). It is handed
    /// to the caller that fetched it; coalesced followers fetch on their own.
    Pass {
        /// The response's metadata.
        meta: Metadata,
        /// The response's body.
        body: EntryBody,
    },
}

/// Fetches an entry from the origin.
///
/// The engine calls it at most once, with the metadata of the entry it holds (if any), so the
/// fetcher can send validators (`If-None-Match`, `If-Modified-Since`) and answer
/// [`Fetched::NotModified`].
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
