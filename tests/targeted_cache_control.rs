//! Targeted cache control (RFC 9213) through the layer, over real TCP: a hyper client, the
//! `CacheLayer` configured with a target list, and an axum origin that counts its calls.
//! `docs/conformance.md` maps each test to its rule.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use common::{client, send, serve, Got, TestClient};
use daramjwee::http::{CacheLayer, CacheLayerBuilder, PolicyMode};
use daramjwee::Cache;

const BODY: &str = "targeted body";
const TARGETS: [&str; 2] = ["daramjwee-cache-control", "cdn-cache-control"];

type Headers = &'static [(&'static str, &'static str)];

/// A layer over an origin that always answers 200 `BODY` with `headers`.
struct Site {
    addr: std::net::SocketAddr,
    c: TestClient,
    calls: Arc<AtomicUsize>,
}

impl Site {
    async fn new(
        configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder,
        headers: Headers,
    ) -> Site {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let origin = move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut res = Response::new(Body::from(BODY));
                for (k, v) in headers {
                    res.headers_mut().append(*k, v.parse().unwrap());
                }
                res
            }
        };
        let layer = configure(CacheLayer::builder(Cache::builder().build())).build();
        let app = Router::new().fallback(origin).layer(layer);
        Site {
            addr: serve(app).await,
            c: client(),
            calls,
        }
    }

    /// A shared cache with the daramjwee field first, then CDN-Cache-Control.
    async fn targeted(headers: Headers) -> Site {
        Site::new(|b| b.targeted_cache_control(TARGETS), headers).await
    }

    async fn get(&self) -> Got {
        self.get_with(&[]).await
    }

    async fn get_with(&self, headers: &[(&str, &str)]) -> Got {
        let got = send(&self.c, self.addr, "GET", "/r", headers).await;
        assert_eq!(got.body(), BODY);
        got
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Two GETs: whether the second was a hit, checked against the origin's call count.
    async fn second_is_hit(&self) -> bool {
        self.get().await;
        let second = self.get().await;
        let hit = second.cache_status().starts_with("daramjwee; hit");
        assert_eq!(
            self.calls(),
            if hit { 1 } else { 2 },
            "{}",
            second.cache_status()
        );
        hit
    }
}

// RFC 9213 §2.1: a targeted field decides storability and freshness; Cache-Control is
// ignored for those decisions but still sent to the client.
#[tokio::test]
async fn targeted_field_overrides_cache_control() {
    let s = Site::targeted(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=60"),
    ])
    .await;
    assert!(s.second_is_hit().await);
    let g = s.get().await;
    assert_eq!(g.header("cache-control"), "no-store");
    assert_eq!(g.header("cdn-cache-control"), "max-age=60");
}

// RFC 9213 §2.1: the first field of the target list that is present wins.
#[tokio::test]
async fn first_field_of_the_target_list_wins() {
    let s = Site::targeted(&[
        ("cdn-cache-control", "no-store"),
        ("daramjwee-cache-control", "max-age=60"),
    ])
    .await;
    assert!(s.second_is_hit().await);
    let s = Site::targeted(&[
        ("cdn-cache-control", "max-age=60"),
        ("daramjwee-cache-control", "no-store"),
    ])
    .await;
    assert!(!s.second_is_hit().await);
}

// RFC 9213 §2.1: no targeted field: Cache-Control applies as usual.
#[tokio::test]
async fn absent_targeted_field_falls_back_to_cache_control() {
    let s = Site::targeted(&[("cache-control", "max-age=60")]).await;
    assert!(s.second_is_hit().await);
    let s = Site::targeted(&[("cache-control", "no-store")]).await;
    assert!(!s.second_is_hit().await);
}

// RFC 9213 §2.2: a field that is not a valid Structured Field Dictionary (uppercase key,
// trailing comma, empty) is ignored: the next listed field, then Cache-Control, applies.
#[tokio::test]
async fn invalid_targeted_field_falls_back_to_the_next_one_then_cache_control() {
    let s = Site::targeted(&[
        ("cache-control", "no-store"),
        ("daramjwee-cache-control", "Max-Age=0"),
        ("cdn-cache-control", "max-age=60"),
    ])
    .await;
    assert!(
        s.second_is_hit().await,
        "the invalid first field is skipped"
    );
    let s = Site::targeted(&[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store,"),
    ])
    .await;
    assert!(s.second_is_hit().await, "Cache-Control applies");
}

// RFC 9213 §2.1 with RFC 9111 §5.2.2.5: no-store in the targeted field wins over
// Cache-Control's freshness and over its own max-age.
#[tokio::test]
async fn no_store_in_the_targeted_field_wins() {
    let s = Site::targeted(&[
        ("cache-control", "public, max-age=600"),
        ("cdn-cache-control", "max-age=60, no-store"),
    ])
    .await;
    assert!(!s.second_is_hit().await);
    let g = s.get().await;
    assert!(
        g.cache_status().contains("detail=no-store"),
        "{}",
        g.cache_status()
    );
}

