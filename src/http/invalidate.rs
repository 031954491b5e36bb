//! Invalidation after unsafe requests (RFC 9111 §4.4): a successful POST, PUT, DELETE or
//! PATCH removes what it names (its target URI, and same-origin `Location` /
//! `Content-Location`) before its response is handed on, so the client's next GET cannot see
//! the old entry.

use http::header;
use http::request::Parts;
use http::{Method, Uri};

use super::config::HttpConfig;
use super::request::copy_head;
use crate::cache::Cache;

/// Whether `m` may change state at the origin (and so invalidates what it names).
pub(crate) fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The keys an unsafe request invalidates (RFC 9111 §4.4): its target URI, and the
/// `Location` / `Content-Location` URIs of its response when they are on the same origin, each
/// keyed as a GET for it would be (so a custom key function is respected).
pub(crate) fn invalidation_keys(
    config: &HttpConfig,
    target: &Parts,
    res: &http::HeaderMap,
) -> Vec<String> {
    let mut keys = vec![config.key.make(target)];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(v) = res.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Some(uri) = same_origin_uri(target, v) else {
            tracing::debug!(
                location = v,
                "cross-origin or unparsable location not invalidated"
            );
            continue;
        };
        let mut parts = copy_head(target);
        parts.uri = uri;
        let key = config.key.make(&parts);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// `reference` resolved against the request target, if it is on the same origin: a relative
/// reference always is; an absolute one when its authority is the target's (from the URI, or
/// `Host` for origin-form requests) and its scheme the target's (either of http/https when the
/// request did not say, as behind a TLS terminator).
fn same_origin_uri(target: &Parts, reference: &str) -> Option<Uri> {
    let base = &target.uri;
    let reference = reference.trim();
    let path = if reference.starts_with('/') && !reference.starts_with("//") {
        reference.to_owned()
    } else if reference.contains("://") {
        let abs: Uri = reference.parse().ok()?;
        let authority = base
            .authority()
            .map(|a| a.as_str())
            .or_else(|| target.headers.get(header::HOST)?.to_str().ok())?;
        let same_host = abs
            .authority()
            .is_some_and(|a| a.as_str().eq_ignore_ascii_case(authority));
        let same_scheme = match (base.scheme_str(), abs.scheme_str()) {
            (Some(ours), Some(theirs)) => ours.eq_ignore_ascii_case(theirs),
            (None, Some(theirs)) => matches!(theirs, "http" | "https"),
            _ => false,
        };
        if !(same_host && same_scheme) {
            return None;
        }
        abs.path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned())
    } else if reference.starts_with("//") || reference.contains(':') {
        // Network-path or other-scheme references: not provably the same origin.
        return None;
    } else {
        // A relative path: resolve against the base path's directory (RFC 3986 §5.2.3).
        let base_path = base.path();
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{reference}")
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// Removes what a successful unsafe request to `target` names, given its response headers.
/// Failures are logged: the response is served regardless.
pub(crate) async fn invalidate(
    cache: &Cache,
    config: &HttpConfig,
    target: &Parts,
    res: &http::HeaderMap,
) {
    for key in invalidation_keys(config, target, res) {
        if let Err(e) = cache.delete(&key).await {
            tracing::warn!(error = %e, "invalidation after unsafe request failed");
        }
    }
}
