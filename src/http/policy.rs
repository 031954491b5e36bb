//! The one place where the HTTP face decides what may be served from and stored in the cache
//! (RFC 9111, RFC 5861).
//!
//! - Request side (`request_rule`): bypass (method, `no-store`, `If-Match`), or a lookup with
//!   the request's directives.
//! - Stored entry + request (`verdict`, run by the engine as its judge on every lookup that
//!   finds an entry): fresh, serve stale (with or without a background refresh), or validate.
//! - Response side (`storability`): whether a response may be stored, with which headers, and
//!   the freshness and stale allowances its [`Metadata`] carries; `merge_not_modified` for 304s;
//!   `stale_if_error` when a validation fails.
//! - Client conditionals answered from the cache (`client_not_modified`).
//!
//! The engine never parses headers; everything HTTP is decided here. This module must never do
//! I/O or touch a store.
//!
//! # Why not `http-cache-semantics`
//!
//! We evaluated the `http-cache-semantics` crate (2.1, latest 3.0) and kept our own rules:
//!
//! - Its `CachePolicy` is built from, and must be persisted with, the *original request and
//!   response* (it serialises both through serde). Our entries store status + headers in
//!   [`Metadata`], which is a shared type whose layout (and on-disk codec) we must not change;
//!   keeping a second serialised policy beside it would double the header storage and need a
//!   codec change.
//! - It implements RFC 7234, not RFC 9111 (`must-understand`, the 9111 `Age`/`no-cache`
//!   clarifications), and its Rust port does not parse `stale-while-revalidate` /
//!   `stale-if-error`; we would have to re-parse `Cache-Control` anyway.
//! - Its `Vary` handling matches one stored request per policy; we key variants (see
//!   `vary.rs`), which needs the normalised field values at key time, not a yes/no afterwards.
//! - Its decisions are made once per request-response pair; ours must also be made on the
//!   engine's hit path (a callback run against stored [`Metadata`] on every lookup) without
//!   allocation-heavy request reconstruction.
//!
//! Streaming itself would not have been a problem (it never touches bodies); the data model is.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

use crate::cache::Verdict;
use crate::entry::Metadata;

/// Which caching rules the layer follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyMode {
    /// A shared cache (proxy, CDN): honours `s-maxage` and `proxy-revalidate`, never stores
    /// `private` responses, stores responses to requests with `Authorization` only when the
    /// response allows it (RFC 9111 §3.5). The default.
    ///
    /// As RFC 9111 allows, a response that sets a cookie is stored (and the cookie replayed)
    /// unless the origin marks it `private`, `no-store`, `no-cache="Set-Cookie"` or
    /// `private="Set-Cookie"` (the last two store the response without the field). An origin
    /// that sets per-user cookies on otherwise cacheable responses must say so.
    #[default]
    Shared,
    /// A private (single-user) cache, e.g. around an HTTP client: stores `private` responses and
    /// responses to authorized requests; ignores `s-maxage`.
    Private,
    /// Trusts the origin, like the Go daramjwee: stores every successful (and not-found)
    /// response for `ttl` (`negative_ttl` for 404/410), unless it says `no-store` or `private`
    /// or sets a cookie, and serves stale entries while revalidating in the background.
    OriginTrusting {
        /// Freshness of stored 2xx/3xx responses.
        ttl: Duration,
        /// Freshness of stored 404/410 responses.
        negative_ttl: Duration,
    },
}

