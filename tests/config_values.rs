//! No configuration value makes the cache panic or serve a wrong body (issue 14).
//!
//! A property test over the builder's inputs, from zero to `Duration::MAX` / `u64::MAX`: each
//! case builds a cache, puts it behind `CacheLayer` in every `PolicyMode`, and sends a miss, a
//! hit, a response stale on arrival and a not-found through `tower::ServiceExt::oneshot` to a
//! `service_fn` origin. Every body must equal the origin's; where the values allow it (room
//! in the store, a long TTL, timeouts a store can meet), the second request must be a hit.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use daramjwee::http::{CacheLayer, PolicyMode};
use daramjwee::store::MemStore;
use daramjwee::{Cache, CacheBuilder, EntryBody, Fetched, Metadata, Outcome, Promotion};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::ServiceExt;

const BODY_LEN: usize = 4096;
/// Large enough for every entry of a case: below it, hits are not asserted.
const ROOMY: u64 = 1 << 20;
const DAY: Duration = Duration::from_secs(86_400);

/// A route of the origin: path, status and response headers.
type Route = (&'static str, u16, &'static [(&'static str, &'static str)]);

const ROUTES: [Route; 4] = [
    // Fresh for longer than any clock can count (max-age saturates at 2^31 - 1).
    ("/fresh", 200, &[("cache-control", "max-age=99999999999")]),
    // Stale on arrival, with a stale-while-revalidate window past 2^31 s.
    (
        "/stale",
        200,
        &[
            (
                "cache-control",
                "max-age=60, stale-while-revalidate=99999999999",
            ),
            ("age", "7200"),
        ],
    ),
    // An HTTP date at the far end of what it can name.
    (
        "/expires",
        200,
        &[("expires", "Fri, 31 Dec 9999 23:59:59 GMT")],
    ),
    ("/missing", 404, &[]),
];

/// The body the origin sends for `path`: distinct per path, several KiB.
fn body_for(path: &str) -> Bytes {
    path.bytes().cycle().take(BODY_LEN).collect()
}

/// Builder inputs.
#[derive(Clone, Debug)]
struct Values {
    default_ttl: Duration,
    negative_ttl: Duration,
    serve_stale_for: Option<Duration>,
    lock_age: Duration,
    lock_wait: Duration,
    op_timeout: Duration,
    idle_timeout: Duration,
    workers: (usize, usize),
    stream_window: u64,
    follower_retain: u64,
    follower_retain_total: u64,
    second_hit: Option<usize>,
    capacity: u64,
    ttl: Duration,
    trusting_negative_ttl: Duration,
}

impl Values {
    fn builder(&self) -> CacheBuilder {
        let mut b = Cache::builder()
            .hot(MemStore::new(self.capacity))
            .default_ttl(self.default_ttl)
            .negative_ttl(self.negative_ttl)
            .serve_stale_for(self.serve_stale_for)
            .lock_age(self.lock_age)
            .lock_wait(self.lock_wait)
            .op_timeout(self.op_timeout)
            .idle_timeout(self.idle_timeout)
            .workers(self.workers.0, self.workers.1)
            .stream_window(self.stream_window)
            .follower_retain(self.follower_retain)
            .follower_retain_total(self.follower_retain_total);
        if let Some(n) = self.second_hit {
            b = b.promotion(Promotion::SecondHit(n));
        }
        b
    }

    fn modes(&self) -> [PolicyMode; 3] {
        [
            PolicyMode::Shared,
            PolicyMode::Private,
            PolicyMode::OriginTrusting {
                ttl: self.ttl,
                negative_ttl: self.trusting_negative_ttl,
            },
        ]
    }

    /// Whether a stored entry is certain to be found again: room in the store, and store
    /// operations and origin reads that a timeout cannot cut.
    fn can_hit(&self) -> bool {
        self.capacity >= ROOMY
            && self.op_timeout >= Duration::from_secs(1)
            && self.idle_timeout >= Duration::from_secs(1)
    }
}

/// Durations from zero to `Duration::MAX`, the edges more often than chance would pick them.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        Just(Duration::from_secs(i64::MAX as u64)),
        Just(Duration::from_secs(100 * 365 * 86_400)),
        Just(DAY),
        (0u64..3_600).prop_map(Duration::from_secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), Just(ROOMY), any::<u64>()]
}

