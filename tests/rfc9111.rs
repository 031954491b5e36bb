//! HTTP caching conformance (RFC 9111, RFC 5861, RFC 9110 §13-14) over real TCP: a hyper
//! client, the `CacheLayer`, and a scripted axum origin. One test per rule, named after the
//! rule it pins, with the RFC section in a comment; `docs/conformance.md` maps them.
//!
//! Staleness is produced without sleeping: the origin sends `Age` (or an old `Date`), so an
//! entry is stale the moment it is stored.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use common::{client, send, serve, Got, TestClient};
use daramjwee::http::{CacheHandle, CacheLayer, PolicyMode};
use daramjwee::Cache;
use parking_lot::Mutex;

/// One request as the origin saw it.
#[derive(Clone)]
struct Seen {
    method: Method,
    headers: HeaderMap,
    /// How many requests for this path came before it.
    n: usize,
}

type Handler = Arc<dyn Fn(&Seen) -> Response + Send + Sync>;

#[derive(Default)]
struct Origin {
    routes: Mutex<HashMap<String, (Handler, Duration)>>,
    seen: Mutex<HashMap<String, Vec<Seen>>>,
}

async fn handle(
    State(o): State<Arc<Origin>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let Some((h, delay)) = o.routes.lock().get(&path).cloned() else {
        return resp(404, &[], "no route");
    };
    let seen = {
        let mut all = o.seen.lock();
        let v = all.entry(path).or_default();
        let seen = Seen {
            method,
            headers,
            n: v.len(),
        };
        v.push(seen.clone());
        seen
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    h(&seen)
}

fn resp(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.into()).unwrap()
}

struct H {
    addr: std::net::SocketAddr,
    origin: Arc<Origin>,
    cache: Cache,
    handle: CacheHandle,
    c: TestClient,
}

impl H {
    async fn new(mode: PolicyMode) -> H {
        H::with_cache(mode, Cache::builder().build()).await
    }

    async fn with_cache(mode: PolicyMode, cache: Cache) -> H {
        H::with_layer(mode, cache, false).await
    }

    async fn with_layer(mode: PolicyMode, cache: Cache, share_set_cookie: bool) -> H {
        let origin = Arc::new(Origin::default());
        let layer = CacheLayer::builder(cache.clone())
            .policy(mode)
            .share_set_cookie(share_set_cookie)
            .build();
        let control = layer.handle();
        let app = Router::new()
            .fallback(handle)
            .with_state(origin.clone())
            .layer(layer);
        let addr = serve(app).await;
        H {
            addr,
            origin,
            cache,
            handle: control,
            c: client(),
        }
    }

    async fn shared() -> H {
        H::new(PolicyMode::Shared).await
    }

    fn route(&self, path: &str, f: impl Fn(&Seen) -> Response + Send + Sync + 'static) {
        self.route_slow(path, Duration::ZERO, f);
    }

    fn route_slow(
        &self,
        path: &str,
        delay: Duration,
        f: impl Fn(&Seen) -> Response + Send + Sync + 'static,
    ) {
        self.origin
            .routes
            .lock()
            .insert(path.to_owned(), (Arc::new(f), delay));
    }

    /// A route that always answers the same 200.
    fn fixed(
        &self,
        path: &str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
    ) {
        self.route(path, move |s| {
            let _ = s;
            resp(200, headers, body)
        });
    }

    fn calls(&self, path: &str) -> usize {
        self.origin.seen.lock().get(path).map_or(0, Vec::len)
    }

    fn seen(&self, path: &str, i: usize) -> Seen {
        self.origin.seen.lock()[path][i].clone()
    }

    async fn get(&self, path: &str) -> Got {
        send(&self.c, self.addr, "GET", path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        send(&self.c, self.addr, "GET", path, headers).await
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        send(&self.c, self.addr, method, path, headers).await
    }

    /// Waits (bounded, polling) until the origin has seen `n` requests for `path`.
    async fn wait_calls(&self, path: &str, n: usize) -> usize {
        for _ in 0..200 {
            if self.calls(path) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.calls(path)
    }

    /// Waits (bounded, polling) until the hot tier holds `path`'s entry.
    async fn stored_eventually(&self, path: &str) -> bool {
        let key = self.key(path);
        let Some(store) = self.cache.tier_store(0) else {
            return false;
        };
        for _ in 0..200 {
            if matches!(store.head(&key).await, Ok(Some(_))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    fn key(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A 200 whose body (`chunks` x 1000 bytes of b'a'+i) trickles out, so a fill is still
/// streaming when a client that needs only part of it has gone.
fn trickle(headers: &'static [(&'static str, &'static str)], chunks: u8) -> Response {
    let stream = futures_util::stream::unfold(0u8, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a' + i; 1000])),
            i + 1,
        ))
    });
    let mut r = resp(200, headers, Body::from_stream(stream));
    r.headers_mut().insert(
        "content-length",
        (chunks as usize * 1000).to_string().parse().unwrap(),
    );
    r
}

fn is_hit(g: &Got) -> bool {
    g.cache_status().starts_with("daramjwee; hit")
}

fn http_date(ago: Duration) -> String {
    httpdate::fmt_http_date(SystemTime::now() - ago)
}

// ---------------------------------------------------------------------------------------------
// Storability (RFC 9111 §3)
// ---------------------------------------------------------------------------------------------

// RFC 9111 §3, §4: a fresh stored response is reused without contacting the origin.
#[tokio::test]
async fn fresh_response_is_served_from_cache() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "body");
    assert_eq!(h.get("/a").await.body(), "body");
    let again = h.get("/a").await;
    assert_eq!(again.body(), "body");
    assert!(is_hit(&again), "{}", again.cache_status());
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §5.2.2.5: no-store on the response: never stored.
#[tokio::test]
async fn response_no_store_is_not_stored() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "no-store, max-age=60")], "x");
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.2.7: a shared cache never stores a private response.
#[tokio::test]
async fn response_private_is_not_stored_by_shared_cache() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "private, max-age=60")], "x");
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §3.5: a shared cache stores a response to an authorized request only with public,
// s-maxage or must-revalidate.
#[tokio::test]
async fn authorized_request_is_stored_only_when_response_allows_it() {
    let h = H::shared().await;
    h.fixed("/plain", &[("cache-control", "max-age=60")], "x");
    h.fixed("/public", &[("cache-control", "public, max-age=60")], "x");
    h.fixed("/smax", &[("cache-control", "s-maxage=60")], "x");
    h.fixed(
        "/mr",
        &[("cache-control", "max-age=60, must-revalidate")],
        "x",
    );
    let auth = [("authorization", "Bearer t")];
    for p in ["/plain", "/public", "/smax", "/mr"] {
        h.get_with(p, &auth).await;
        h.get_with(p, &auth).await;
    }
    assert_eq!(h.calls("/plain"), 2);
    assert_eq!(h.calls("/public"), 1);
    assert_eq!(h.calls("/smax"), 1);
    assert_eq!(h.calls("/mr"), 1);
}

// RFC 9111 §3: a status that is not heuristically cacheable, without explicit freshness, is
// not stored.
#[tokio::test]
async fn non_heuristic_status_without_freshness_is_not_stored() {
    let h = H::shared().await;
    h.route("/a", |_| resp(500, &[], "boom"));
    h.route("/b", |_| resp(302, &[("location", "/x")], ""));
    for p in ["/a", "/b"] {
        h.get(p).await;
        h.get(p).await;
        assert_eq!(h.calls(p), 2, "{p}");
    }
}

