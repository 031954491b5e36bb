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
}

criterion_group!(benches, bench);
criterion_main!(benches);
