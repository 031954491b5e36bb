//! The engine's public per-call types: options, the freshness verdict, and what a lookup
//! answers.

use std::sync::Arc;
use std::time::SystemTime;

use super::Origin;
use crate::entry::{EntryBody, Metadata};
use crate::error::Error;

/// How a [`Lookup`] was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Served from tier `tier` (0 is hot). `stale`: a background refresh was scheduled.
    Hit {
        /// Index of the tier that served it.
        tier: usize,
        /// Whether the entry was stale (served while it is refreshed).
        stale: bool,
    },
    /// Fetched from the origin by this call (it led the fill).
    Miss,
    /// Streamed from a fill that another call started.
    Coalesced,
    /// A stored entry the origin confirmed with not-modified, served from tier `tier`.
    Revalidated {
        /// Index of the tier that served the body.
        tier: usize,
    },
    /// The origin's response must not be stored; handed through.
    Pass,
    /// The caller's validator matched the entry: no body.
    NotModified,
    /// The origin failed and the stored entry in tier `tier` was served as it is
    /// ([`Fetched::Stale`](crate::Fetched::Stale), RFC 5861 `stale-if-error`); nothing was
    /// written.
    StaleOnError {
        /// Index of the tier that served the body.
        tier: usize,
        /// The origin's error status, if it answered one.
        status: Option<u16>,
    },
}

impl Outcome {
    /// Whether the response came from a tier without an origin round trip.
    pub fn is_hit(&self) -> bool {
        matches!(self, Outcome::Hit { .. } | Outcome::NotModified)
    }

    /// The tier that served the body, when one did.
    pub fn tier(&self) -> Option<usize> {
        match *self {
            Outcome::Hit { tier, .. }
            | Outcome::Revalidated { tier }
            | Outcome::StaleOnError { tier, .. } => Some(tier),
            _ => None,
        }
    }
}

/// The answer of [`Cache::get`](crate::Cache::get): metadata, a body stream, and how it was obtained.
#[derive(Debug)]
#[non_exhaustive]
pub struct Lookup {
    /// How the lookup was answered.
    pub outcome: Outcome,
    /// The entry's metadata.
    pub meta: Arc<Metadata>,
    /// The body (empty for [`Outcome::NotModified`]).
    pub body: EntryBody,
    /// Where the fill that streams this body stores it ([`Outcome::Miss`] and
    /// [`Outcome::Coalesced`]); [`Storing::NotFilling`] for every other outcome.
    pub storing: Storing,
}

impl Lookup {
    pub(crate) fn new(outcome: Outcome, meta: Arc<Metadata>, body: EntryBody) -> Self {
        Lookup {
            outcome,
            meta,
            body,
            storing: Storing::NotFilling,
        }
    }
}

/// What a fill does with the body it streams, decided by the body's size when it publishes the
/// response head: what `Cache-Status` reports as `stored` (RFC 9211 §2.2.6), or why not. A store
/// that then fails to start or finish the write is a fault, logged and counted in
/// [`CacheStats::store_errors`](crate::CacheStats::store_errors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Storing {
    /// Not a body a fill streams (a hit, a pass-through, a revalidation).
    #[default]
    NotFilling,
    /// Tier `tier` is taking the body: the highest that keeps a body of its size (0 is hot).
    /// Lower tiers may take it as well, or get a copy once it is committed.
    Tier(usize),
    /// No tier keeps a body of its size: it streams to its readers unstored (counted in
    /// [`CacheStats::too_large`](crate::CacheStats::too_large)).
    TooLarge,
    /// The cache has no tier that stores (every one is a null store).
    NoTier,
}

/// Per-call options of [`Cache::get_with`](crate::Cache::get_with).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GetOptions {
    /// The caller's entity tag: when the entry's matches, answer [`Outcome::NotModified`].
    pub if_none_match: Option<String>,
    /// Validate with the origin even if the entry is fresh.
    pub revalidate: bool,
    /// Never serve a stale entry; validate it with the origin first.
    pub no_stale: bool,
    /// Answer only from the tiers ([`Error::NotCached`] on a miss).
    pub only_cached: bool,
    /// The caller's own freshness decision for a stored entry; when set, it replaces the
    /// engine's (`revalidate`, `no_stale`, TTLs and stale windows are then not consulted).
    pub judge: Option<Judge>,
}