// RFC 9111 §3, RFC 9110 §15.1: heuristically cacheable statuses (404, 410, 301, ...) with
// explicit freshness are stored and replayed with their status.
#[tokio::test]
async fn heuristically_cacheable_statuses_are_stored_and_replayed() {
    let h = H::shared().await;
    h.route("/gone", |_| {
        resp(410, &[("cache-control", "max-age=60")], "gone")
    });
    h.route("/nf", |_| {
        resp(404, &[("cache-control", "max-age=60")], "nf")
    });
    h.route("/moved", |_| {
        resp(
            301,
            &[("cache-control", "max-age=60"), ("location", "/x")],
            "",
        )
    });
    for (p, st) in [("/gone", 410), ("/nf", 404), ("/moved", 301)] {
        h.get(p).await;
        let again = h.get(p).await;
        assert_eq!(again.status.as_u16(), st);
        assert!(is_hit(&again), "{p}: {}", again.cache_status());
        assert_eq!(h.calls(p), 1);
    }
    assert_eq!(h.get("/moved").await.header("location"), "/x");
}

// RFC 9111 §3.3, §3.4: a 206 from the origin is never stored as the full response.
#[tokio::test]
async fn partial_content_from_origin_is_not_stored() {
    let h = H::shared().await;
    h.route("/p", |_| {
        resp(
            206,
            &[
                ("cache-control", "max-age=60"),
                ("content-range", "bytes 0-1/10"),
            ],
            "ab",
        )
    });
    let first = h.get("/p").await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    let second = h.get("/p").await;
    assert_eq!(second.status, StatusCode::PARTIAL_CONTENT);
    assert!(!is_hit(&second));
    assert_eq!(h.calls("/p"), 2);
}

// RFC 9111 §5.2.2.3: must-understand with a status we implement overrides no-store.
#[tokio::test]
async fn must_understand_overrides_no_store_for_an_understood_status() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "must-understand, no-store, max-age=60")],
        "x",
    );
    h.get("/a").await;
    assert!(is_hit(&h.get("/a").await));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §4.2.1, §1.2: Cache-Control parsing tolerates case, spaces, quotes, duplicates and
// unknown directives.
#[tokio::test]
async fn cache_control_parsing_is_tolerant() {
    let h = H::shared().await;
    h.route("/a", |_| {
        let mut r = resp(200, &[], "x");
        r.headers_mut().append(
            "cache-control",
            " MAX-AGE=\"60\" , x-ext=\"a,b\"".parse().unwrap(),
        );
        r.headers_mut()
            .append("cache-control", "max-age=0, unknown".parse().unwrap());
        r
    });
    h.get("/a").await;
    assert!(is_hit(&h.get("/a").await));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §5.3: Expires gives freshness when max-age is absent.
#[tokio::test]
async fn expires_gives_freshness() {
    let h = H::shared().await;
    let exp = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    h.route("/a", move |_| resp(200, &[("expires", exp.as_str())], "x"));
    h.get("/a").await;
    assert!(is_hit(&h.get("/a").await));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §5.3: an invalid Expires (e.g. "0") means already expired.
#[tokio::test]
async fn invalid_expires_means_stale() {
    let h = H::shared().await;
    h.fixed("/a", &[("expires", "0")], "x");
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.2.1: max-age wins over Expires.
#[tokio::test]
async fn max_age_overrides_expires() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=60"), ("expires", "0")],
        "x",
    );
    h.get("/a").await;
    assert!(is_hit(&h.get("/a").await));
}

// RFC 9111 §5.2.2.10: in a shared cache s-maxage overrides max-age.
#[tokio::test]
async fn s_maxage_overrides_max_age_in_shared_cache() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=0, s-maxage=60")], "x");
    h.get("/a").await;
    assert!(is_hit(&h.get("/a").await));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §4.2.2: heuristic freshness from Last-Modified for a heuristically cacheable status.
#[tokio::test]
async fn heuristic_freshness_from_last_modified() {
    let h = H::shared().await;
    let lm = http_date(Duration::from_secs(10 * 86_400));
    h.route("/a", move |_| {
        resp(200, &[("last-modified", lm.as_str())], "x")
    });
    h.get("/a").await;
    let again = h.get("/a").await;
    assert!(is_hit(&again), "{}", again.cache_status());
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §4.2.2: no explicit freshness and no Last-Modified: nothing to reuse without
// validation.
#[tokio::test]
async fn no_freshness_information_means_no_reuse_without_validation() {
    let h = H::shared().await;
    h.fixed("/a", &[], "x");
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// ---------------------------------------------------------------------------------------------
// Age (RFC 9111 §4.2.3, §5.1)
// ---------------------------------------------------------------------------------------------

// RFC 9111 §5.1: every response served from the cache carries Age, including the origin's
// Age carried forward.
#[tokio::test]
async fn age_header_is_sent_on_cached_responses_and_includes_upstream_age() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=600"), ("age", "30")],
        "x",
    );
    let first = h.get("/a").await;
    let hit = h.get("/a").await;
    assert!(is_hit(&hit));
    for g in [&first, &hit] {
        let age: u64 = g.header("age").parse().expect("an Age header");
        assert!((30..40).contains(&age), "age {age}");
    }
}

// RFC 9111 §4.2.3: the origin's Age counts against freshness.
#[tokio::test]
async fn upstream_age_reduces_freshness() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=60"), ("age", "100")],
        "x",
    );
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §4.2.3: apparent age from an old Date counts against freshness.
#[tokio::test]
async fn old_date_reduces_freshness() {
    let h = H::shared().await;
    let date = http_date(Duration::from_secs(120));
    h.route("/a", move |_| {
        resp(
            200,
            &[("cache-control", "max-age=60"), ("date", date.as_str())],
            "x",
        )
    });
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// ---------------------------------------------------------------------------------------------
// Request directives (RFC 9111 §5.2.1)
// ---------------------------------------------------------------------------------------------

/// A 200 with max-age=100 that is already 50 s old; 304 to a matching If-None-Match.
fn aged_route(h: &H, path: &str, cc: &'static str, age: &'static str) {
    h.route(path, move |s| {
        if s.headers.get("if-none-match").is_some_and(|v| v == "\"v\"") {
            return resp(304, &[("cache-control", cc), ("etag", "\"v\"")], "");
        }
        resp(
            200,
            &[("cache-control", cc), ("etag", "\"v\""), ("age", age)],
            "body",
        )
    });
}

// RFC 9111 §5.2.1.1: request max-age: an older stored response is validated first.
#[tokio::test]
async fn request_max_age_older_than_entry_forces_validation() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=100", "50");
    h.get("/a").await;
    let g = h.get_with("/a", &[("cache-control", "max-age=10")]).await;
    assert_eq!(g.body(), "body");
    assert_eq!(h.calls("/a"), 2);
    assert_eq!(h.seen("/a", 1).headers["if-none-match"], "\"v\"");
}

// RFC 9111 §5.2.1.1: request max-age at least the entry's age: served from cache.
#[tokio::test]
async fn request_max_age_covering_entry_is_served() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=100", "50");
    h.get("/a").await;
    let g = h.get_with("/a", &[("cache-control", "max-age=90")]).await;
    assert!(is_hit(&g));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §5.2.1.2: max-stale lets the client take a stale response within its bound.
#[tokio::test]
async fn request_max_stale_serves_stale_entry_within_bound() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=10", "50");
    h.get("/a").await;
    let g = h
        .get_with("/a", &[("cache-control", "max-stale=100")])
        .await;
    assert_eq!(g.body(), "body");
    assert!(is_hit(&g), "{}", g.cache_status());
    let any = h.get_with("/a", &[("cache-control", "max-stale")]).await;
    assert!(is_hit(&any), "{}", any.cache_status());
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §5.2.1.2: a response staler than max-stale is validated.
#[tokio::test]
async fn request_max_stale_exceeded_forces_validation() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=10", "50");
    h.get("/a").await;
    h.get_with("/a", &[("cache-control", "max-stale=5")]).await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.1.3: min-fresh: a response with less freshness left is validated.