// RFC 9213 §2.1: the targeted field's lifetime counts, not Cache-Control's or Expires'.
#[tokio::test]
async fn targeted_lifetime_replaces_cache_control_and_expires() {
    let s = Site::targeted(&[
        ("cache-control", "max-age=3600"),
        ("cdn-cache-control", "max-age=60"),
        ("age", "120"),
    ])
    .await;
    assert!(!s.second_is_hit().await, "stale by the targeted max-age");
    // Without max-age in the targeted field, Expires is ignored too: no freshness at all.
    let s = Site::targeted(&[
        ("expires", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ("cdn-cache-control", "public"),
    ])
    .await;
    assert!(!s.second_is_hit().await);
}

// RFC 9213 §2.1 with RFC 9111 §5.2.2.2: a stored entry is judged by its targeted field on
// every use: must-revalidate there beats the client's max-stale.
#[tokio::test]
async fn targeted_must_revalidate_beats_max_stale() {
    let s = Site::targeted(&[
        ("cdn-cache-control", "max-age=1, must-revalidate"),
        ("age", "100"),
    ])
    .await;
    s.get().await;
    s.get_with(&[("cache-control", "max-stale")]).await;
    assert_eq!(s.calls(), 2, "validated, not served stale");
    // The same entry without must-revalidate in the targeted field is served stale, even
    // though Cache-Control says must-revalidate: it is ignored.
    let s = Site::targeted(&[
        ("cache-control", "must-revalidate"),
        ("cdn-cache-control", "max-age=1"),
        ("age", "100"),
    ])
    .await;
    s.get().await;
    let g = s.get_with(&[("cache-control", "max-stale")]).await;
    assert_eq!(s.calls(), 1, "{}", g.cache_status());
}

// strip_targeted_fields(true): the listed fields never reach the client (miss or hit);
// Cache-Control and unlisted targeted fields do. Off by default.
#[tokio::test]
async fn listed_fields_are_stripped_when_asked() {
    const H: Headers = &[
        ("cache-control", "max-age=5"),
        ("cdn-cache-control", "max-age=60"),
        ("daramjwee-cache-control", "max-age=60"),
        ("other-cdn-cache-control", "max-age=1"),
    ];
    let s = Site::new(
        |b| {
            b.targeted_cache_control(TARGETS)
                .strip_targeted_fields(true)
        },
        H,
    )
    .await;
    for g in [s.get().await, s.get().await] {
        assert!(!g.headers.contains_key("cdn-cache-control"));
        assert!(!g.headers.contains_key("daramjwee-cache-control"));
        assert_eq!(g.header("other-cdn-cache-control"), "max-age=1");
        assert_eq!(g.header("cache-control"), "max-age=5");
    }
    assert_eq!(s.calls(), 1, "stripping does not change what is stored");
    let kept = Site::targeted(H).await;
    assert_eq!(kept.get().await.header("cdn-cache-control"), "max-age=60");
}

// Targeted fields address shared caches: without a target list, and in the private and
// origin-trusting modes, they are ignored and passed through (stripping included).
#[tokio::test]
async fn targeted_fields_are_ignored_outside_a_shared_target_list() {
    const H: Headers = &[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store"),
    ];
    let s = Site::new(|b| b, H).await;
    assert!(s.second_is_hit().await, "no target list by default");
    for mode in [
        PolicyMode::Private,
        PolicyMode::OriginTrusting {
            ttl: std::time::Duration::from_secs(60),
            negative_ttl: std::time::Duration::from_secs(5),
        },
    ] {
        let s = Site::new(
            |b| {
                b.policy(mode)
                    .targeted_cache_control(TARGETS)
                    .strip_targeted_fields(true)
            },
            H,
        )
        .await;
        assert!(s.second_is_hit().await);
        assert_eq!(s.get().await.header("cdn-cache-control"), "no-store");
    }
}

// A response the targeted field keeps out of the cache is stripped too: stripping applies to
// every response the layer answers, stored or passed.
#[tokio::test]
async fn passed_responses_are_stripped_too() {
    const H: Headers = &[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store"),
    ];
    let s = Site::new(
        |b| {
            b.targeted_cache_control(TARGETS)
                .strip_targeted_fields(true)
        },
        H,
    )
    .await;
    assert!(!s.second_is_hit().await);
    let g = s.get().await;
    assert!(
        g.cache_status().contains("detail=no-store"),
        "{}",
        g.cache_status()
    );
    assert!(!g.headers.contains_key("cdn-cache-control"));
}

// Field names are case-insensitive; a name that cannot be a field name is dropped (it could
// never match) without failing the configuration.
#[tokio::test]
async fn target_list_names_are_normalised_and_invalid_ones_dropped() {
    const H: Headers = &[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=60"),
    ];
    let s = Site::new(
        |b| b.targeted_cache_control(["not a name", "", " CDN-Cache-Control "]),
        H,
    )
    .await;
    assert!(s.second_is_hit().await);
}
