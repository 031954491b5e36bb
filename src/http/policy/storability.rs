//! The response side: whether a response may be stored, and the [`Metadata`] it is stored
//! with (RFC 9111 §3, §4.2).
//!
//! [`storability`] is a pipeline of small steps, each one rule of the RFC: refusals (§3),
//! the instant the response was generated (§4.2.3), its freshness lifetime (§4.2.1, §4.2.2, or
//! the origin-trusting mode's fixed TTLs), the stale allowance (§5.2.2, RFC 5861 §3), and the
//! metadata built from them.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::age;
use super::directives::CacheControl;
use super::targeted::{ResponseDirectives, Rules};
use super::{is_shared, parse_date, storable_headers, PolicyMode};
use crate::entry::{add_saturating, EntryKind, Metadata};
use crate::http::vary;

/// Whether a response may be stored, and with what metadata.
#[derive(Debug)]
pub(crate) enum Storability {
    /// Store it with this metadata.
    Store(Metadata),
    /// Do not store it; the reason, for `Cache-Status`.
    Pass(&'static str),
}

/// Decides whether the response to `req_headers` may be stored under `rules`, and builds its
/// metadata: freshness from `s-maxage`/`max-age`/`Expires`, or a heuristic from
/// `Last-Modified`; age from `Age` and `Date`; validators; stale allowances.
pub(crate) fn storability<'a>(
    rules: impl Into<Rules<'a>>,
    req_headers: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
    requested_at: SystemTime,
    now: SystemTime,
) -> Storability {
    let rules = rules.into();
    let directives = rules.response_directives(headers);
    if let Some(reason) = refusal(rules.mode, req_headers, status, headers, &directives.cc) {
        return Storability::Pass(reason);
    }
    let date = parse_date(headers, header::DATE);
    let stored_at = age::generated_at(headers, date, requested_at, now);
    let Some(lifetime) = lifetime(rules.mode, status, headers, &directives, date, now) else {
        return Storability::Pass("status");
    };
    let timing = Timing {
        stored_at,
        fresh_until: add_saturating(stored_at, lifetime),
        stale_for: stale_allowance(rules.mode, &directives.cc),
    };
    Storability::Store(metadata(
        rules.mode,
        status,
        headers,
        &directives.cc,
        timing,
    ))
}

/// Why a response must not be stored at all, whatever its freshness (RFC 9111 §3).
fn refusal(
    mode: &PolicyMode,
    req_headers: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
) -> Option<&'static str> {
    // §5.2.2.3: with must-understand, a status code we implement overrides no-store, and one
    // we do not forbids storing.
    if cc.must_understand {
        if !understood_status(status) {
            return Some("must-understand");
        }
    } else if cc.no_store {
        return Some("no-store");
    }
    // §3.3, §3.4: a partial response is never stored as if it were the whole.
    if status == StatusCode::PARTIAL_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Some("partial");
    }
    let shared = is_shared(mode);
    if shared && cc.private {
        return Some("private");
    }
    // The Go daramjwee's rule, kept for its mode: a cookie is never replayed.
    if matches!(mode, PolicyMode::OriginTrusting { .. }) && headers.contains_key(header::SET_COOKIE)
    {
        return Some("set-cookie");
    }
    // §3.5: only these directives let a shared cache store an answer to credentials.
    let allows_authorized = cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
    if shared && req_headers.contains_key(header::AUTHORIZATION) && !allows_authorized {
        return Some("authorization");
    }
    vary_blocks_storing(headers).then_some("vary")
}

/// §4.1: `Vary: *` can never be matched by a later request, so it is not stored. Other
/// `Vary` values are stored per variant (see `vary.rs`).
fn vary_blocks_storing(headers: &HeaderMap) -> bool {
    vary::parse(headers) == vary::Vary::Star
}

/// The freshness lifetime, or `None` when the response has none and its status may not be
/// stored without one. `no-cache` (§5.2.2.4) stores it already stale.
fn lifetime(
    mode: &PolicyMode,
    status: StatusCode,
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    date: Option<SystemTime>,
    now: SystemTime,
) -> Option<Duration> {
    let lifetime = match mode {
        PolicyMode::OriginTrusting { ttl, negative_ttl } => {
            trusted_lifetime(status, *ttl, *negative_ttl)?
        }
        PolicyMode::Shared | PolicyMode::Private => {
            explicit_lifetime(is_shared(mode), headers, directives, date, now)
                .or_else(|| heuristic_lifetime(status, &directives.cc, headers, date, now))?
        }
    };
    Some(if directives.cc.no_cache {
        Duration::ZERO
    } else {
        lifetime
    })
}

/// The origin-trusting mode's fixed TTLs, for the statuses it stores.
fn trusted_lifetime(status: StatusCode, ttl: Duration, negative_ttl: Duration) -> Option<Duration> {
    if is_negative(status) {
        Some(negative_ttl)
    } else if status.is_success() || status.is_redirection() {
        Some(ttl)
    } else {
        None
    }
}

