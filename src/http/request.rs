//! Request heads: the one way the layer copies a head, and the head a fill sends upstream.

use http::header;
use http::request::Parts;
use http::{Method, Request};

use super::headers::{strip_hop_by_hop, TargetHeaders, TARGET_REWRITING};

/// A copy of a request head (`Parts` is not `Clone`; a fill and its fallbacks each need one).
pub(crate) fn copy_head(parts: &Parts) -> Parts {
    let (mut out, ()) = Request::new(()).into_parts();
    out.method = parts.method.clone();
    out.uri = parts.uri.clone();
    out.version = parts.version;
    out.headers = parts.headers.clone();
    out.extensions = parts.extensions.clone();
    out
}

/// The request head sent to the origin on a fill: always a GET (a HEAD is answered from it),
/// without the client's own conditionals and ranges, which a shared fill must not carry,
/// without the client connection's hop-by-hop fields and proxy credentials, and without the
/// target-rewriting fields when the layer strips them.
pub(crate) fn origin_head(parts: &Parts, target: TargetHeaders) -> Parts {
    let mut out = copy_head(parts);
    out.method = Method::GET;
    strip_hop_by_hop(&mut out.headers);
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        out.headers.remove(name);
    }
    if target == TargetHeaders::Strip {
        strip_target(&mut out.headers);
    }
    out
}

/// Removes the [`TARGET_REWRITING`] fields.
pub(crate) fn strip_target(headers: &mut http::HeaderMap) {
    for name in &TARGET_REWRITING {
        headers.remove(name);
    }
}