#[tokio::test]
async fn request_min_fresh_not_met_forces_validation() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=100", "50");
    h.get("/a").await;
    h.get_with("/a", &[("cache-control", "min-fresh=60")]).await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.1.3: min-fresh met: served from cache.
#[tokio::test]
async fn request_min_fresh_met_is_served() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=100", "50");
    h.get("/a").await;
    let g = h.get_with("/a", &[("cache-control", "min-fresh=20")]).await;
    assert!(is_hit(&g));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §5.2.1.4: request no-cache: a fresh entry is validated before use.
#[tokio::test]
async fn request_no_cache_forces_validation_of_fresh_entry() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=100", "0");
    h.get("/a").await;
    let g = h.get_with("/a", &[("cache-control", "no-cache")]).await;
    assert_eq!(g.body(), "body");
    assert!(
        g.cache_status().contains("fwd-status=304"),
        "{}",
        g.cache_status()
    );
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.4: Pragma: no-cache without Cache-Control acts as no-cache.
#[tokio::test]
async fn request_pragma_no_cache_forces_validation() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=100", "0");
    h.get("/a").await;
    h.get_with("/a", &[("pragma", "no-cache")]).await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.1.5: request no-store: not served from and not stored in the cache.
#[tokio::test]
async fn request_no_store_bypasses_cache() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "x");
    h.get_with("/a", &[("cache-control", "no-store")]).await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.1.7: only-if-cached with a fresh entry: served.
#[tokio::test]
async fn only_if_cached_serves_a_stored_response() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "x");
    h.get("/a").await;
    let g = h
        .get_with("/a", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body(), "x");
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §5.2.1.7: only-if-cached with nothing stored: 504, origin not contacted.
#[tokio::test]
async fn only_if_cached_miss_is_504() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "x");
    let g = h
        .get_with("/a", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(g.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(h.calls("/a"), 0);
}

// RFC 9111 §5.2.1.7: only-if-cached with only a stale entry (that would need validation): 504.
#[tokio::test]
async fn only_if_cached_with_stale_entry_is_504() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=10", "50");
    h.get("/a").await;
    let g = h
        .get_with("/a", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(g.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(h.calls("/a"), 1);
}

// ---------------------------------------------------------------------------------------------
// Validation (RFC 9111 §4.3, §5.2.2)
// ---------------------------------------------------------------------------------------------

// RFC 9111 §4.3.1, §4.3.3: a stale entry is validated with If-None-Match; a 304 reuses the
// stored body.
#[tokio::test]
async fn stale_entry_is_validated_with_if_none_match_and_304_reuses_body() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=10", "50");
    h.get("/a").await;
    let g = h.get("/a").await;
    assert_eq!(g.body(), "body");
    assert!(
        g.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        g.cache_status()
    );
    assert_eq!(h.seen("/a", 1).headers["if-none-match"], "\"v\"");
}

// RFC 9111 §4.3.1: without an entity tag, validation uses If-Modified-Since.
#[tokio::test]
async fn stale_entry_is_validated_with_if_modified_since() {
    let h = H::shared().await;
    let lm = http_date(Duration::from_secs(3600));
    h.route("/a", move |s| {
        if s.headers.contains_key("if-modified-since") {
            return resp(304, &[("cache-control", "max-age=0")], "");
        }
        resp(
            200,
            &[
                ("cache-control", "max-age=0"),
                ("last-modified", lm.as_str()),
            ],
            "body",
        )
    });
    h.get("/a").await;
    let g = h.get("/a").await;
    assert_eq!(g.body(), "body");
    assert!(
        g.cache_status().contains("fwd-status=304"),
        "{}",
        g.cache_status()
    );
    assert!(!h.seen("/a", 1).headers.contains_key("if-none-match"));
}

// RFC 9111 §3.2, §4.3.4: a 304 updates the stored headers (and freshness) of the entry.
#[tokio::test]
async fn not_modified_updates_stored_headers_and_freshness() {
    let h = H::shared().await;
    h.route("/a", |s| {
        if s.headers.contains_key("if-none-match") {
            return resp(
                304,
                &[
                    ("cache-control", "max-age=600"),
                    ("etag", "\"v\""),
                    ("x-v", "2"),
                ],
                "",
            );
        }
        resp(
            200,
            &[
                ("cache-control", "max-age=0"),
                ("etag", "\"v\""),
                ("x-v", "1"),
            ],
            "body",
        )
    });
    assert_eq!(h.get("/a").await.header("x-v"), "1");
    let validated = h.get("/a").await;
    assert_eq!(validated.header("x-v"), "2");
    assert_eq!(validated.body(), "body");
    let hit = h.get("/a").await;
    assert!(is_hit(&hit), "{}", hit.cache_status());
    assert_eq!(hit.header("x-v"), "2");
    assert_eq!(hit.header("content-length"), "4");
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §4.3.4: a 304 naming a strong validator the cache does not hold must not update
// the stored entry; the cache fetches the current representation in full.
#[tokio::test]
async fn not_modified_for_another_representation_is_not_used_to_update() {
    let h = H::shared().await;
    h.route("/a", |s| {
        if s.n == 0 {
            return resp(
                200,
                &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
                "old",
            );
        }
        if s.headers.contains_key("if-none-match") {
            return resp(
                304,
                &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
                "",
            );
        }
        resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
            "new",
        )
    });
    h.get("/a").await;
    let g = h.get("/a").await;
    assert_eq!(g.body(), "new");
    assert_eq!(g.header("etag"), "\"v2\"");
    assert!(!h.seen("/a", 2).headers.contains_key("if-none-match"));
    let hit = h.get("/a").await;
    assert!(is_hit(&hit));
    assert_eq!(hit.body(), "new");
    assert_eq!(h.calls("/a"), 3);
}

// RFC 9111 §5.2.2.4: response no-cache: every reuse is validated first.
#[tokio::test]
async fn response_no_cache_forces_validation_on_every_use() {
    let h = H::shared().await;
    aged_route(&h, "/a", "no-cache, max-age=600", "0");
    for _ in 0..3 {
        assert_eq!(h.get("/a").await.body(), "body");
    }
    assert_eq!(h.calls("/a"), 3);
    assert_eq!(h.seen("/a", 2).headers["if-none-match"], "\"v\"");
}

// RFC 9111 §5.2.2.2: must-revalidate: a stale entry is not served even if the client accepts
// stale responses.
#[tokio::test]
async fn must_revalidate_stale_entry_is_not_served_under_max_stale() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=10, must-revalidate", "50");
    h.get("/a").await;
    h.get_with("/a", &[("cache-control", "max-stale=1000")])
        .await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.2.8: proxy-revalidate binds a shared cache like must-revalidate.
#[tokio::test]
async fn proxy_revalidate_stale_entry_is_not_served_by_shared_cache() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=10, proxy-revalidate", "50");
    h.get("/a").await;
    h.get_with("/a", &[("cache-control", "max-stale=1000")])
        .await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.2.10: s-maxage implies proxy-revalidate in a shared cache.
#[tokio::test]
async fn s_maxage_implies_proxy_revalidate() {
    let h = H::shared().await;
    aged_route(&h, "/a", "s-maxage=10", "50");
    h.get("/a").await;
    h.get_with("/a", &[("cache-control", "max-stale=1000")])
        .await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §4.3.2, RFC 9110 §13.1.2: a client's If-None-Match list is compared weakly and
// answered 304 from the cache.
#[tokio::test]
async fn client_if_none_match_list_is_answered_304_from_cache() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
        "x",
    );
    h.get("/a").await;
    let g = h
        .get_with("/a", &[("if-none-match", "\"v1\", W/\"v2\"")])
        .await;
    assert_eq!(g.status, StatusCode::NOT_MODIFIED);
    assert!(g.body().is_empty());
    assert_eq!(g.header("etag"), "\"v2\"");
    assert!(g.headers.contains_key("age"));
    let star = h.get_with("/a", &[("if-none-match", "*")]).await;
    assert_eq!(star.status, StatusCode::NOT_MODIFIED);
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9110 §13.1.2: a non-matching If-None-Match gets the full stored response.
#[tokio::test]
async fn client_if_none_match_mismatch_gets_full_response() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
        "x",
    );
    h.get("/a").await;
    let g = h.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body(), "x");
}

