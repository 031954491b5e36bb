//! The hot-hit path with metrics on vs. off, in one run.
//!
//! `cargo bench --features metrics --bench metrics_overhead`
//!
//! "off": a cache built before any recorder is installed (its handles are no-ops).
//! "on": a cache built after a Prometheus recorder is installed (every hit records).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use daramjwee::{Cache, EntryBody, Fetched, Metadata};
use http::StatusCode;

fn fill(rt: &tokio::runtime::Runtime, cache: &Cache) {
    rt.block_on(async {
        let l = cache
            .get("k", |_: Option<Arc<Metadata>>| async {
                Ok::<_, daramjwee::BoxError>(Fetched::Entry {
                    meta: Metadata::new(StatusCode::OK),
                    body: EntryBody::from_bytes(vec![0u8; 1024]),
                })
            })
            .await
            .unwrap();
        l.body.collect().await.unwrap();
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let off = Cache::builder().name("off").build();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::set_global_recorder(recorder).unwrap();
    let on = Cache::builder().name("on").build();
    fill(&rt, &off);
    fill(&rt, &on);
    let mut g = c.benchmark_group("hot_hit_metrics");
    for (name, cache) in [("off", &off), ("on", &on)] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let l = cache
                    .get("k", |_: Option<Arc<Metadata>>| async {
                        Err::<Fetched, daramjwee::BoxError>("unreachable".into())
                    })
                    .await
                    .unwrap();
                std::hint::black_box(l);
            })
        });
    }
    g.finish();

    // The same through the tower layer: an in-process request served from a hot hit.
    use tower::ServiceExt;
    let route = || {
        axum::Router::new().route(
            "/r",
            axum::routing::get(|| async { ([("cache-control", "max-age=3600")], vec![0u8; 1024]) }),
        )
    };
    let apps = [
        (
            "off",
            route().layer(daramjwee::http::CacheLayer::new(off.clone())),
        ),
        (
            "on",
            route().layer(daramjwee::http::CacheLayer::new(on.clone())),
        ),
    ];
    let request = || {
        http::Request::get("http://bench.test/r")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    for (_, app) in &apps {
        rt.block_on(async {
            let res = app.clone().oneshot(request()).await.unwrap();
            http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap();
        });
    }
    // Paired and interleaved: blocks of requests alternate between the two apps, and the
    // medians of the per-block means are compared, so machine noise hits both alike.
    if std::env::args().any(|a| a == "--bench") {
        let mut per: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..400 {
            for (i, (_, app)) in apps.iter().enumerate() {
                let t = std::time::Instant::now();
                rt.block_on(async {
                    for _ in 0..200 {
                        let res = app.clone().oneshot(request()).await.unwrap();
                        http_body_util::BodyExt::collect(res.into_body())
                            .await
                            .unwrap();
                    }
                });
                per[i].push(t.elapsed().as_nanos() as f64 / 200.0);
            }
        }
        for v in per.iter_mut() {
            v.sort_by(|a, b| a.total_cmp(b));
        }
        let (off_ns, on_ns) = (per[0][per[0].len() / 2], per[1][per[1].len() / 2]);
        println!(
            "paired layer hit, median of 400 interleaved blocks of 200: off {off_ns:.0} ns, on {on_ns:.0} ns, overhead {:+.1}%",
            (on_ns / off_ns - 1.0) * 100.0
        );
    }
    let mut g = c.benchmark_group("layer_hit_metrics");
    for (name, app) in &apps {
        g.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let res = app.clone().oneshot(request()).await.unwrap();
                let body = http_body_util::BodyExt::collect(res.into_body())
                    .await
                    .unwrap();
                std::hint::black_box(body);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
