//! The request side: whether a request is looked up at all, the request's own directives
//! (RFC 9111 §5.2.1), and client conditionals answered from the cache (§4.3.2).

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::directives::CacheControl;
use super::parse_date;
use crate::entry::Metadata;

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

/// Every request field [`request_rule`] reads.
const REQUEST_RULE_FIELDS: [header::HeaderName; 4] = [
    header::CACHE_CONTROL,
    header::PRAGMA,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

pub(crate) fn request_rule(method: &Method, headers: &HeaderMap) -> RequestRule {
    let head = *method == Method::HEAD;
    if *method != Method::GET && !head {
        return RequestRule::Bypass("method");
    }
    // Most requests carry none of the fields read below: one pass over their (few) names
    // answers them, rather than a hashed lookup per field.
    if !headers
        .keys()
        .any(|name| REQUEST_RULE_FIELDS.contains(name))
    {
        return RequestRule::Lookup {
            directives: RequestDirectives::default(),
            head,
        };
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