/// §4.2.1: `s-maxage` (shared caches), then `max-age`, then `Expires` minus `Date`. An invalid
/// `Expires` (e.g. "0") means already expired (§5.3). With a targeted field, `Expires` is
/// ignored (RFC 9213 §2.1).
fn explicit_lifetime(
    shared: bool,
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    date: Option<SystemTime>,
    now: SystemTime,
) -> Option<Duration> {
    let cc = &directives.cc;
    let seconds = (if shared { cc.s_maxage } else { None }).or(cc.max_age);
    if let Some(s) = seconds {
        return Some(Duration::from_secs(s));
    }
    if directives.targeted {
        return None;
    }
    let expires = headers.get(header::EXPIRES)?;
    let exp = expires
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok());
    Some(exp.map_or(Duration::ZERO, |exp| {
        exp.duration_since(date.unwrap_or(now)).unwrap_or_default()
    }))
}

/// §4.2.2: for `public` responses and heuristically cacheable statuses, 10% of the time since
/// `Last-Modified`, at most a day; nothing (stored, but stale) without `Last-Modified`.
fn heuristic_lifetime(
    status: StatusCode,
    cc: &CacheControl,
    headers: &HeaderMap,
    date: Option<SystemTime>,
    now: SystemTime,
) -> Option<Duration> {
    if !(cc.public || heuristically_cacheable(status)) {
        return None;
    }
    let lm = parse_date(headers, header::LAST_MODIFIED);
    let base = date.unwrap_or(now);
    Some(
        lm.and_then(|lm| base.duration_since(lm).ok())
            .map(|d| (d / 10).min(Duration::from_secs(86_400)))
            .unwrap_or_default(),
    )
}

/// How long past its freshness a stored response may be served while it is revalidated in
/// the background: `None` leaves it to the engine (origin-trusting mode), zero forbids it
/// (§5.2.2.2, §5.2.2.4, §5.2.2.8), otherwise `stale-while-revalidate` (RFC 5861 §3).
fn stale_allowance(mode: &PolicyMode, cc: &CacheControl) -> Option<Duration> {
    let never = cc.must_revalidate || cc.no_cache;
    match mode {
        PolicyMode::OriginTrusting { .. } if !never => None,
        _ if never || (is_shared(mode) && cc.proxy_revalidate) => Some(Duration::ZERO),
        _ => Some(Duration::from_secs(cc.stale_while_revalidate.unwrap_or(0))),
    }
}

/// When a stored response was generated, and how long it stays fresh and servable stale.
struct Timing {
    stored_at: SystemTime,
    fresh_until: SystemTime,
    stale_for: Option<Duration>,
}

fn metadata(
    mode: &PolicyMode,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    timing: Timing,
) -> Metadata {
    let mut meta = Metadata::new(status);
    meta.kind = if is_negative(status) {
        EntryKind::Negative
    } else {
        EntryKind::Positive
    };
    meta.stored_at = timing.stored_at;
    meta.fresh_until = Some(timing.fresh_until);
    meta.stale_for = timing.stale_for;
    meta.etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    meta.last_modified = parse_date(headers, header::LAST_MODIFIED);
    meta.content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok());
    meta.headers = kept_headers(is_shared(mode), headers, cc);
    meta
}

/// The headers an entry keeps. §5.2.2.4, §5.2.2.7: fields named by no-cache (any cache) or
/// private (shared caches) are not sent from the cache without validation: simplest is not
/// to keep them.
fn kept_headers(shared: bool, headers: &HeaderMap, cc: &CacheControl) -> HeaderMap {
    let mut kept = storable_headers(headers);
    let private_fields = if shared { &cc.private_fields[..] } else { &[] };
    for name in cc.no_cache_fields.iter().chain(private_fields) {
        kept.remove(name.as_str());
    }
    kept
}

/// A cacheable "not found": stored as a negative entry.
fn is_negative(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 410)
}

/// Status codes whose caching semantics this cache implements (for `must-understand`).
fn understood_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Status codes cacheable by default (RFC 9110 §15.1, "heuristically cacheable").
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// daramjwee's rule on top of RFC 9111: a shared cache does not store a response that sets a
/// cookie, unless the layer was told to ([`CacheLayerBuilder::share_set_cookie`]).
///
/// RFC 9111 lets a shared cache store and replay `Set-Cookie`; an origin that sets a per-user
/// cookie on a cacheable response without `private` would then hand one user's session to the
/// next. We refuse by default and say so in `Cache-Status` (`detail=set-cookie`); the RFC
/// behaviour is one builder call away for origins known to mark their private responses.
///
/// [`CacheLayerBuilder::share_set_cookie`]: crate::http::CacheLayerBuilder::share_set_cookie
pub(crate) fn refuses_set_cookie(
    mode: &PolicyMode,
    share_set_cookie: bool,
    headers: &HeaderMap,
) -> bool {
    !share_set_cookie
        && !matches!(mode, PolicyMode::Private)
        && headers.contains_key(header::SET_COOKIE)
}
