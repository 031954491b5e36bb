//! Known traffic in, exact counters out, read from the rendered Prometheus text.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::Arc;

use daramjwee::{Cache, EntryBody, Fetched, GetOptions, Metadata};
use http::StatusCode;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the sample of `name` whose labels are exactly `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (l, v) = r.split_once("} ")?;
                (l, v)
            }
            None => ("", rest.strip_prefix(' ')?),
        };
        let got: BTreeMap<&str, &str> = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        (got == want).then(|| value.trim().parse().ok()).flatten()
    })
}

fn entry(body: &'static str) -> impl daramjwee::Fetcher {
    move |_prev: Option<Arc<Metadata>>| async move {
        Ok::<_, daramjwee::BoxError>(Fetched::Entry {
            meta: Metadata::new(StatusCode::OK),
            body: EntryBody::from_bytes(body),
        })
    }
}

fn not_modified() -> impl daramjwee::Fetcher {
    |_prev: Option<Arc<Metadata>>| async move {
        Ok::<_, daramjwee::BoxError>(Fetched::NotModified { meta: None })
    }
}

#[tokio::test]
async fn counters_match_known_traffic() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let cache = Cache::builder().name("known").build();
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    // 10 misses of 8 bytes each.
    for k in &keys {
        let l = cache.get(k, entry("12345678")).await.unwrap();
        l.body.collect().await.unwrap();
    }
    // 90 hits.
    for i in 0..90 {
        let l = cache.get(&keys[i % 10], entry("unused")).await.unwrap();
        l.body.collect().await.unwrap();
    }
    // 5 revalidations answered 304.
    for k in keys.iter().take(5) {
        let l = cache
            .get_with(k, GetOptions::default().revalidate(true), not_modified())
            .await
            .unwrap();
        l.body.collect().await.unwrap();
    }
    // 3 purges.
    for k in keys.iter().take(3) {
        cache.delete(k).await.unwrap();
    }
    // Two requests the HTTP face does not look up.
    {
        use tower::ServiceExt;
        let svc = tower::service_fn(|_req: http::Request<axum::body::Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty()))
        });
        let svc = daramjwee::http::CacheLayer::new(cache.clone()).layer_service(svc);
        for _ in 0..2 {
            let req = http::Request::post("http://x.test/a")
                .body(axum::body::Body::empty())
                .unwrap();
            svc.clone().oneshot(req).await.unwrap();
        }
    }
    let stats = cache.stats();
    let text = handle.render();
    let c = |outcome: &str, tier: &str| {
        sample(
            &text,
            "daramjwee_requests_total",
            &[("cache", "known"), ("outcome", outcome), ("tier", tier)],
        )
    };
    assert_eq!(c("miss", "origin"), Some(10.0), "{text}");
    assert_eq!(c("hit", "memory"), Some(90.0));
    assert_eq!(c("revalidated", "memory"), Some(5.0));
    assert_eq!(c("bypass", "origin"), Some(2.0));
    assert_eq!(c("error", "origin"), Some(0.0));
    let origin = |result: &str| {
        sample(
            &text,
            "daramjwee_origin_fetches_total",
            &[("cache", "known"), ("result", result)],
        )
    };
    assert_eq!(origin("ok"), Some(10.0));
    assert_eq!(origin("not_modified"), Some(5.0));
    assert_eq!(
        sample(&text, "daramjwee_origin_bytes_total", &[("cache", "known")]),
        Some(80.0)
    );
    // Three purges, plus the two invalidations the successful POSTs made.
    assert_eq!(
        sample(&text, "daramjwee_purges_total", &[("cache", "known")]),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "daramjwee_stored_entries",
            &[("cache", "known"), ("tier", "memory")]
        ),
        Some(7.0)
    );
    assert_eq!(stats.hits, vec![90]);
    assert_eq!(stats.misses, 10);
    assert_eq!(stats.revalidated, 5);
}
