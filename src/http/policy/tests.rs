//! Unit tests of the policy rules, run on headers alone (no I/O).

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
    // Kept with room for what a hit adds (`answer::with_room` clones it then).
    assert!(kept.capacity() >= kept.keys_len() + crate::entry::HEADER_ROOM);
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
        let mut m = Metadata::new(StatusCode::OK).with_headers(headers(&[("cache-control", cc)]));
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
