//! The one place where the HTTP face decides what may be served from and stored in the cache
//! (RFC 9111, RFC 5861).
//!
//! - Directives (`directives.rs`, `targeted.rs`): `Cache-Control`, and the targeted fields of
//!   RFC 9213 (`CDN-Cache-Control`...) that replace it for a shared cache that lists them.
//! - Request side (`request.rs`: `request_rule`): bypass (method, `no-store`, `If-Match`), or
//!   a lookup with the request's directives.
//! - Stored entry + request (`freshness.rs`: `verdict`, run by the engine as its judge on every
//!   lookup that finds an entry): fresh, serve stale (with or without a background refresh), or
//!   validate; `stale_if_error` when a validation fails.
//! - Response side (`storability.rs`, `age.rs`): whether a response may be stored, with which
//!   headers, and the freshness and stale allowances its [`Metadata`](crate::Metadata) carries;
//!   `merge_not_modified` for 304s (`not_modified.rs`).
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
//!   [`Metadata`](crate::Metadata), which is a shared type whose layout (and on-disk codec) we must not change;
//!   keeping a second serialised policy beside it would double the header storage and need a
//!   codec change.
//! - It implements RFC 7234, not RFC 9111 (`must-understand`, the 9111 `Age`/`no-cache`
//!   clarifications), and its Rust port does not parse `stale-while-revalidate` /
//!   `stale-if-error`; we would have to re-parse `Cache-Control` anyway.
//! - Its `Vary` handling matches one stored request per policy; we key variants (see
//!   `vary.rs`), which needs the normalised field values at key time, not a yes/no afterwards.
//! - Its decisions are made once per request-response pair; ours must also be made on the
//!   engine's hit path (a callback run against stored [`Metadata`](crate::Metadata) on every lookup) without
//!   allocation-heavy request reconstruction.
//!
//! Streaming itself would not have been a problem (it never touches bodies); the data model is.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName};

mod age;
mod directives;
mod freshness;
mod not_modified;
mod request;
mod storability;
mod targeted;
#[cfg(test)]
mod tests;

pub use directives::CacheControl;
pub(crate) use freshness::{is_error_status, stale_if_error, ttl_seconds, verdict};
pub(crate) use not_modified::{merge_not_modified, not_modified_selects};
pub(crate) use request::{client_not_modified, request_rule, RequestDirectives, RequestRule};
pub(crate) use storability::{refuses_set_cookie, storability, Storability};
pub(crate) use targeted::{Rules, Targeted};

pub(crate) use super::headers::strip_hop_by_hop;

// Names the unit tests (`tests.rs`) use through `super::*`, as when they lived in one file.
#[cfg(test)]
use {
    crate::cache::Verdict,
    crate::entry::Metadata,
    http::{Method, StatusCode},
};

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
    ///
    /// The only mode that honours targeted fields such as `CDN-Cache-Control` (RFC 9213), when
    /// the layer lists them
    /// ([`CacheLayerBuilder::targeted_cache_control`](crate::http::CacheLayerBuilder::targeted_cache_control)).
    #[default]
    Shared,
    /// A private (single-user) cache, e.g. around an HTTP client: stores `private` responses and
    /// responses to authorized requests; ignores `s-maxage` and targeted fields (which address
    /// shared caches), passing the latter through.
    Private,
    /// Trusts the origin, like the Go daramjwee: stores every successful (and not-found)
    /// response for `ttl` (`negative_ttl` for 404/410), unless it says `no-store` or `private`
    /// or sets a cookie, and serves stale entries while revalidating in the background.
    /// Targeted fields are ignored (and passed through): freshness is the layer's, not the
    /// response's.
    ///
    /// Any `Duration` is accepted: a TTL too long for the clock means "never expires".
    OriginTrusting {
        /// Freshness of stored 2xx/3xx responses.
        ttl: Duration,
        /// Freshness of stored 404/410 responses.
        negative_ttl: Duration,
    },
}

/// Whether the mode's rules are a shared cache's (§5.2.2.7 `private`, §3.5, `s-maxage`).
fn is_shared(mode: &PolicyMode) -> bool {
    !matches!(mode, PolicyMode::Private)
}

fn parse_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
}

/// The headers kept with an entry: hop-by-hop fields and `Age` removed (age is recomputed).
pub(crate) fn storable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    strip_hop_by_hop(&mut h);
    h.remove(http::header::AGE);
    // Room for what an answer adds, so each hit copies these fields with a clone
    // (`answer::with_room`). The room is kept in the index only: `reserve` also makes room
    // for that many more fields (about 100 bytes each, for the entry's life), and a clone
    // keeps the index's size but not that spare capacity.
    h.reserve(crate::entry::HEADER_ROOM);
    h.clone()
}