// RFC 9111 §4.3.2, RFC 9110 §13.1.3: If-Modified-Since answered 304 from the cache.
#[tokio::test]
async fn client_if_modified_since_is_answered_304_from_cache() {
    let h = H::shared().await;
    let lm = http_date(Duration::from_secs(3600));
    h.route("/a", move |_| {
        resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("last-modified", lm.as_str()),
            ],
            "x",
        )
    });
    h.get("/a").await;
    let since = http_date(Duration::from_secs(60));
    let g = h
        .get_with("/a", &[("if-modified-since", since.as_str())])
        .await;
    assert_eq!(g.status, StatusCode::NOT_MODIFIED);
    let before = http_date(Duration::from_secs(7200));
    let g = h
        .get_with("/a", &[("if-modified-since", before.as_str())])
        .await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
#[tokio::test]
async fn if_modified_since_is_ignored_with_if_none_match() {
    let h = H::shared().await;
    let lm = http_date(Duration::from_secs(3600));
    h.route("/a", move |_| {
        resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("last-modified", lm.as_str()),
                ("etag", "\"v\""),
            ],
            "x",
        )
    });
    h.get("/a").await;
    let since = http_date(Duration::ZERO);
    let g = h
        .get_with(
            "/a",
            &[
                ("if-none-match", "\"other\""),
                ("if-modified-since", since.as_str()),
            ],
        )
        .await;
    assert_eq!(g.status, StatusCode::OK);
}

// RFC 9111 §4.3.2: If-Match and If-Unmodified-Since are not evaluated by a cache: such a
// request goes to the origin even when a fresh entry is stored.
#[tokio::test]
async fn if_match_and_if_unmodified_since_are_left_to_the_origin() {
    let h = H::shared().await;
    h.route("/a", |s| {
        if s.headers.contains_key("if-match") || s.headers.contains_key("if-unmodified-since") {
            return resp(412, &[], "");
        }
        resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"v\"")],
            "x",
        )
    });
    h.get("/a").await;
    let g = h.get_with("/a", &[("if-match", "\"other\"")]).await;
    assert_eq!(g.status, StatusCode::PRECONDITION_FAILED);
    let since = http_date(Duration::from_secs(3600));
    let g = h
        .get_with("/a", &[("if-unmodified-since", since.as_str())])
        .await;
    assert_eq!(g.status, StatusCode::PRECONDITION_FAILED);
    assert!(is_hit(&h.get("/a").await));
    assert_eq!(h.calls("/a"), 3);
}

// RFC 9111 §4.3.2: a client's conditional on a miss: the cache fetches the full response
// (without the client's validators), stores it, and answers the client 304.
#[tokio::test]
async fn client_conditional_on_miss_fills_the_cache_and_answers_304() {
    let h = H::shared().await;
    h.route("/a", |_| {
        trickle(&[("cache-control", "max-age=60"), ("etag", "\"v\"")], 5)
    });
    let g = h.get_with("/a", &[("if-none-match", "\"v\"")]).await;
    assert_eq!(g.status, StatusCode::NOT_MODIFIED);
    assert!(!h.seen("/a", 0).headers.contains_key("if-none-match"));
    // Nothing else asks for the URL meanwhile: the fill must finish on its own.
    assert!(h.stored_eventually("/a").await, "the fill was abandoned");
    let full = h.get("/a").await;
    assert!(is_hit(&full), "{}", full.cache_status());
    assert_eq!(full.body().len(), 5000);
    assert_eq!(h.calls("/a"), 1);
}

// ---------------------------------------------------------------------------------------------
// RFC 5861: stale-while-revalidate, stale-if-error
// ---------------------------------------------------------------------------------------------

// RFC 5861 §3: within stale-while-revalidate, the stale entry is served at once and
// refreshed in the background.
#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_background() {
    let h = H::shared().await;
    h.route("/a", |s| {
        resp(
            200,
            &[
                ("cache-control", "max-age=1, stale-while-revalidate=100"),
                ("age", "10"),
            ],
            format!("v{}", s.n),
        )
    });
    assert_eq!(h.get("/a").await.body(), "v0");
    let stale = h.get("/a").await;
    assert_eq!(stale.body(), "v0");
    assert!(is_hit(&stale), "{}", stale.cache_status());
    assert_eq!(h.wait_calls("/a", 2).await, 2);
    let mut next = h.get("/a").await;
    for _ in 0..50 {
        if next.body() == "v1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        next = h.get("/a").await;
    }
    assert_eq!(next.body(), "v1");
}

// RFC 5861 §3: past the stale-while-revalidate window, validation is synchronous.
#[tokio::test]
async fn stale_while_revalidate_window_passed_validates_before_serving() {
    let h = H::shared().await;
    h.route("/a", |s| {
        resp(
            200,
            &[
                ("cache-control", "max-age=1, stale-while-revalidate=10"),
                ("age", "500"),
            ],
            format!("v{}", s.n),
        )
    });
    h.get("/a").await;
    assert_eq!(h.get("/a").await.body(), "v1");
}

// RFC 5861 §4: stale-if-error: a failed validation (500, 502, 503, 504) is answered with the
// stale entry, and Cache-Status says so.
#[tokio::test]
async fn stale_if_error_serves_stale_entry_when_origin_answers_5xx() {
    let h = H::shared().await;
    for code in [500u16, 502, 503, 504] {
        let path = format!("/e{code}");
        h.route(&path, move |s| {
            if s.n == 0 {
                resp(
                    200,
                    &[
                        ("cache-control", "max-age=1, stale-if-error=100"),
                        ("age", "10"),
                    ],
                    "good",
                )
            } else {
                resp(code, &[], "bad")
            }
        });
        h.get(&path).await;
        let g = h.get(&path).await;
        assert_eq!(g.status, StatusCode::OK, "{code}");
        assert_eq!(g.body(), "good");
        let cs = g.cache_status();
        assert!(cs.contains(&format!("fwd-status={code}")), "{cs}");
        assert!(cs.contains("stale-if-error"), "{cs}");
        assert_eq!(h.calls(&path), 2);
    }
}

// RFC 5861 §4: past the stale-if-error window the error goes to the client.
#[tokio::test]
async fn stale_if_error_window_passed_passes_the_error_through() {
    let h = H::shared().await;
    h.route("/a", |s| {
        if s.n == 0 {
            resp(
                200,
                &[
                    ("cache-control", "max-age=1, stale-if-error=10"),
                    ("age", "500"),
                ],
                "good",
            )
        } else {
            resp(503, &[], "bad")
        }
    });
    h.get("/a").await;
    let g = h.get("/a").await;
    assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(g.body(), "bad");
}

// RFC 5861 §4: stale-if-error may also come from the request.
#[tokio::test]
async fn request_stale_if_error_serves_stale_entry() {
    let h = H::shared().await;
    h.route("/a", |s| {
        if s.n == 0 {
            resp(
                200,
                &[("cache-control", "max-age=1"), ("age", "10")],
                "good",
            )
        } else {
            resp(502, &[], "bad")
        }
    });
    h.get("/a").await;
    let g = h
        .get_with("/a", &[("cache-control", "stale-if-error=100")])
        .await;
    assert_eq!(g.body(), "good");
}