/// What to do with a stored entry, as decided by a [`Judge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Serve it as fresh.
    Fresh,
    /// Serve it stale; `refresh` schedules a background refresh.
    Stale {
        /// Whether to refresh it in the background.
        refresh: bool,
    },
    /// Validate it with the origin before serving (or [`Error::NotCached`] with
    /// `only_cached`).
    Validate,
    /// No opinion: decide as without a judge (TTLs, stale windows, the other options).
    Default,
}

/// A caller-supplied freshness decision over a stored entry's metadata at `now`, so that a
/// protocol layer (the HTTP face) can apply its own rules without the engine parsing them.
#[derive(Clone)]
pub struct Judge(pub(super) Arc<JudgeFn>);

type JudgeFn = dyn Fn(&Metadata, SystemTime) -> Verdict + Send + Sync;

impl Judge {
    /// Wraps a decision function.
    pub fn new(f: impl Fn(&Metadata, SystemTime) -> Verdict + Send + Sync + 'static) -> Self {
        Judge(Arc::new(f))
    }
}

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Judge(..)")
    }
}

impl GetOptions {
    /// Answers not-modified when the entry's entity tag equals `etag`.
    pub fn if_none_match(mut self, etag: impl Into<String>) -> Self {
        self.if_none_match = Some(etag.into());
        self
    }
    /// Validates with the origin even if fresh.
    pub fn revalidate(mut self, yes: bool) -> Self {
        self.revalidate = yes;
        self
    }
    /// Never serves stale entries.
    pub fn no_stale(mut self, yes: bool) -> Self {
        self.no_stale = yes;
        self
    }
    /// Answers only from the tiers.
    pub fn only_cached(mut self, yes: bool) -> Self {
        self.only_cached = yes;
        self
    }
    /// Lets `judge` decide, for each stored entry, whether it is served, served stale or
    /// validated first.
    ///
    /// ```
    /// use daramjwee::{Cache, EntryBody, Fetched, GetOptions, Metadata, Verdict};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), daramjwee::Error> {
    /// let cache = Cache::builder().build();
    /// let v1 = |_prev| async {
    ///     Ok(Fetched::Entry { meta: Metadata::new(http::StatusCode::OK), body: EntryBody::from_bytes("v1") })
    /// };
    /// cache.get("k", v1).await?.body.collect().await?;
    /// // This caller accepts nothing stored: the entry is validated (here: replaced).
    /// let always_validate = GetOptions::default().judge(|_meta, _now| Verdict::Validate);
    /// let v2 = |_prev| async {
    ///     Ok(Fetched::Entry { meta: Metadata::new(http::StatusCode::OK), body: EntryBody::from_bytes("v2") })
    /// };
    /// let got = cache.get_with("k", always_validate, v2).await?;
    /// assert_eq!(got.body.collect().await?, "v2");
    /// # Ok(()) }
    /// ```
    pub fn judge(
        mut self,
        judge: impl Fn(&Metadata, SystemTime) -> Verdict + Send + Sync + 'static,
    ) -> Self {
        self.judge = Some(Judge::new(judge));
        self
    }
}

/// What a lookup through a fetcher answered: an entry (stored, or streamed from a fill), or
/// the fetcher's own pass-through value, handed back as it is.
pub(crate) enum Found<P> {
    Entry(Lookup),
    /// Boxed: pass-throughs are rare, and a response head is large; a hit's result should
    /// not be moved around at that size.
    Passed(Box<P>),
}

/// Why a lookup through a fetcher failed: the fetcher's own error (only ever given to the call
/// whose fetcher produced it), or the engine's.
pub(crate) enum Failed<E> {
    Origin(E),
    Cache(Error),
}

impl<E> From<Error> for Failed<E> {
    fn from(e: Error) -> Self {
        Failed::Cache(e)
    }
}

/// The result of a lookup through the fetcher `F`.
pub(crate) type Got<F> = Result<Found<<F as Origin>::Pass>, Failed<<F as Origin>::Error>>;
