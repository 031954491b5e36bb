//! `Range` requests answered from a complete stored entry (RFC 9110 §14).
//!
//! One byte range is served as `206` with `Content-Range`; several ranges get the whole
//! representation (`200`), which RFC 9110 §14.2 allows and which keeps the body a plain
//! skip/take over the stored stream (no multipart framing). This module only parses and
//! decides; it must never read a body.

use http::header::{self, HeaderMap};
use http::StatusCode;

use crate::entry::Metadata;

/// How to answer a request's `Range` from an entry of known length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// Ignore the range (none asked, multi-range, unknown unit, failed `If-Range`, ...): 200.
    Full,
    /// Bytes `start..=end` of `len`: 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
        /// The representation's full length.
        len: u64,
    },
    /// No requested byte exists: 416 with `Content-Range: bytes */len`.
    Unsatisfiable {
        /// The representation's full length.
        len: u64,
    },
}

/// Decides how to answer `req`'s `Range` from `meta`, whose body is `len` bytes long.
pub(crate) fn evaluate(req: &HeaderMap, meta: &Metadata, len: Option<u64>) -> RangeAnswer {
    let Some(spec) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Full;
    };
    // §14.2: ranges apply to a selected representation, i.e. a 200 we store whole.
    let Some(len) = len.filter(|_| meta.status == StatusCode::OK) else {
        return RangeAnswer::Full;
    };
    if !if_range_holds(req, meta) {
        return RangeAnswer::Full;
    }
    one_byte_range(spec, len)
}

/// The answer to a `Range` field value `spec` for a representation of `len` bytes: one byte
/// range is served, anything else (several ranges, another unit, a malformed spec) is ignored.
fn one_byte_range(spec: &str, len: u64) -> RangeAnswer {
    let Some((unit, set)) = spec.split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAnswer::Full;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(one), None) = (specs.next(), specs.next()) else {
        return RangeAnswer::Full;
    };
    let Some((first, last)) = one.split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Too many digits for u64 means "past any end".
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (first.is_empty(), digits(first), digits(last)) {
        // suffix-range: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeAnswer::Unsatisfiable { len }
            } else {
                RangeAnswer::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                    len,
                }
            }
        }
        (false, Some(start), last_pos) => {
            if !last.is_empty() && last_pos.is_none() {
                return RangeAnswer::Full;
            }
            if last_pos.is_some_and(|l| l < start) {
                // An invalid range-spec: ignore the field (§14.1.1).
                return RangeAnswer::Full;
            }
            if start >= len {
                return RangeAnswer::Unsatisfiable { len };
            }
            let end = last_pos.map_or(len - 1, |l| l.min(len - 1));
            RangeAnswer::Partial { start, end, len }
        }
        _ => RangeAnswer::Full,
    }
}

/// `If-Range` (RFC 9110 §13.1.5): the range applies only if the validator still matches,
/// compared strongly; otherwise the whole representation is sent.
fn if_range_holds(req: &HeaderMap, meta: &Metadata) -> bool {
    let Some(v) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return req.get(header::IF_RANGE).is_none();
    };
    let v = v.trim();
    if v.starts_with('"') || v.starts_with("W/") {
        return !v.starts_with("W/")
            && meta
                .etag
                .as_deref()
                .is_some_and(|ours| !ours.starts_with("W/") && ours == v);
    }
    match (httpdate::parse_http_date(v), meta.last_modified) {
        (Ok(date), Some(lm)) => date == lm,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ask(range: &str, len: u64) -> RangeAnswer {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        evaluate(&h, &Metadata::new(StatusCode::OK), Some(len))
    }

    #[test]
    fn byte_range_forms_map_to_inclusive_bounds() {
        assert_eq!(
            ask("bytes=0-9", 100),
            RangeAnswer::Partial {
                start: 0,
                end: 9,
                len: 100
            }
        );
        assert_eq!(
            ask("bytes=90-", 100),
            RangeAnswer::Partial {
                start: 90,
                end: 99,
                len: 100
            }
        );
        assert_eq!(
            ask("bytes=-10", 100),
            RangeAnswer::Partial {
                start: 90,
                end: 99,
                len: 100
            }
        );
        assert_eq!(
            ask("bytes=50-1000", 100),
            RangeAnswer::Partial {
                start: 50,
                end: 99,
                len: 100
            }
        );
        assert_eq!(
            ask("bytes=-1000", 100),
            RangeAnswer::Partial {
                start: 0,
                end: 99,
                len: 100
            }
        );
    }

    #[test]
    fn out_of_range_is_unsatisfiable_and_malformed_is_ignored() {
        assert_eq!(
            ask("bytes=100-", 100),
            RangeAnswer::Unsatisfiable { len: 100 }
        );
        assert_eq!(
            ask("bytes=-0", 100),
            RangeAnswer::Unsatisfiable { len: 100 }
        );
        assert_eq!(ask("bytes=9-1", 100), RangeAnswer::Full);
        assert_eq!(ask("bytes=a-b", 100), RangeAnswer::Full);
        assert_eq!(ask("items=0-1", 100), RangeAnswer::Full);
        assert_eq!(ask("bytes=0-1,5-6", 100), RangeAnswer::Full);
    }
}