// RFC 5861 §4: a 4xx is not an error for stale-if-error (and is not stored over the entry
// here since it has no freshness).
#[tokio::test]
async fn stale_if_error_ignores_client_errors() {
    let h = H::shared().await;
    h.route("/a", |s| {
        if s.n == 0 {
            resp(
                200,
                &[
                    ("cache-control", "max-age=1, stale-if-error=100"),
                    ("age", "10"),
                ],
                "good",
            )
        } else {
            resp(403, &[], "forbidden")
        }
    });
    h.get("/a").await;
    assert_eq!(h.get("/a").await.status, StatusCode::FORBIDDEN);
}

// ---------------------------------------------------------------------------------------------
// Vary (RFC 9111 §4.1)
// ---------------------------------------------------------------------------------------------

/// Answers with the request's Accept-Language, varying on it.
fn language_route(h: &H, path: &str, delay: Duration) {
    h.route_slow(path, delay, |s| {
        let lang = s
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        resp(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            lang,
        )
    });
}

// RFC 9111 §4.1: each variant is stored and served only to requests with matching fields.
#[tokio::test]
async fn vary_stores_each_variant_separately() {
    let h = H::shared().await;
    language_route(&h, "/a", Duration::ZERO);
    for lang in ["en", "fr", "en", "fr"] {
        let g = h.get_with("/a", &[("accept-language", lang)]).await;
        assert_eq!(g.body(), lang);
        assert_eq!(g.header("vary"), "Accept-Language");
        assert!(!g.headers.contains_key("x-daramjwee-vary-marker"));
    }
    let none = h.get("/a").await;
    assert_eq!(none.body(), "none");
    assert!(is_hit(
        &h.get_with("/a", &[("accept-language", "fr")]).await
    ));
    assert!(is_hit(&h.get("/a").await));
    assert_eq!(h.calls("/a"), 3);
}

// RFC 9111 §4.1: field values are normalised (list whitespace, duplicate fields, case where
// the field is case-insensitive) before matching.
#[tokio::test]
async fn vary_matches_normalised_field_values() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
        "x",
    );
    h.get_with("/a", &[("accept-encoding", "gzip, br")]).await;
    let g = h.get_with("/a", &[("accept-encoding", "GZIP,br")]).await;
    assert!(is_hit(&g), "{}", g.cache_status());
    let g = h.get_with("/a", &[("accept-encoding", "br")]).await;
    assert!(!is_hit(&g));
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §4.1: Vary: * never matches: never served from the cache.
#[tokio::test]
async fn vary_star_is_never_served_from_cache() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60"), ("vary", "*")], "x");
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §4.4 (and purging): deleting the URL's key removes every variant.
#[tokio::test]
async fn purging_a_url_removes_all_its_variants() {
    let h = H::shared().await;
    language_route(&h, "/a", Duration::ZERO);
    for lang in ["en", "fr"] {
        h.get_with("/a", &[("accept-language", lang)]).await;
    }
    h.cache.delete(&h.key("/a")).await.unwrap();
    for lang in ["en", "fr"] {
        let g = h.get_with("/a", &[("accept-language", lang)]).await;
        assert_eq!(g.body(), lang);
        assert!(!is_hit(&g), "{lang}: {}", g.cache_status());
    }
    assert_eq!(h.calls("/a"), 4);
}

// Purging through the layer's handle (by URL, or by prefix) removes every variant too.
#[tokio::test]
async fn handle_purges_remove_all_variants() {
    let h = H::shared().await;
    language_route(&h, "/a", Duration::ZERO);
    language_route(&h, "/p/b", Duration::ZERO);
    for path in ["/a", "/p/b"] {
        for lang in ["en", "fr"] {
            h.get_with(path, &[("accept-language", lang)]).await;
        }
    }
    h.handle.purge_url(&h.key("/a")).await.unwrap();
    let removed = h.handle.purge_prefix(&h.key("/p/")).await.unwrap();
    assert!(removed >= 3, "marker and two variants: {removed}");
    for path in ["/a", "/p/b"] {
        for lang in ["en", "fr"] {
            let g = h.get_with(path, &[("accept-language", lang)]).await;
            assert!(!is_hit(&g), "{path} {lang}: {}", g.cache_status());
        }
    }
}

// RFC 9111 §4.4: an unsafe request invalidates every variant of its target URI.
#[tokio::test]
async fn unsafe_request_invalidates_all_variants() {
    let h = H::shared().await;
    language_route(&h, "/a", Duration::ZERO);
    for lang in ["en", "fr"] {
        h.get_with("/a", &[("accept-language", lang)]).await;
    }
    assert_eq!(h.send("POST", "/a", &[]).await.status, StatusCode::OK);
    for lang in ["en", "fr"] {
        assert!(!is_hit(
            &h.get_with("/a", &[("accept-language", lang)]).await
        ));
    }
}

// Coalescing per variant: concurrent requests make one origin request per variant.
#[tokio::test]
async fn concurrent_requests_coalesce_per_variant() {
    let h = Arc::new(H::shared().await);
    language_route(&h, "/a", Duration::from_millis(100));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let h = h.clone();
        let lang = if i % 2 == 0 { "en" } else { "fr" };
        tasks.push(tokio::spawn(async move {
            (lang, h.get_with("/a", &[("accept-language", lang)]).await)
        }));
    }
    for t in tasks {
        let (lang, g) = t.await.unwrap();
        assert_eq!(g.body(), lang);
    }
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §4.1: when the origin changes the fields it varies on, the cache relearns them and
// never serves a variant selected by the old ones.
#[tokio::test]
async fn vary_change_at_origin_is_relearned() {
    let h = H::shared().await;
    h.route("/a", |s| {
        let field = if s.n == 0 {
            "accept-language"
        } else {
            "x-flavour"
        };
        let v = s
            .headers
            .get(field)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        resp(200, &[("cache-control", "max-age=60"), ("vary", field)], v)
    });
    h.get_with("/a", &[("accept-language", "en")]).await;
    // Stored under the old fields: this one varies on x-flavour now.
    let g = h
        .get_with("/a", &[("accept-language", "fr"), ("x-flavour", "mint")])
        .await;
    assert_eq!(g.body(), "mint");
    let g = h.get_with("/a", &[("x-flavour", "lime")]).await;
    assert_eq!(g.body(), "lime");
    let g = h.get_with("/a", &[("x-flavour", "lime")]).await;
    assert_eq!(g.body(), "lime");
    assert!(is_hit(&g), "{}", g.cache_status());
}

// ---------------------------------------------------------------------------------------------
// Range (RFC 9110 §14, RFC 9111 §3.3-3.4)
// ---------------------------------------------------------------------------------------------

// RFC 9110 §14.2, §15.3.7: one range from a stored entry is a 206 with Content-Range.
#[tokio::test]
async fn range_on_stored_entry_is_206_with_content_range() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "0123456789");
    h.get("/a").await;
    let g = h.get_with("/a", &[("range", "bytes=2-5")]).await;
    assert_eq!(g.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(g.body(), "2345");
    assert_eq!(g.header("content-range"), "bytes 2-5/10");
    assert_eq!(g.header("content-length"), "4");
    assert!(g.headers.contains_key("age"));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9110 §14.1.2: open-ended and suffix ranges.
#[tokio::test]
async fn open_and_suffix_ranges_are_served() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "0123456789");
    h.get("/a").await;
    let open = h.get_with("/a", &[("range", "bytes=7-")]).await;
    assert_eq!(open.body(), "789");
    assert_eq!(open.header("content-range"), "bytes 7-9/10");
    let suffix = h.get_with("/a", &[("range", "bytes=-3")]).await;
    assert_eq!(suffix.body(), "789");
    let beyond = h.get_with("/a", &[("range", "bytes=8-100")]).await;
    assert_eq!(beyond.body(), "89");
    assert_eq!(beyond.header("content-range"), "bytes 8-9/10");
}

// RFC 9110 §14.2: several ranges may be answered with the whole representation (our choice).
#[tokio::test]
async fn multiple_ranges_get_the_full_200() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "0123456789");
    h.get("/a").await;
    let g = h.get_with("/a", &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body(), "0123456789");
}

