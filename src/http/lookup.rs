//! One cache lookup through the layer, past the fresh-hit fast path: the engine lookup with the
//! origin as its fetcher, the `Vary` marker followed to the client's variant, and what each
//! outcome becomes (a response, the origin's own error, or the cache's answer for an origin
//! that failed).

use std::sync::Arc;

use http::request::Parts;
use http::{Request, Response, StatusCode};

use super::answer::Answer;
use super::body::{drain_detached, CacheBody};
use super::config::HttpConfig;
use super::origin::{call, FillRequest, OriginError, OriginFetcher, OriginService, Passed};
use super::policy::{self, RequestDirectives};
use super::request::origin_head;
use super::status::CacheStatus;
use super::vary;
use crate::cache::{Cache, Failed, Found, GetOptions, Lookup, Outcome, Verdict};
use crate::entry::StoredEntry;
use crate::error::{Error, FillError};

/// What one lookup through the layer ends in, before it is rendered.
type Looked<ResB, E> = Result<Found<Passed<ResB>>, Failed<OriginError<E>>>;

/// Whether the URL had stored variants and none was this request's (RFC 9211 §2.2.2
/// `fwd=vary-miss`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Varied {
    No,
    Miss,
}

/// One cache lookup through the layer.
pub(crate) struct CachedCall {
    pub(crate) cache: Cache,
    pub(crate) config: Arc<HttpConfig>,
    pub(crate) head: bool,
    pub(crate) directives: Arc<RequestDirectives>,
}

impl CachedCall {
    /// The lookup of `key` for the request `parts`, `found` being what
    /// [`Answer::fresh_hit`] read from the first tier.
    pub(crate) async fn run<S, B>(
        self,
        svc: S,
        parts: Parts,
        body: B,
        key: String,
        found: Option<StoredEntry>,
    ) -> Result<Response<CacheBody<S::ResBody>>, S::OriginError>
    where
        S: OriginService<B>,
        B: Default + Send + 'static,
    {
        let origin = origin_head(&parts, self.config.target_headers);
        let fetcher = self.fetcher(svc.clone(), &origin, body, &key, None);
        let result = self
            .cache
            .fetch_through(&key, self.options(), fetcher, found)
            .await;
        let (result, varied) = match result {
            Ok(Found::Entry(lookup)) => match vary::read_marker(&lookup.meta) {
                // §4.1: a marker at the primary key sends the request on to its variant.
                Some((nonce, names)) => {
                    let vkey = vary::variant_key(&key, &nonce, &names, &origin.headers);
                    let fetcher =
                        self.fetcher(svc.clone(), &origin, B::default(), &key, Some(names));
                    self.variant(lookup, &vkey, fetcher).await
                }
                None => (Ok(Found::Entry(lookup)), Varied::No),
            },
            other => (other, Varied::No),
        };
        self.render(result, varied, svc, parts).await
    }

    /// Looks up the variant a marker (`marker`, from the primary key) sends this request to.
    async fn variant<S, B>(
        &self,
        marker: Lookup,
        vkey: &str,
        fetcher: OriginFetcher<S, B>,
    ) -> (Looked<S::ResBody, S::OriginError>, Varied)
    where
        S: OriginService<B>,
        B: Default + Send + 'static,
    {
        let led = marker.outcome == Outcome::Miss;
        let stored = marker.outcome.tier().is_some();
        // The marker's own (empty) body may be a fill: let it commit.
        if matches!(marker.outcome, Outcome::Miss | Outcome::Coalesced) {
            drain_detached(marker.body);
        }
        let mut found = self
            .cache
            .fetch_through(vkey, self.options(), fetcher, None)
            .await;
        let mut varied = Varied::No;
        if let Ok(Found::Entry(variant)) = &mut found {
            let fetched = matches!(variant.outcome, Outcome::Miss | Outcome::Coalesced);
            if led && matches!(variant.outcome, Outcome::Hit { .. } | Outcome::Coalesced) {
                // This request's own fill stored the variant (it may have committed before
                // this read): to the client it is the miss it was.
                variant.outcome = Outcome::Miss;
            } else if stored && fetched {
                varied = Varied::Miss;
            }
        }
        (found, varied)
    }

    /// Turns what the lookup ended in into the client's response.
    async fn render<S, B>(
        &self,
        result: Looked<S::ResBody, S::OriginError>,
        varied: Varied,
        svc: S,
        parts: Parts,
    ) -> Result<Response<CacheBody<S::ResBody>>, S::OriginError>
    where
        S: OriginService<B>,
        B: Default + Send + 'static,
    {
        let answer = self.answer();
        match result {
            Ok(Found::Entry(lookup)) => Ok(match self.forward_reason(varied, lookup.outcome) {
                Some(fwd) => answer.respond_fwd(lookup, &parts, fwd),
                None => answer.respond(lookup, &parts),
            }),
            Ok(Found::Passed(passed)) => {
                let Passed { res, reason } = *passed;
                Ok(answer.pass(res, reason))
            }
            Err(Failed::Origin(OriginError::Service(e))) => Err(e),
            Err(Failed::Origin(OriginError::Timeout(after))) => Ok(answer.origin_timed_out(after)),
            Err(Failed::Cache(e)) => self.cache_failed(e, svc, parts).await,
        }
    }