fn values() -> impl Strategy<Value = Values> {
    let times = (
        duration(),
        duration(),
        proptest::option::of(duration()),
        duration(),
        duration(),
        duration(),
        duration(),
        duration(),
        duration(),
    );
    let sizes = (
        (0usize..4, 0usize..8),
        size(),
        size(),
        size(),
        proptest::option::of(0usize..4),
        size(),
    );
    (times, sizes).prop_map(|(t, s)| Values {
        default_ttl: t.0,
        negative_ttl: t.1,
        serve_stale_for: t.2,
        lock_age: t.3,
        lock_wait: t.4,
        op_timeout: t.5,
        idle_timeout: t.6,
        ttl: t.7,
        trusting_negative_ttl: t.8,
        workers: s.0,
        stream_window: s.1,
        follower_retain: s.2,
        follower_retain_total: s.3,
        second_hit: s.4,
        capacity: s.5,
    })
}

/// Origin calls per route, in `ROUTES` order.
type Calls = Arc<[AtomicUsize; 4]>;

async fn origin(calls: Calls, req: Request<String>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let i = ROUTES
        .iter()
        .position(|r| r.0 == path)
        .expect("a known route");
    calls[i].fetch_add(1, Ordering::SeqCst);
    let (_, status, headers) = ROUTES[i];
    let mut res = Response::new(Full::new(body_for(path)));
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        res.headers_mut().insert(*k, v.parse().unwrap());
    }
    Ok(res)
}

/// Sends GET `path` through `layer` to a fresh origin service; returns the body and whether
/// `Cache-Status` says hit.
async fn send(layer: &CacheLayer, calls: &Calls, path: &str) -> (Bytes, bool) {
    let calls = calls.clone();
    let svc = layer.layer_service(tower::service_fn(move |req| origin(calls.clone(), req)));
    let req = Request::get(format!("http://cfg.test{path}"))
        .body(String::new())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let hit = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s.contains("; hit"));
    let body = res.into_body().collect().await.expect("a whole body");
    (body.to_bytes(), hit)
}

async fn check_mode(v: &Values, mode: PolicyMode) {
    let long_ttl = match &mode {
        PolicyMode::OriginTrusting { ttl, .. } => *ttl >= DAY,
        _ => true,
    };
    let layer = CacheLayer::builder(v.builder().build())
        .policy(mode)
        .build();
    let calls: Calls = Arc::new(Default::default());
    for (path, _, _) in ROUTES {
        for round in 0..2 {
            let (body, hit) = send(&layer, &calls, path).await;
            assert_eq!(body, body_for(path), "{path} round {round}");
            if path == "/fresh" && round == 1 && v.can_hit() && long_ttl {
                assert!(hit, "a long-lived entry is a hit the second time");
            }
        }
    }
    if v.can_hit() && long_ttl {
        assert_eq!(
            calls[0].load(Ordering::SeqCst),
            1,
            "/fresh went to the origin twice"
        );
    }
}

/// The engine alone: an entry without its own freshness lives `default_ttl`.
async fn check_engine(v: &Values) {
    let cache = v.builder().build();
    for round in 0..2 {
        let lookup = cache
            .get("k", |_prev| async {
                let meta = Metadata::new(StatusCode::OK);
                Ok(Fetched::Entry {
                    meta,
                    body: EntryBody::from_bytes(body_for("/engine")),
                })
            })
            .await
            .unwrap();
        let hit = matches!(lookup.outcome, Outcome::Hit { stale: false, .. });
        assert_eq!(lookup.body.collect().await.unwrap(), body_for("/engine"));
        if round == 1 && v.can_hit() && v.default_ttl >= DAY {
            assert!(hit, "{:?}", lookup.outcome);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_configuration_value_panics_or_changes_a_body(v in values()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for mode in v.modes() {
                check_mode(&v, mode).await;
            }
            check_engine(&v).await;
        });
    }
}

/// The values of issue 14, named: each was a panic in a worker and nothing cached.
#[tokio::test]
async fn duration_max_everywhere_caches_for_ever() {
    let v = Values {
        default_ttl: Duration::MAX,
        negative_ttl: Duration::MAX,
        serve_stale_for: Some(Duration::MAX),
        lock_age: Duration::MAX,
        lock_wait: Duration::MAX,
        op_timeout: Duration::MAX,
        idle_timeout: Duration::MAX,
        workers: (1, 16),
        stream_window: u64::MAX,
        follower_retain: u64::MAX,
        follower_retain_total: u64::MAX,
        second_hit: None,
        capacity: ROOMY,
        ttl: Duration::MAX,
        trusting_negative_ttl: Duration::MAX,
    };
    for mode in v.modes() {
        check_mode(&v, mode).await;
    }
    check_engine(&v).await;
}