// RFC 9110 §15.5.17: an unsatisfiable range is a 416 with `Content-Range: bytes */len`.
#[tokio::test]
async fn unsatisfiable_range_is_416_with_star_content_range() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "0123456789");
    h.get("/a").await;
    let g = h.get_with("/a", &[("range", "bytes=10-20")]).await;
    assert_eq!(g.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(g.header("content-range"), "bytes */10");
    assert!(g.body().is_empty());
}

// RFC 9110 §14.2: an invalid range-spec is ignored: the full 200.
#[tokio::test]
async fn invalid_range_is_ignored() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "0123456789");
    h.get("/a").await;
    for r in ["bytes=5-2", "bytes=x-y", "lines=1-2"] {
        let g = h.get_with("/a", &[("range", r)]).await;
        assert_eq!(g.status, StatusCode::OK, "{r}");
        assert_eq!(g.body().len(), 10);
    }
}

// RFC 9110 §13.1.5: If-Range that does not match (strongly) gets the full 200.
#[tokio::test]
async fn if_range_mismatch_gets_the_full_200() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=60"), ("etag", "\"v\"")],
        "0123456789",
    );
    h.get("/a").await;
    let stale = h
        .get_with("/a", &[("range", "bytes=0-1"), ("if-range", "\"old\"")])
        .await;
    assert_eq!(stale.status, StatusCode::OK);
    let weak = h
        .get_with("/a", &[("range", "bytes=0-1"), ("if-range", "W/\"v\"")])
        .await;
    assert_eq!(weak.status, StatusCode::OK);
    let ok = h
        .get_with("/a", &[("range", "bytes=0-1"), ("if-range", "\"v\"")])
        .await;
    assert_eq!(ok.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(ok.body(), "01");
}

// RFC 9111 §3.4 (no partial stored as whole) and §4.3.1: a Range request that misses fetches
// the whole object (no Range sent upstream), stores it, and answers the client's range.
#[tokio::test]
async fn range_on_miss_fills_the_full_object_and_answers_the_range() {
    let h = H::shared().await;
    h.route("/a", |_| trickle(&[("cache-control", "max-age=60")], 5));
    let g = h.get_with("/a", &[("range", "bytes=999-1001")]).await;
    assert_eq!(g.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(g.body(), "abb");
    assert_eq!(g.header("content-range"), "bytes 999-1001/5000");
    assert!(!h.seen("/a", 0).headers.contains_key("range"));
    // Nothing else asks for the URL meanwhile: the fill must finish on its own.
    assert!(h.stored_eventually("/a").await, "the fill was abandoned");
    let full = h.get("/a").await;
    assert!(is_hit(&full), "{}", full.cache_status());
    assert_eq!(full.body().len(), 5000);
    assert_eq!(h.calls("/a"), 1);
}

// Streaming: a range across many stored chunks is sliced from the stream, byte-exact.
#[tokio::test]
async fn range_across_stored_chunks_is_byte_exact() {
    let h = H::shared().await;
    let full: Vec<u8> = (0..20 * 4096u32).map(|i| (i % 251) as u8).collect();
    let expected = full.clone();
    h.route("/big", move |_| {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = full
            .chunks(4096)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let mut r = resp(
            200,
            &[("cache-control", "max-age=60")],
            Body::from_stream(futures_util::stream::iter(chunks)),
        );
        r.headers_mut()
            .insert("content-length", (20 * 4096).to_string().parse().unwrap());
        r
    });
    h.get("/big").await;
    let g = h.get_with("/big", &[("range", "bytes=5000-13000")]).await;
    assert_eq!(g.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&g.body()[..], &expected[5000..=13000]);
    assert_eq!(g.header("content-range"), "bytes 5000-13000/81920");
}

// ---------------------------------------------------------------------------------------------
// Invalidation (RFC 9111 §4.4)
// ---------------------------------------------------------------------------------------------

/// GET: a fresh body naming the request count; other methods: `status` with extra headers.
fn item_route(h: &H, path: &str, status: u16, extra: Vec<(&'static str, String)>) {
    h.route(path, move |s| {
        if s.method == Method::GET {
            return resp(200, &[("cache-control", "max-age=60")], format!("n{}", s.n));
        }
        let mut r = resp(status, &[], "done");
        for (k, v) in &extra {
            r.headers_mut().insert(*k, v.parse().unwrap());
        }
        r
    });
}

// RFC 9111 §4.4: a successful unsafe request invalidates its target URI.
#[tokio::test]
async fn successful_unsafe_requests_invalidate_the_target_uri() {
    let h = H::shared().await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let path = format!("/{}", method.to_lowercase());
        item_route(&h, &path, 200, vec![]);
        h.get(&path).await;
        assert!(is_hit(&h.get(&path).await));
        h.send(method, &path, &[]).await;
        let after = h.get(&path).await;
        assert!(!is_hit(&after), "{method}: {}", after.cache_status());
        assert_eq!(after.body(), "n2", "{method}");
    }
}

// RFC 9111 §4.4: a failed unsafe request (error status) invalidates nothing.
#[tokio::test]
async fn failed_unsafe_request_does_not_invalidate() {
    let h = H::shared().await;
    item_route(&h, "/a", 500, vec![]);
    h.get("/a").await;
    assert_eq!(h.send("POST", "/a", &[]).await.status.as_u16(), 500);
    assert!(is_hit(&h.get("/a").await));
}

// RFC 9111 §4.4: same-origin Location and Content-Location are invalidated too.
#[tokio::test]
async fn same_origin_location_and_content_location_are_invalidated() {
    let h = H::shared().await;
    let cl = format!("http://{}/cl", h.addr);
    item_route(
        &h,
        "/item",
        201,
        vec![("location", "/loc".to_owned()), ("content-location", cl)],
    );
    h.fixed("/loc", &[("cache-control", "max-age=60")], "loc");
    h.fixed("/cl", &[("cache-control", "max-age=60")], "cl");
    h.get("/loc").await;
    h.get("/cl").await;
    assert_eq!(h.send("POST", "/item", &[]).await.status.as_u16(), 201);
    assert!(!is_hit(&h.get("/loc").await));
    assert!(!is_hit(&h.get("/cl").await));
    assert_eq!(h.calls("/loc"), 2);
    assert_eq!(h.calls("/cl"), 2);
}

// RFC 9111 §4.4, RFC 3986 §5.2: a relative Location is resolved against the target URI.
#[tokio::test]
async fn relative_location_is_resolved_and_invalidated() {
    let h = H::shared().await;
    item_route(
        &h,
        "/dir/item",
        201,
        vec![("location", "sibling".to_owned())],
    );
    h.fixed("/dir/sibling", &[("cache-control", "max-age=60")], "s");
    h.get("/dir/sibling").await;
    h.send("POST", "/dir/item", &[]).await;
    assert!(!is_hit(&h.get("/dir/sibling").await));
    assert_eq!(h.calls("/dir/sibling"), 2);
}

// RFC 9111 §4.4: a Location on another origin is not invalidated (it could be used to purge
// someone else's entries).
#[tokio::test]
async fn cross_origin_location_is_not_invalidated() {
    let h = H::shared().await;
    item_route(
        &h,
        "/item",
        201,
        vec![("location", "http://other.example/x".to_owned())],
    );
    h.fixed("/x", &[("cache-control", "max-age=60")], "other");
    let other = [("host", "other.example")];
    h.get_with("/x", &other).await;
    h.send("POST", "/item", &[]).await;
    let g = h.get_with("/x", &other).await;
    assert!(is_hit(&g), "{}", g.cache_status());
    assert_eq!(h.calls("/x"), 1);
}

// RFC 9111 §3, §4.4: responses to unsafe methods are not stored.
#[tokio::test]
async fn responses_to_unsafe_methods_are_not_stored() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "x");
    h.send("POST", "/a", &[]).await;
    h.send("POST", "/a", &[]).await;
    assert_eq!(h.calls("/a"), 2);
}

