//! Validation answers: whether a `304 Not Modified` selects the stored entry, and the entry's
//! metadata after it (RFC 9111 §4.3.3, §4.3.4).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};

use super::storability::{storability, Storability};
use super::storable_headers;
use super::targeted::Rules;
use crate::entry::Metadata;

/// The metadata after a `304 Not Modified` (RFC 9111 §4.3.4): stored headers updated with the
/// 304's, except the framing ones; freshness recomputed from the merged headers.
pub(crate) fn merge_not_modified<'a>(
    rules: impl Into<Rules<'a>>,
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
    let status = previous.status;
    match storability(rules, req_headers, status, &merged, requested_at, now) {
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
