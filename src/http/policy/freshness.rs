//! Stored entries: the freshness decision for an entry and a request (RFC 9111 §4.2, §5.2;
//! RFC 5861), `stale-if-error`, and the `ttl` that `Cache-Status` reports.

use std::time::SystemTime;

use http::StatusCode;

use super::directives::CacheControl;
use super::request::RequestDirectives;
use super::targeted::Rules;
use super::{is_shared, PolicyMode};
use crate::cache::Verdict;
use crate::entry::Metadata;

/// The freshness decision for a stored entry and a request (RFC 9111 §4.2, §4.2.4, §5.2.1,
/// §5.2.2; RFC 5861 §3). Run by the engine on every lookup that finds an entry.
pub(crate) fn verdict<'a>(
    rules: impl Into<Rules<'a>>,
    req: &RequestDirectives,
    meta: &Metadata,
    now: SystemTime,
) -> Verdict {
    if req.no_cache {
        return Verdict::Validate;
    }
    let age = meta.age(now).as_secs();
    let lifetime = lifetime_secs(meta);
    if client_refuses(req, age, lifetime) {
        return Verdict::Validate;
    }
    if meta.fresh_until.is_none_or(|u| now < u) {
        return Verdict::Fresh;
    }
    stale_verdict(rules.into(), req, meta, age.saturating_sub(lifetime))
}

/// The entry's freshness lifetime in whole seconds (`u64::MAX`: it never goes stale).
fn lifetime_secs(meta: &Metadata) -> u64 {
    meta.fresh_until.map_or(u64::MAX, |u| {
        u.duration_since(meta.stored_at)
            .unwrap_or_default()
            .as_secs()
    })
}

/// Whether the request's own limits rule the entry out, fresh or not.
fn client_refuses(req: &RequestDirectives, age: u64, lifetime: u64) -> bool {
    // §5.2.1.1: the client will not take a response older than max-age, fresh or not.
    // `max-age=0` is how clients ask for an end-to-end check: a whole-second age of 0 does
    // not prove the entry is younger than that, so it is validated too.
    if req.max_age.is_some_and(|max| max == 0 || age > max) {
        return true;
    }
    // §5.2.1.3: the response must stay fresh for at least min-fresh more seconds.
    req.min_fresh
        .is_some_and(|min| lifetime.saturating_sub(age) < min)
}

/// The decision for an entry `staleness` seconds past its freshness.
fn stale_verdict(
    rules: Rules<'_>,
    req: &RequestDirectives,
    meta: &Metadata,
    staleness: u64,
) -> Verdict {
    let cc = rules.response_directives(&meta.headers).cc;
    if never_served_stale(rules.mode, &cc) {
        return Verdict::Validate;
    }
    // §5.2.1.2: the client accepts this much staleness; served as is.
    if req.max_stale.is_some_and(|max| staleness <= max) {
        return Verdict::Stale { refresh: false };
    }
    if req.max_age.is_some() || req.min_fresh.is_some() {
        return Verdict::Validate;
    }
    match (rules.mode, meta.stale_for) {
        // The Go daramjwee's model: serve what we have and refresh it behind the client,
        // within the engine's own stale window (`CacheBuilder::serve_stale_for`).
        (PolicyMode::OriginTrusting { .. }, None) => Verdict::Default,
        // RFC 5861 §3: within stale-while-revalidate, serve and refresh in the background.
        (_, Some(w)) if staleness < w.as_secs() => Verdict::Stale { refresh: true },
        _ => Verdict::Validate,
    }
}

/// §5.2.2.2, §5.2.2.8, §5.2.2.10 (s-maxage implies proxy-revalidate), §5.2.2.4: a stale
/// entry is never used without validation, whatever the client tolerates.
fn never_served_stale(mode: &PolicyMode, cc: &CacheControl) -> bool {
    cc.must_revalidate
        || cc.no_cache
        || (is_shared(mode) && (cc.proxy_revalidate || cc.s_maxage.is_some()))
}

/// Whether a stale entry may stand in for a failed validation (RFC 5861 §4): the origin
/// failed or answered 500, 502, 503 or 504, and the entry is within the response's or the
/// request's `stale-if-error` window.
pub(crate) fn stale_if_error<'a>(
    rules: impl Into<Rules<'a>>,
    req: &RequestDirectives,
    meta: &Metadata,
    now: SystemTime,
) -> bool {
    let rules = rules.into();
    let cc = rules.response_directives(&meta.headers).cc;
    // RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.4, §5.2.2.8, §5.2.2.10: a response that must be
    // validated before reuse is never served stale, not even on error or at the client's asking.
    let shared = is_shared(rules.mode);
    if cc.must_revalidate
        || cc.no_cache
        || (shared && (cc.proxy_revalidate || cc.s_maxage.is_some()))
    {
        return false;
    }
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

/// Seconds left of freshness at `now` (negative once stale), for `Cache-Status: ttl`;
/// saturating, so an entry that never expires reports a large positive number.
pub(crate) fn ttl_seconds(meta: &Metadata, now: SystemTime) -> Option<i64> {
    let until = meta.fresh_until?;
    Some(match until.duration_since(now) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    })
}
