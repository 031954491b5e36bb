//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`; not a public API).
//!
//! The HTTP face's decisions are crate-private; this module runs them on arbitrary input and
//! checks the invariants that must hold whatever the headers say, panicking when one breaks (a
//! panic is what the fuzzer reports). It must never be used by anything but the fuzz targets.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use crate::http::policy::{self, PolicyMode, RequestRule, Storability};
use crate::http::{range, vary};
use crate::store::codec;

/// Which [`PolicyMode`] a fuzz input selects.
pub fn mode(selector: u8) -> PolicyMode {
    match selector % 3 {
        0 => PolicyMode::Shared,
        1 => PolicyMode::Private,
        _ => PolicyMode::OriginTrusting {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        },
    }
}

/// Runs every header decision of the HTTP face on one request/response pair: the request
/// rule, storability, the freshness verdict at several instants, the 304 merge, client
/// conditionals, `Range`, `Vary` keys, and the metadata codec round trip of what would be
/// stored. Panics when an invariant breaks.
pub fn http_decisions(
    mode: &PolicyMode,
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    res: &HeaderMap,
    body_len: u64,
    now: SystemTime,
) {
    let rule = policy::request_rule(method, req);
    if *method != Method::GET && *method != Method::HEAD {
        assert!(matches!(rule, RequestRule::Bypass(_)), "{method} looked up");
    }
    let cc = policy::CacheControl::parse(res);
    check_clamped(&cc);
    let requested_at = now.checked_sub(Duration::from_millis(5)).unwrap_or(now);
    let meta = match policy::storability(mode, req, status, res, requested_at, now) {
        Storability::Pass(reason) => {
            assert!(!reason.is_empty());
            return;
        }
        Storability::Store(meta) => meta,
    };
    check_storable(mode, status, &cc, res, &meta, now);
    let stored = check_codec(&meta, body_len);
    if let policy::RequestRule::Lookup { directives, .. } = &rule {
        for dt in [0, 1, 59, 3_600, 86_400 * 400] {
            let at = now + Duration::from_secs(dt);
            let _ = policy::verdict(mode, directives, &stored, at);
            let _ = policy::stale_if_error(mode, directives, &stored, at);
            let _ = policy::ttl_seconds(&stored, at);
        }
    }
    let _ = policy::client_not_modified(req, &stored);
    let _ = policy::not_modified_selects(&stored, res);
    let merged = policy::merge_not_modified(mode, req, &stored, res, requested_at, now);
    assert_eq!(
        merged.content_length, stored.content_length,
        "304 changed the length"
    );
    check_range(req, &stored, body_len);
    check_vary(req, res);
}

/// Delta-seconds are clamped to what RFC 9111 §1.2.2 lets a cache hold.
fn check_clamped(cc: &policy::CacheControl) {
    for v in [
        cc.max_age,
        cc.s_maxage,
        cc.stale_while_revalidate,
        cc.stale_if_error,
    ] {
        assert!(
            v.unwrap_or(0) <= i32::MAX as u64,
            "delta-seconds not clamped"
        );
    }
}

/// What is stored is storable: never a 206, 304, `no-store`, a shared `private`, `Vary: *`, or
/// a hop-by-hop field.
fn check_storable(
    mode: &PolicyMode,
    status: StatusCode,
    cc: &policy::CacheControl,
    res: &HeaderMap,
    meta: &crate::Metadata,
    now: SystemTime,
) {
    assert!(
        status != StatusCode::PARTIAL_CONTENT && status != StatusCode::NOT_MODIFIED,
        "{status} stored"
    );
    if !cc.must_understand {
        assert!(!cc.no_store, "no-store response stored");
    }
    if !matches!(mode, PolicyMode::Private) {
        assert!(!cc.private, "private response stored by a shared cache");
    }
    assert!(vary::parse(res) != vary::Vary::Star, "Vary: * stored");
    for name in [
        "connection",
        "transfer-encoding",
        "keep-alive",
        "age",
        "upgrade",
    ] {
        assert!(!meta.headers.contains_key(name), "{name} kept");
    }
    assert!(meta.stored_at <= now, "stored in the future");
    assert!(meta.fresh_until.is_some_and(|u| u >= meta.stored_at));
}

/// The stored form survives the codec unchanged; returns it.
fn check_codec(meta: &crate::Metadata, body_len: u64) -> crate::Metadata {
    let mut stored = meta.clone();
    stored.content_length = Some(body_len);
    let buf = codec::encode("http://fuzz/k", &stored);
    let (key, back) = codec::decode(&buf).expect("encoded metadata decodes");
    assert_eq!(key, "http://fuzz/k");
    assert_eq!(back.status, stored.status);
    assert_eq!(back.headers, stored.headers);
    assert_eq!(back.etag, stored.etag);
    assert_eq!(back.content_length, Some(body_len));
    stored
}

/// A range answer stays within the body.
fn check_range(req: &HeaderMap, stored: &crate::Metadata, body_len: u64) {
    match range::evaluate(req, stored, Some(body_len)) {
        range::RangeAnswer::Full => {}
        range::RangeAnswer::Partial { start, end, len } => {
            assert_eq!(len, body_len);
            assert!(start <= end && end < len, "range {start}-{end}/{len}");
        }
        range::RangeAnswer::Unsatisfiable { len } => assert_eq!(len, body_len),
    }
}

/// A `Vary` marker reads back, and variant keys are deterministic.
fn check_vary(req: &HeaderMap, res: &HeaderMap) {
    if let vary::Vary::Fields(names) = vary::parse(res) {
        let marker = vary::marker(&names);
        let (nonce, back) = vary::read_marker(&marker).expect("a marker reads back");
        // A field name that is not a valid header value cannot be recorded in the marker.
        if header::HeaderValue::from_str(&names.join(", ")).is_ok() {
            assert_eq!(back, names, "marker lost a field");
        }
        let a = vary::variant_key("http://fuzz/k", &nonce, &names, req);
        let b = vary::variant_key("http://fuzz/k", &nonce, &names, req);
        assert_eq!(a, b, "variant key not deterministic");
    }
}