// ---------------------------------------------------------------------------------------------
// HEAD, hop-by-hop fields, Cache-Status
// ---------------------------------------------------------------------------------------------

// RFC 9110 §9.3.2, RFC 9111 §4: HEAD is answered from a stored GET.
#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "0123456789");
    h.get("/a").await;
    let g = h.send("HEAD", "/a", &[]).await;
    assert_eq!(g.status, StatusCode::OK);
    assert!(g.body().is_empty());
    assert_eq!(g.header("content-length"), "10");
    assert!(is_hit(&g), "{}", g.cache_status());
    assert!(g.headers.contains_key("age"));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9110 §9.3.2: a HEAD miss is forwarded as HEAD and stores no body.
#[tokio::test]
async fn head_miss_is_forwarded_and_stores_nothing() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "x");
    h.send("HEAD", "/a", &[]).await;
    assert_eq!(h.seen("/a", 0).method, Method::HEAD);
    let g = h.get("/a").await;
    assert!(!is_hit(&g));
    assert_eq!(g.body(), "x");
}

// RFC 9111 §3.1, RFC 9110 §7.6.1: hop-by-hop fields and those named by Connection are neither
// stored nor forwarded.
#[tokio::test]
async fn hop_by_hop_and_connection_listed_fields_are_dropped() {
    let h = H::shared().await;
    let hop: &'static [(&'static str, &'static str)] = &[
        ("cache-control", "max-age=60"),
        ("connection", "x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("x-ok", "1"),
    ];
    h.fixed("/a", hop, "x");
    h.route("/p", |_| {
        resp(
            200,
            &[
                ("cache-control", "private"),
                ("connection", "x-secret"),
                ("x-secret", "1"),
            ],
            "p",
        )
    });
    let miss = h.get("/a").await;
    let hit = h.get("/a").await;
    let pass = h.get("/p").await;
    assert!(is_hit(&hit));
    for g in [&miss, &hit, &pass] {
        assert!(!g.headers.contains_key("x-secret"), "{:?}", g.headers);
        assert!(!g.headers.contains_key("keep-alive"));
        assert!(!g.header("connection").contains("x-secret"));
    }
    assert_eq!(hit.header("x-ok"), "1");
}

// RFC 9211: Cache-Status says what the cache did.
#[tokio::test]
async fn cache_status_reports_stored_miss_then_hit() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "x");
    let miss = h.get("/a").await;
    let cs = miss.cache_status();
    assert!(cs.starts_with("daramjwee; fwd=uri-miss"), "{cs}");
    assert!(cs.contains("stored"), "{cs}");
    let ttl: i64 = cs
        .split("; ")
        .find_map(|p| p.strip_prefix("ttl="))
        .and_then(|t| t.parse().ok())
        .expect("a ttl parameter");
    assert!((50..=60).contains(&ttl), "{cs}");
    let hit = h.get("/a").await;
    let cs = hit.cache_status();
    assert!(cs.starts_with("daramjwee; hit; ttl="), "{cs}");
    assert!(cs.contains("detail=memory"), "{cs}");
}

// ---------------------------------------------------------------------------------------------
// Policy modes: shared (default), private, origin-trusting
// ---------------------------------------------------------------------------------------------

// RFC 9111 §3 (no rule against Set-Cookie), §5.2.2.4: a shared cache may store a
// cookie-setting response; `no-cache="Set-Cookie"` stores it without the cookie. daramjwee
// does so only when told to (`share_set_cookie`), see the next test.
#[tokio::test]
async fn shared_cache_told_to_share_cookies_stores_set_cookie_unless_the_field_is_excluded() {
    let h = H::with_layer(PolicyMode::Shared, Cache::builder().build(), true).await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
        "x",
    );
    h.fixed(
        "/b",
        &[
            ("cache-control", "max-age=60, no-cache=\"Set-Cookie\""),
            ("set-cookie", "id=1"),
        ],
        "x",
    );
    for p in ["/a", "/b"] {
        h.get(p).await;
        assert!(is_hit(&h.get(p).await), "{p}");
    }
    assert_eq!(h.get("/a").await.header("set-cookie"), "id=1");
    assert!(!h.get("/b").await.headers.contains_key("set-cookie"));
}

// daramjwee's default on top of RFC 9111: a shared cache never stores a response that sets a
// cookie, so one client's session cookie is never replayed to another.
#[tokio::test]
async fn shared_cache_by_default_never_replays_a_set_cookie_response() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[
            ("cache-control", "max-age=60"),
            ("set-cookie", "session=alice"),
        ],
        "x",
    );
    let first = h.get("/a").await;
    assert_eq!(first.header("set-cookie"), "session=alice");
    let second = h.get("/a").await;
    assert!(!is_hit(&second), "{}", second.cache_status());
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §5.2.2.4: fields named by a qualified no-cache are not served from the cache; the
// rest of the response is.
#[tokio::test]
async fn qualified_no_cache_omits_the_listed_fields() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[
            ("cache-control", "no-cache=\"a, b\""),
            ("cache-control", "max-age=3600"),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
        ],
        "x",
    );
    h.get("/a").await;
    let g = h.get("/a").await;
    assert!(is_hit(&g), "{}", g.cache_status());
    assert_eq!(g.header("c"), "3");
    assert!(!g.headers.contains_key("a") && !g.headers.contains_key("b"));
}

// RFC 9111 §5.2.2.7: a shared cache stores a response with qualified private, minus the
// listed fields.
#[tokio::test]
async fn qualified_private_omits_the_listed_fields_in_shared_cache() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[
            ("cache-control", "max-age=60, private=\"x-user\""),
            ("x-user", "alice"),
        ],
        "x",
    );
    h.get("/a").await;
    let g = h.get("/a").await;
    assert!(is_hit(&g));
    assert!(!g.headers.contains_key("x-user"));
}

// RFC 9111 §5.2: `max-age =N` / `max-age= N` are not max-age: ignored, so not reused.
#[tokio::test]
async fn max_age_with_whitespace_around_equals_is_ignored() {
    let h = H::shared().await;
    h.fixed("/a", &[("cache-control", "max-age =100")], "x");
    h.fixed("/b", &[("cache-control", "max-age= 100")], "x");
    for p in ["/a", "/b"] {
        h.get(p).await;
        h.get(p).await;
        assert_eq!(h.calls(p), 2, "{p}");
    }
}

// RFC 9111 §5.2.1.1: request max-age=0 validates even a just-stored entry.
#[tokio::test]
async fn request_max_age_zero_forces_validation() {
    let h = H::shared().await;
    aged_route(&h, "/a", "max-age=100", "0");
    h.get("/a").await;
    h.get_with("/a", &[("cache-control", "max-age=0")]).await;
    assert_eq!(h.calls("/a"), 2);
    assert_eq!(h.seen("/a", 1).headers["if-none-match"], "\"v\"");
}

// RFC 9111 §5.2.2.7: a private cache may store private responses.
#[tokio::test]
async fn private_mode_stores_private_responses() {
    let h = H::new(PolicyMode::Private).await;
    h.fixed("/a", &[("cache-control", "private, max-age=60")], "mine");
    h.get("/a").await;
    assert!(is_hit(&h.get("/a").await));
    assert_eq!(h.calls("/a"), 1);
}