/// Parsed `Cache-Control` directives (request or response).
///
/// Tolerates case, spaces, quoted values, duplicates (the first value wins, except that any
/// occurrence of a boolean directive sets it) and unknown directives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheControl {
    /// `no-store`
    pub no_store: bool,
    /// `no-cache` without a field list.
    pub no_cache: bool,
    /// The fields named by `no-cache="..."` (lowercase): stored responses omit them.
    pub no_cache_fields: Vec<String>,
    /// `private` without a field list.
    pub private: bool,
    /// The fields named by `private="..."` (lowercase): a shared cache omits them.
    pub private_fields: Vec<String>,
    /// `public`
    pub public: bool,
    /// `must-revalidate`
    pub must_revalidate: bool,
    /// `proxy-revalidate`
    pub proxy_revalidate: bool,
    /// `must-understand`
    pub must_understand: bool,
    /// `only-if-cached`
    pub only_if_cached: bool,
    /// `max-age`
    pub max_age: Option<u64>,
    /// `s-maxage`
    pub s_maxage: Option<u64>,
    /// `max-stale` (`Some(u64::MAX)` when given without a value)
    pub max_stale: Option<u64>,
    /// `min-fresh`
    pub min_fresh: Option<u64>,
    /// `stale-while-revalidate` (RFC 5861)
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861)
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` field of `headers`.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(s) = value.to_str() else { continue };
            for directive in split_directives(s) {
                let directive = directive.trim();
                let (name, arg) = match directive.split_once('=') {
                    // `max-age =5` and `max-age= 5` are not the directive (§5.2: no
                    // whitespace around `=`): ignore them rather than guess.
                    Some((n, a)) if n.ends_with([' ', '\t']) || a.starts_with([' ', '\t']) => {
                        continue
                    }
                    Some((n, a)) => (n, Some(unquote(a))),
                    None => (directive, None),
                };
                let seconds = || arg.and_then(parse_delta_seconds);
                let fields = || {
                    arg.into_iter()
                        .flat_map(|a| a.split(','))
                        .map(|f| f.trim().to_ascii_lowercase())
                        .filter(|f| !f.is_empty())
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" if arg.is_some() => cc.no_cache_fields.extend(fields()),
                    "no-cache" => cc.no_cache = true,
                    "private" if arg.is_some() => cc.private_fields.extend(fields()),
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "must-understand" => cc.must_understand = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    "max-age" => set_first(&mut cc.max_age, seconds(), arg.is_some()),
                    "s-maxage" => set_first(&mut cc.s_maxage, seconds(), arg.is_some()),
                    "max-stale" if cc.max_stale.is_none() => {
                        cc.max_stale = Some(seconds().unwrap_or(u64::MAX));
                    }
                    "min-fresh" => set_first(&mut cc.min_fresh, seconds(), arg.is_some()),
                    "stale-while-revalidate" => {
                        set_first(&mut cc.stale_while_revalidate, seconds(), arg.is_some())
                    }
                    "stale-if-error" => set_first(&mut cc.stale_if_error, seconds(), arg.is_some()),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// A directive argument: a quoted-string loses its quotes (a token is taken as is).
fn unquote(a: &str) -> &str {
    a.strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(a)
}

/// Keeps the first valid value; an invalid `max-age` value counts as 0 (stale), the safe
/// reading of RFC 9111 §4.2.1.
fn set_first(slot: &mut Option<u64>, value: Option<u64>, had_arg: bool) {
    if slot.is_none() && had_arg {
        *slot = Some(value.unwrap_or(0));
    }
}

/// Splits on commas outside quoted strings.
fn split_directives(s: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// delta-seconds: digits only; values too large saturate (RFC 9111 §1.2.2).
fn parse_delta_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX).min(i32::MAX as u64))
}

/// The request's own caching directives (RFC 9111 §5.2.1), as the freshness decision needs
/// them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    /// `no-cache`, or `Pragma: no-cache` without `Cache-Control` (§5.4): validate first.
    pub no_cache: bool,
    /// `max-age`: the oldest response the client accepts.
    pub max_age: Option<u64>,
    /// `max-stale`: how stale a response the client accepts (`u64::MAX`: any).
    pub max_stale: Option<u64>,
    /// `min-fresh`: how much freshness the response must have left.
    pub min_fresh: Option<u64>,
    /// `stale-if-error` on the request (RFC 5861 §4).
    pub stale_if_error: Option<u64>,
    /// `only-if-cached`: answer 504 rather than contact the origin.
    pub only_if_cached: bool,
}

/// What the cache may do for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RequestRule {
    /// Neither served from nor stored in the cache (method, `no-store`).
    Bypass(&'static str),
    /// Looked up.
    Lookup {
        /// The request's directives.
        directives: RequestDirectives,
        /// A HEAD request.
        head: bool,
    },
}

pub(crate) fn request_rule(method: &Method, headers: &HeaderMap) -> RequestRule {
    let head = *method == Method::HEAD;
    if *method != Method::GET && !head {
        return RequestRule::Bypass("method");
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        return RequestRule::Bypass("request");
    }
    // RFC 9111 §4.3.2: If-Match and If-Unmodified-Since are not for a cache to evaluate;
    // the origin answers them (and such a response is not stored).
    if headers.contains_key(header::IF_MATCH) || headers.contains_key(header::IF_UNMODIFIED_SINCE) {
        return RequestRule::Bypass("precondition");
    }
    let pragma_no_cache = !headers.contains_key(header::CACHE_CONTROL)
        && headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("no-cache"))
        });
    RequestRule::Lookup {
        directives: RequestDirectives {
            no_cache: cc.no_cache || pragma_no_cache,
            max_age: cc.max_age,
            max_stale: cc.max_stale,
            min_fresh: cc.min_fresh,
            stale_if_error: cc.stale_if_error,
            only_if_cached: cc.only_if_cached,
        },
        head,
    }
}

/// The freshness decision for a stored entry and a request (RFC 9111 §4.2, §4.2.4, §5.2.1,
/// §5.2.2; RFC 5861 §3). Run by the engine on every lookup that finds an entry.
pub(crate) fn verdict(
    mode: &PolicyMode,
    req: &RequestDirectives,
    meta: &Metadata,
    now: SystemTime,
) -> Verdict {
    if req.no_cache {
        return Verdict::Validate;
    }
    let age = meta.age(now).as_secs();
    let lifetime = meta.fresh_until.map_or(u64::MAX, |u| {
        u.duration_since(meta.stored_at)
            .unwrap_or_default()
            .as_secs()
    });
    // §5.2.1.1: the client will not take a response older than max-age, fresh or not.
    // `max-age=0` is how clients ask for an end-to-end check: a whole-second age of 0 does
    // not prove the entry is younger than that, so it is validated too.
    if req.max_age.is_some_and(|max| max == 0 || age > max) {
        return Verdict::Validate;
    }
    // §5.2.1.3: the response must stay fresh for at least min-fresh more seconds.
    if let Some(min) = req.min_fresh {
        if lifetime.saturating_sub(age) < min {
            return Verdict::Validate;
        }
    }
    let fresh = meta.fresh_until.is_none_or(|u| now < u);
    if fresh {
        return Verdict::Fresh;
    }
    let cc = CacheControl::parse(&meta.headers);
    let shared = !matches!(mode, PolicyMode::Private);
    // §5.2.2.2, §5.2.2.8, §5.2.2.10 (s-maxage implies proxy-revalidate), §5.2.2.4: a stale
    // entry is never used without validation, whatever the client tolerates.
    if cc.must_revalidate
        || cc.no_cache
        || (shared && (cc.proxy_revalidate || cc.s_maxage.is_some()))
    {
        return Verdict::Validate;
    }
    let staleness = age.saturating_sub(lifetime);
    // §5.2.1.2: the client accepts this much staleness; served as is.
    if req.max_stale.is_some_and(|max| staleness <= max) {
        return Verdict::Stale { refresh: false };
    }
    if req.max_age.is_some() || req.min_fresh.is_some() {
        return Verdict::Validate;
    }
    match (mode, meta.stale_for) {
        // The Go daramjwee's model: serve what we have and refresh it behind the client,
        // within the engine's own stale window (`CacheBuilder::serve_stale_for`).
        (PolicyMode::OriginTrusting { .. }, None) => Verdict::Default,
        // RFC 5861 §3: within stale-while-revalidate, serve and refresh in the background.
        (_, Some(w)) if staleness < w.as_secs() => Verdict::Stale { refresh: true },
        _ => Verdict::Validate,
    }
}

/// Whether a stale entry may stand in for a failed validation (RFC 5861 §4): the origin
/// failed or answered 500, 502, 503 or 504, and the entry is within the response's or the
/// request's `stale-if-error` window.
pub(crate) fn stale_if_error(req: &RequestDirectives, meta: &Metadata, now: SystemTime) -> bool {
    let cc = CacheControl::parse(&meta.headers);
    let Some(window) = req.stale_if_error.or(cc.stale_if_error) else {
        return false;
    };
    let Some(until) = meta.fresh_until else {
        return true;
    };
    let staleness = now.duration_since(until).unwrap_or_default().as_secs();
    staleness <= window
}

/// The origin statuses RFC 5861 §4 counts as errors.
pub(crate) fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Whether a response may be stored, and with what metadata.
#[derive(Debug)]
pub(crate) enum Storability {
    /// Store it with this metadata.
    Store(Metadata),
    /// Do not store it; the reason, for `Cache-Status`.
    Pass(&'static str),
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

/// Decides whether the response to `req_headers` may be stored under `mode`, and builds its
/// metadata: freshness from `s-maxage`/`max-age`/`Expires`, or a heuristic from
/// `Last-Modified`; age from `Age` and `Date`; validators; stale allowances.
pub(crate) fn storability(
    mode: &PolicyMode,
    req_headers: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
    requested_at: SystemTime,
    now: SystemTime,
) -> Storability {
    let cc = CacheControl::parse(headers);
    // §5.2.2.3: with must-understand, a status code we implement overrides no-store, and one
    // we do not forbids storing.
    if cc.must_understand {
        if !understood_status(status) {
            return Storability::Pass("must-understand");
        }
    } else if cc.no_store {
        return Storability::Pass("no-store");
    }
    // §3.3, §3.4: a partial response is never stored as if it were the whole.
    if status == StatusCode::PARTIAL_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Storability::Pass("partial");
    }
    let shared = !matches!(mode, PolicyMode::Private);
    if shared && cc.private {
        return Storability::Pass("private");
    }
    // The Go daramjwee's rule, kept for its mode: a cookie is never replayed.
    if matches!(mode, PolicyMode::OriginTrusting { .. }) && headers.contains_key(header::SET_COOKIE)
    {
        return Storability::Pass("set-cookie");
    }
    if shared
        && req_headers.contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Storability::Pass("authorization");
    }
    if vary_blocks_storing(headers) {
        return Storability::Pass("vary");
    }
    let date = parse_date(headers, header::DATE);
    let age_value = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_delta_seconds)
        .unwrap_or(0);
    // RFC 9111 §4.2.3: corrected initial age.
    let apparent = date
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or_default();
    let response_delay = now.duration_since(requested_at).unwrap_or_default();
    let initial_age = apparent.max(Duration::from_secs(age_value) + response_delay);
    // Stored "as of" its origin time, so the entry's age is `now - stored_at`.
    let stored_at = now.checked_sub(initial_age).unwrap_or(now);

    let negative = matches!(status.as_u16(), 404 | 410);
    let lifetime: Option<Duration> = match mode {
        PolicyMode::OriginTrusting { ttl, negative_ttl } => {
            if !(status.is_success() || status.is_redirection() || negative) {
                return Storability::Pass("status");
            }
            Some(if negative { *negative_ttl } else { *ttl })
        }
        PolicyMode::Shared | PolicyMode::Private => {
            let explicit = (if shared { cc.s_maxage } else { None })
                .or(cc.max_age)
                .map(Duration::from_secs)
                .or_else(|| {
                    let expires = headers.get(header::EXPIRES)?;
                    // An invalid Expires (e.g. "0") means already expired.
                    let exp = expires
                        .to_str()
                        .ok()
                        .and_then(|s| httpdate::parse_http_date(s).ok());
                    Some(match exp {
                        Some(exp) => exp.duration_since(date.unwrap_or(now)).unwrap_or_default(),
                        None => Duration::ZERO,
                    })
                });
            match explicit {
                Some(l) => Some(l),
                None if cc.public || heuristically_cacheable(status) => {
                    // Heuristic freshness (RFC 9111 §4.2.2): 10% of the time since
                    // Last-Modified, at most a day; nothing without Last-Modified.
                    let lm = parse_date(headers, header::LAST_MODIFIED);
                    let base = date.unwrap_or(now);
                    Some(
                        lm.and_then(|lm| base.duration_since(lm).ok())
                            .map(|d| (d / 10).min(Duration::from_secs(86_400)))
                            .unwrap_or_default(),
                    )
                }
                None => return Storability::Pass("status"),
            }
        }
    };
    if !(cc.public
        || heuristically_cacheable(status)
        || cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || headers.contains_key(header::EXPIRES)
        || matches!(mode, PolicyMode::OriginTrusting { .. }))
    {
        return Storability::Pass("status");
    }
    let lifetime = lifetime.unwrap_or_default();
    let lifetime = if cc.no_cache {
        Duration::ZERO
    } else {
        lifetime
    };
    let stale_for = match mode {
        PolicyMode::OriginTrusting { .. } if !(cc.must_revalidate || cc.no_cache) => None,
        _ if cc.must_revalidate || (shared && cc.proxy_revalidate) || cc.no_cache => {
            Some(Duration::ZERO)
        }
        _ => Some(Duration::from_secs(cc.stale_while_revalidate.unwrap_or(0))),
    };
    let mut meta = Metadata::new(status);
    meta.kind = if negative {
        crate::entry::EntryKind::Negative
    } else {
        crate::entry::EntryKind::Positive
    };
    meta.stored_at = stored_at;
    meta.fresh_until = Some(stored_at + lifetime);
    meta.stale_for = stale_for;
    meta.etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    meta.last_modified = parse_date(headers, header::LAST_MODIFIED);
    meta.content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok());
    let mut kept = storable_headers(headers);
    // §5.2.2.4, §5.2.2.7: fields named by no-cache (any cache) or private (shared caches)
    // are not sent from the cache without validation: simplest is not to keep them.
    let private_fields = if shared { &cc.private_fields[..] } else { &[] };
    for name in cc.no_cache_fields.iter().chain(private_fields) {
        kept.remove(name.as_str());
    }
    meta.headers = kept;
    Storability::Store(meta)
}

/// §4.1: `Vary: *` can never be matched by a later request, so it is not stored. Other
/// `Vary` values are stored per variant (see `vary.rs`).
fn vary_blocks_storing(headers: &HeaderMap) -> bool {
    super::vary::parse(headers) == super::vary::Vary::Star
}

fn parse_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
}

pub(crate) use super::headers::strip_hop_by_hop;

/// The headers kept with an entry: hop-by-hop fields and `Age` removed (age is recomputed).
pub(crate) fn storable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    strip_hop_by_hop(&mut h);
    h.remove(header::AGE);
    h
}

/// Whether a `304` selects the stored entry for update (RFC 9111 §4.3.4): a strong validator
/// in the 304 must be the entry's; a weak one must match it weakly; none selects it.
pub(crate) fn not_modified_selects(stored: &Metadata, headers_304: &HeaderMap) -> bool {
    let Some(theirs) = headers_304.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let theirs = theirs.trim();
    match stored.etag.as_deref() {
        Some(ours) if theirs.starts_with("W/") || ours.starts_with("W/") => {
            ours.trim_start_matches("W/") == theirs.trim_start_matches("W/")
        }
        Some(ours) => ours == theirs,
        None => false,
    }
}

/// daramjwee's rule on top of RFC 9111: a shared cache does not store a response that sets a
/// cookie, unless the layer was told to ([`CacheLayerBuilder::share_set_cookie`]).
///
/// RFC 9111 lets a shared cache store and replay `Set-Cookie`; an origin that sets a per-user
/// cookie on a cacheable response without `private` would then hand one user's session to the
/// next. We refuse by default and say so in `Cache-Status` (`detail=set-cookie`); the RFC
/// behaviour is one builder call away for origins known to mark their private responses.
///
/// [`CacheLayerBuilder::share_set_cookie`]: super::CacheLayerBuilder::share_set_cookie
pub(crate) fn refuses_set_cookie(
    mode: &PolicyMode,
    share_set_cookie: bool,
    headers: &HeaderMap,
) -> bool {
    !share_set_cookie
        && !matches!(mode, PolicyMode::Private)
        && headers.contains_key(header::SET_COOKIE)
}

/// The metadata after a `304 Not Modified` (RFC 9111 §4.3.4): stored headers updated with the
/// 304's, except the framing ones; freshness recomputed from the merged headers.
pub(crate) fn merge_not_modified(
    mode: &PolicyMode,
    req_headers: &HeaderMap,
    previous: &Metadata,
    headers_304: &HeaderMap,
    requested_at: SystemTime,
    now: SystemTime,
) -> Metadata {
    let mut merged = previous.headers.clone();
    for name in storable_headers(headers_304).keys() {
        if name == header::CONTENT_LENGTH || name == header::CONTENT_ENCODING {
            continue;
        }
        merged.remove(name);
        for v in headers_304.get_all(name) {
            merged.append(name.clone(), v.clone());
        }
    }
    match storability(
        mode,
        req_headers,
        previous.status,
        &merged,
        requested_at,
        now,
    ) {
        Storability::Store(mut m) => {
            m.content_length = previous.content_length;
            m
        }
        // The origin now forbids storing: keep the body but make it stale at once, so it is
        // validated again before any further use.
        Storability::Pass(_) => {
            let mut m = previous.clone();
            m.stored_at = now;
            m.fresh_until = Some(now);
            m.stale_for = Some(Duration::ZERO);
            m
        }
    }
}

/// Whether the client's conditional request is satisfied by an entry (so it gets a 304).
/// `If-None-Match` uses weak comparison (RFC 9110 §13.1.2) and takes precedence over
/// `If-Modified-Since`.
pub(crate) fn client_not_modified(req_headers: &HeaderMap, meta: &Metadata) -> bool {
    if meta.status != StatusCode::OK {
        return false;
    }
    let mut inm = req_headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        let Some(etag) = meta.etag.as_deref() else {
            return false;
        };
        let ours = etag.trim_start_matches("W/");
        return inm
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
    }
    // The request's date first: most requests have none, and then nothing stored is parsed.
    let Some(since) = parse_date(req_headers, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    // §4.3.2: without Last-Modified, the stored Date stands in for it.
    meta.last_modified
        .or_else(|| parse_date(&meta.headers, header::DATE))
        .is_some_and(|lm| lm <= since)
}

/// Seconds left of freshness at `now` (negative once stale), for `Cache-Status: ttl`.
pub(crate) fn ttl_seconds(meta: &Metadata, now: SystemTime) -> Option<i64> {
    let until = meta.fresh_until?;
    Some(match until.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn cache_control_parsing_tolerates_case_spaces_quotes_and_duplicates() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", " Max-Age=\"60\" , PUBLIC,foo=\"a,b\""),
            (
                "cache-control",
                "max-age=5, s-maxage=10, no-cache=\"set-cookie\"",
            ),
        ]));
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(10));
        assert!(cc.public && !cc.no_cache && !cc.private);
        assert_eq!(cc.no_cache_fields, vec!["set-cookie".to_owned()]);
    }

    #[test]
    fn whitespace_around_equals_voids_the_directive() {
        let cc = CacheControl::parse(&headers(&[("cache-control", "max-age =100, s-maxage= 5")]));
        assert_eq!((cc.max_age, cc.s_maxage), (None, None));
        let cc = CacheControl::parse(&headers(&[("cache-control", "max-age='5'")]));
        assert_eq!(cc.max_age, Some(0));
    }

    #[test]
    fn qualified_no_cache_and_private_strip_their_fields_only() {
        let now = SystemTime::now();
        let h = headers(&[
            (
                "cache-control",
                "max-age=60, no-cache=\"a, B\", private=\"c\"",
            ),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("d", "4"),
        ]);
        let none = HeaderMap::new();
        let Storability::Store(m) =
            storability(&PolicyMode::Shared, &none, StatusCode::OK, &h, now, now)
        else {
            panic!("a qualified no-cache/private response is storable")
        };
        assert!(m.headers.contains_key("d"));
        assert!(!m.headers.contains_key("a") && !m.headers.contains_key("b"));
        assert!(!m.headers.contains_key("c"));
        let Storability::Store(m) =
            storability(&PolicyMode::Private, &none, StatusCode::OK, &h, now, now)
        else {
            panic!()
        };
        assert!(
            m.headers.contains_key("c"),
            "a private cache keeps private fields"
        );
    }

    #[test]
    fn malformed_expires_dates_mean_already_expired() {
        // RFC 9111 §5.3: invalid dates are in the past.
        let now = SystemTime::now();
        for bad in [
            "0",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
        ] {
            let h = headers(&[("expires", bad)]);
            let Storability::Store(m) = storability(
                &PolicyMode::Shared,
                &HeaderMap::new(),
                StatusCode::OK,
                &h,
                now,
                now,
            ) else {
                panic!("{bad}: a 200 with Expires is storable")
            };
            assert_eq!(m.fresh_until, Some(now), "{bad}");
        }
    }

    #[test]
    fn invalid_max_age_is_treated_as_stale() {
        let cc = CacheControl::parse(&headers(&[("cache-control", "max-age=abc")]));
        assert_eq!(cc.max_age, Some(0));
    }

    #[test]
    fn shared_cache_refuses_private_and_authorized_but_origin_trusting_refuses_cookies() {
        let now = SystemTime::now();
        let m = PolicyMode::Shared;
        let none = HeaderMap::new();
        let auth = headers(&[("authorization", "Bearer x")]);
        let private = headers(&[("cache-control", "private, max-age=60")]);
        let cookie = headers(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]);
        let plain = headers(&[("cache-control", "max-age=60")]);
        assert!(matches!(
            storability(&m, &none, StatusCode::OK, &private, now, now),
            Storability::Pass("private")
        ));
        assert!(matches!(
            storability(&m, &none, StatusCode::OK, &cookie, now, now),
            Storability::Store(_)
        ));
        let trusting = PolicyMode::OriginTrusting {
            ttl: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(1),
        };
        assert!(matches!(
            storability(&trusting, &none, StatusCode::OK, &cookie, now, now),
            Storability::Pass("set-cookie")
        ));
        assert!(matches!(
            storability(&m, &auth, StatusCode::OK, &plain, now, now),
            Storability::Pass("authorization")
        ));
        let public = headers(&[("cache-control", "public, max-age=60")]);
        assert!(matches!(
            storability(&m, &auth, StatusCode::OK, &public, now, now),
            Storability::Store(_)
        ));
        assert!(matches!(
            storability(
                &PolicyMode::Private,
                &auth,
                StatusCode::OK,
                &private,
                now,
                now
            ),
            Storability::Store(_)
        ));
    }

    #[test]
    fn s_maxage_beats_max_age_in_shared_mode_only() {
        let now = SystemTime::now();
        let h = headers(&[("cache-control", "max-age=10, s-maxage=100")]);
        let Storability::Store(m) = storability(
            &PolicyMode::Shared,
            &HeaderMap::new(),
            StatusCode::OK,
            &h,
            now,
            now,
        ) else {
            panic!()
        };
        assert_eq!(m.fresh_until, Some(now + Duration::from_secs(100)));
        let Storability::Store(m) = storability(
            &PolicyMode::Private,
            &HeaderMap::new(),
            StatusCode::OK,
            &h,
            now,
            now,
        ) else {
            panic!()
        };
        assert_eq!(m.fresh_until, Some(now + Duration::from_secs(10)));
    }

    #[test]
    fn age_header_reduces_remaining_freshness() {
        let now = SystemTime::now();
        let h = headers(&[("cache-control", "max-age=100"), ("age", "40")]);
        let Storability::Store(m) = storability(
            &PolicyMode::Shared,
            &HeaderMap::new(),
            StatusCode::OK,
            &h,
            now,
            now,
        ) else {
            panic!()
        };
        assert_eq!(m.fresh_until, Some(now + Duration::from_secs(60)));
        assert!(!m.headers.contains_key("age"));
    }

    #[test]
    fn uncacheable_status_without_explicit_freshness_is_not_stored() {
        let now = SystemTime::now();
        let h = HeaderMap::new();
        assert!(matches!(
            storability(
                &PolicyMode::Shared,
                &h,
                StatusCode::INTERNAL_SERVER_ERROR,
                &h,
                now,
                now
            ),
            Storability::Pass(_)
        ));
        assert!(matches!(
            storability(
                &PolicyMode::Shared,
                &h,
                StatusCode::PARTIAL_CONTENT,
                &h,
                now,
                now
            ),
            Storability::Pass(_)
        ));
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_not_stored() {
        let h = headers(&[
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("x-ok", "1"),
        ]);
        let kept = storable_headers(&h);
        assert!(kept.contains_key("x-ok"));
        assert!(
            !kept.contains_key("x-secret")
                && !kept.contains_key("keep-alive")
                && !kept.contains_key("connection")
        );
    }

    #[test]
    fn verdict_follows_request_and_response_directives() {
        let now = SystemTime::now();
        let entry = |cc: &str, age: u64, lifetime: u64| {
            let mut m =
                Metadata::new(StatusCode::OK).with_headers(headers(&[("cache-control", cc)]));
            m.stored_at = now - Duration::from_secs(age);
            m.fresh_until = Some(m.stored_at + Duration::from_secs(lifetime));
            m.stale_for = Some(Duration::from_secs(
                CacheControl::parse(&m.headers)
                    .stale_while_revalidate
                    .unwrap_or(0),
            ));
            m
        };
        let req = |cc: &str| match request_rule(&Method::GET, &headers(&[("cache-control", cc)])) {
            RequestRule::Lookup { directives, .. } => directives,
            RequestRule::Bypass(_) => panic!("{cc}"),
        };
        let shared = PolicyMode::Shared;
        let cases = [
            // (response cc, age, lifetime, request cc, expected)
            ("", 10, 100, "", Verdict::Fresh),
            ("", 10, 100, "no-cache", Verdict::Validate),
            ("", 10, 100, "max-age=5", Verdict::Validate),
            ("", 10, 100, "max-age=0", Verdict::Validate),
            ("", 10, 100, "min-fresh=95", Verdict::Validate),
            ("", 10, 100, "min-fresh=50", Verdict::Fresh),
            ("", 110, 100, "", Verdict::Validate),
            (
                "",
                110,
                100,
                "max-stale=20",
                Verdict::Stale { refresh: false },
            ),
            ("", 110, 100, "max-stale=5", Verdict::Validate),
            ("", 110, 100, "max-stale", Verdict::Stale { refresh: false }),
            ("must-revalidate", 110, 100, "max-stale", Verdict::Validate),
            ("proxy-revalidate", 110, 100, "max-stale", Verdict::Validate),
            ("s-maxage=100", 110, 100, "max-stale", Verdict::Validate),
            (
                "stale-while-revalidate=60",
                110,
                100,
                "",
                Verdict::Stale { refresh: true },
            ),
            ("stale-while-revalidate=5", 110, 100, "", Verdict::Validate),
            (
                "stale-while-revalidate=60",
                110,
                100,
                "min-fresh=1",
                Verdict::Validate,
            ),
        ];
        for (rcc, age, life, qcc, want) in cases {
            let got = verdict(&shared, &req(qcc), &entry(rcc, age, life), now);
            assert_eq!(
                got, want,
                "response {rcc:?} age {age}/{life}, request {qcc:?}"
            );
        }
        // A private cache is not bound by proxy-revalidate.
        let got = verdict(
            &PolicyMode::Private,
            &req("max-stale"),
            &entry("proxy-revalidate", 110, 100),
            now,
        );
        assert_eq!(got, Verdict::Stale { refresh: false });
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let meta = Metadata::new(StatusCode::OK).with_etag("\"v2\"");
        assert!(client_not_modified(
            &headers(&[("if-none-match", "\"v1\", W/\"v2\"")]),
            &meta
        ));
        assert!(!client_not_modified(
            &headers(&[("if-none-match", "\"v1\"")]),
            &meta
        ));
        assert!(client_not_modified(
            &headers(&[("if-none-match", "*")]),
            &meta
        ));
    }
}