    /// The engine could not answer: the only-if-cached 504, the shared answer of a fill that
    /// failed at the origin (never a second origin call), or, for a fault of the cache itself,
    /// the origin directly (fail open).
    async fn cache_failed<S, B>(
        &self,
        e: Error,
        svc: S,
        parts: Parts,
    ) -> Result<Response<CacheBody<S::ResBody>>, S::OriginError>
    where
        S: OriginService<B>,
        B: Default + Send + 'static,
    {
        let answer = self.answer();
        match e {
            // RFC 9111 §5.2.1.7: only-if-cached and nothing usable stored.
            Error::NotCached if self.directives.only_if_cached => {
                let mut res = Response::new(CacheBody::empty());
                *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                let status = CacheStatus {
                    fwd: Some("miss"),
                    ..Default::default()
                };
                answer.stamp(&mut res, status);
                Ok(res)
            }
            Error::FillAbandoned(FillError::Origin) => {
                Ok(answer.origin_failed(StatusCode::BAD_GATEWAY, "origin-error"))
            }
            Error::FillAbandoned(FillError::OriginTimeout(_)) | Error::Timeout { .. } => {
                Ok(answer.origin_failed(StatusCode::GATEWAY_TIMEOUT, "origin-timeout"))
            }
            Error::NotCached => self.origin_direct(svc, parts, "uri-miss").await,
            e => {
                tracing::warn!(error = %e, "cache lookup failed; serving from the origin");
                self.origin_direct(svc, parts, "bypass").await
            }
        }
    }

    /// A `Cache-Status` forward reason other than the outcome's own: the URL's stored variants
    /// did not include this request's, or the request's `no-cache` / `max-age=0` made the
    /// cache validate what it holds.
    fn forward_reason(&self, varied: Varied, outcome: Outcome) -> Option<&'static str> {
        let forced = self.directives.no_cache || self.directives.max_age == Some(0);
        match outcome {
            _ if varied == Varied::Miss => Some("vary-miss"),
            Outcome::Revalidated { .. } if forced => Some("request"),
            _ => None,
        }
    }

    /// The engine options for this request: the HTTP freshness decision as the judge.
    fn options(&self) -> GetOptions {
        let config = self.config.clone();
        let directives = self.directives.clone();
        GetOptions::default()
            .only_cached(self.directives.only_if_cached || self.head)
            .judge(move |meta, now| {
                if vary::is_marker(meta) {
                    // A marker holds no response: always follow it to the variant.
                    Verdict::Fresh
                } else {
                    policy::verdict(config.rules(), &directives, meta, now)
                }
            })
    }

    fn fetcher<S, B>(
        &self,
        svc: S,
        origin: &Parts,
        body: B,
        primary: &str,
        variant_of: Option<Vec<String>>,
    ) -> OriginFetcher<S, B> {
        OriginFetcher {
            svc,
            head: super::request::copy_head(origin),
            body,
            fill: FillRequest {
                config: self.config.clone(),
                directives: self.directives.clone(),
                cache: self.cache.clone(),
                primary: primary.to_owned(),
                variant_of,
            },
        }
    }

    fn answer(&self) -> Answer<'_> {
        Answer {
            cache: &self.cache,
            config: &self.config,
            head: self.head,
        }
    }

    /// Calls the origin directly, without the cache (HEAD misses and fail-open), under the
    /// origin timeout.
    async fn origin_direct<S, B>(
        &self,
        mut svc: S,
        mut parts: Parts,
        fwd: &'static str,
    ) -> Result<Response<CacheBody<S::ResBody>>, S::OriginError>
    where
        S: OriginService<B>,
        B: Default,
    {
        super::strip_hop_by_hop(&mut parts.headers);
        if self.config.target_headers == super::TargetHeaders::Strip {
            super::request::strip_target(&mut parts.headers);
        }
        let req = Request::from_parts(parts, B::default());
        let res = match call(&mut svc, req, self.config.origin_timeout).await {
            Ok(res) => res,
            Err(OriginError::Service(e)) => return Err(e),
            Err(OriginError::Timeout(after)) => return Ok(self.answer().origin_timed_out(after)),
        };
        let mut res = res.map(CacheBody::origin);
        super::strip_hop_by_hop(res.headers_mut());
        let status = CacheStatus {
            fwd: Some(fwd),
            ..Default::default()
        };
        self.answer().stamp(&mut res, status);
        Ok(res)
    }
}