// RFC 9111 §5.2.2.10: a private cache ignores s-maxage.
#[tokio::test]
async fn private_mode_ignores_s_maxage() {
    let h = H::new(PolicyMode::Private).await;
    h.fixed("/a", &[("cache-control", "max-age=0, s-maxage=60")], "x");
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// RFC 9111 §3.5: the Authorization rule binds shared caches only.
#[tokio::test]
async fn private_mode_stores_responses_to_authorized_requests() {
    let h = H::new(PolicyMode::Private).await;
    h.fixed("/a", &[("cache-control", "max-age=60")], "x");
    let auth = [("authorization", "Bearer t")];
    h.get_with("/a", &auth).await;
    assert!(is_hit(&h.get_with("/a", &auth).await));
}

// RFC 9111 §5.2.2.8: proxy-revalidate does not bind a private cache.
#[tokio::test]
async fn private_mode_may_serve_stale_proxy_revalidate_under_max_stale() {
    let h = H::new(PolicyMode::Private).await;
    aged_route(&h, "/a", "max-age=10, proxy-revalidate", "50");
    h.get("/a").await;
    let g = h
        .get_with("/a", &[("cache-control", "max-stale=1000")])
        .await;
    assert!(is_hit(&g), "{}", g.cache_status());
    assert_eq!(h.calls("/a"), 1);
}

fn trusting(ttl: u64, negative: u64) -> PolicyMode {
    PolicyMode::OriginTrusting {
        ttl: Duration::from_secs(ttl),
        negative_ttl: Duration::from_secs(negative),
    }
}

// Origin-trusting mode: responses without caching headers are stored for the configured TTL.
#[tokio::test]
async fn origin_trusting_mode_stores_responses_without_cache_headers() {
    let h = H::new(trusting(60, 5)).await;
    h.fixed("/a", &[], "x");
    for _ in 0..3 {
        assert_eq!(h.get("/a").await.body(), "x");
    }
    assert_eq!(h.calls("/a"), 1);
}

// Origin-trusting mode: an expired entry is served at once and refreshed in the background.
#[tokio::test]
async fn origin_trusting_mode_serves_stale_and_refreshes_in_background() {
    let h = H::new(trusting(0, 0)).await;
    h.route("/a", |s| resp(200, &[], format!("v{}", s.n)));
    assert_eq!(h.get("/a").await.body(), "v0");
    let stale = h.get("/a").await;
    assert_eq!(stale.body(), "v0");
    assert!(is_hit(&stale));
    assert_eq!(h.wait_calls("/a", 2).await, 2);
}

// Origin-trusting mode: how stale an entry may be served is the engine's stale window
// (`serve_stale_for`); past it, the entry is fetched again before serving.
#[tokio::test]
async fn origin_trusting_mode_respects_the_engine_stale_window() {
    let cache = Cache::builder()
        .serve_stale_for(Some(Duration::ZERO))
        .build();
    let h = H::with_cache(trusting(0, 0), cache).await;
    h.route("/a", |s| resp(200, &[], format!("v{}", s.n)));
    assert_eq!(h.get("/a").await.body(), "v0");
    assert_eq!(h.get("/a").await.body(), "v1");
}

// Origin-trusting mode: 404/410 use the negative TTL.
#[tokio::test]
async fn origin_trusting_mode_uses_the_negative_ttl_for_not_found() {
    let h = H::new(trusting(600, 0)).await;
    h.route("/nf", |_| resp(404, &[], "nf"));
    h.fixed("/ok", &[], "ok");
    for p in ["/nf", "/ok"] {
        h.get(p).await;
        assert!(is_hit(&h.get(p).await));
    }
    // The 404 was stale at once (negative TTL 0): its hit scheduled a refresh.
    assert_eq!(h.wait_calls("/nf", 2).await, 2);
    assert_eq!(h.calls("/ok"), 1);
}

// Origin-trusting mode: server errors are never stored.
#[tokio::test]
async fn origin_trusting_mode_does_not_store_server_errors() {
    let h = H::new(trusting(60, 60)).await;
    h.route("/a", |_| resp(503, &[], "down"));
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.calls("/a"), 2);
}

// Origin-trusting mode still honours no-store, private and Set-Cookie.
#[tokio::test]
async fn origin_trusting_mode_respects_no_store_private_and_set_cookie() {
    let h = H::new(trusting(60, 60)).await;
    h.fixed("/ns", &[("cache-control", "no-store")], "x");
    h.fixed("/pr", &[("cache-control", "private")], "x");
    h.fixed("/sc", &[("set-cookie", "a=b")], "x");
    for p in ["/ns", "/pr", "/sc"] {
        h.get(p).await;
        h.get(p).await;
        assert_eq!(h.calls(p), 2, "{p}");
    }
}

// RFC 9111 §5.1, §4: the cache must not rewrite the stored Date.
#[tokio::test]
async fn stored_date_header_is_replayed_unchanged() {
    let h = H::shared().await;
    let date = http_date(Duration::from_secs(100));
    let sent = date.clone();
    h.route("/a", move |_| {
        resp(
            200,
            &[("cache-control", "max-age=600"), ("date", sent.as_str())],
            "x",
        )
    });
    h.get("/a").await;
    let hit = h.get("/a").await;
    assert!(is_hit(&hit));
    assert_eq!(hit.header("date"), date);
    let age: u64 = hit.header("age").parse().unwrap();
    assert!(age >= 100, "age {age}");
}

/// Serves the layer over a plain tower service whose call fails (a transport error, not a
/// status) from its second request on, through hyper directly: axum only serves infallible
/// services.
async fn serve_failing_origin(
    cc: &'static str,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceBuilder;

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let cc = http::HeaderValue::from_static(cc);
    let origin = tower::service_fn(move |_req: http::Request<Body>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let cc = cc.clone();
        async move {
            if n == 0 {
                let res = http::Response::builder()
                    .header("cache-control", cc)
                    .header("age", "10")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                        b"good",
                    )))
                    .unwrap();
                Ok(res)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "origin down",
                ))
            }
        }
    });
    let layer = CacheLayer::new(Cache::builder().build());
    let svc = ServiceBuilder::new()
        .map_request(|r: http::Request<hyper::body::Incoming>| r.map(Body::new))
        .layer(layer)
        .service(origin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, calls)
}

// RFC 5861 §4: an origin that cannot be reached at all (the inner service fails) is an error
// too: the stale entry is served within stale-if-error.
#[tokio::test]
async fn stale_if_error_serves_stale_entry_when_origin_service_fails() {
    let (addr, calls) = serve_failing_origin("max-age=1, stale-if-error=100").await;
    let c = client();
    assert_eq!(common::get(&c, addr, "/a").await.body(), "good");
    let g = common::get(&c, addr, "/a").await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body(), "good");
    assert!(
        g.cache_status().contains("stale-if-error"),
        "{}",
        g.cache_status()
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

// Without stale-if-error, the inner service's own error is returned (the cache never turns
// it into a response of its own).
#[tokio::test]
async fn origin_service_error_without_stale_if_error_is_returned() {
    let (addr, _) = serve_failing_origin("max-age=1").await;
    let c = client();
    assert_eq!(common::get(&c, addr, "/a").await.body(), "good");
    let g = common::get(&c, addr, "/a").await;
    assert!(g.body.is_err(), "the connection fails: {:?}", g.status);
}

// RFC 9111 §5.1, RFC 9110 §5.3: an `Age` list folded into one line is read by its first
// member, as separate lines would be: `Age: 7200, 0` with max-age=3600 is stale.
#[tokio::test]
async fn age_list_in_one_line_is_read_by_its_first_member() {
    let h = H::shared().await;
    h.fixed(
        "/a",
        &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
        "x",
    );
    h.fixed(
        "/b",
        &[("cache-control", "max-age=3600"), ("age", "0, 7200")],
        "y",
    );
    for path in ["/a", "/b"] {
        h.get(path).await;
    }
    let a = h.get("/a").await;
    assert_eq!(a.body(), "x");
    assert!(!is_hit(&a), "{}", a.cache_status());
    assert_eq!(h.calls("/a"), 2, "stale on arrival: validated");
    let b = h.get("/b").await;
    assert!(is_hit(&b), "{}", b.cache_status());
    assert_eq!(h.calls("/b"), 1);
}
