//! An axum app with the cache layer and a Prometheus `/metrics` endpoint.
//!
//! ```sh
//! cargo run --features metrics --example prometheus            # serves on 127.0.0.1:3001
//! cargo run --features metrics --example prometheus -- --demo  # makes a few requests, prints /metrics, exits
//! ```

use std::time::Duration;

use axum::{routing::get, Router};
use daramjwee::{http::CacheLayer, store::MemStore, Cache};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Install the recorder before building the cache: the cache registers its metric handles
    // when it is built.
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    metrics::set_global_recorder(prometheus)?;

    let cache = Cache::builder()
        .name("app")
        .hot(MemStore::new(64 << 20))
        .build();
    let cached = Router::new()
        .route(
            "/report",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                ([("cache-control", "max-age=30")], "an expensive report")
            }),
        )
        .layer(CacheLayer::new(cache));
    let app = cached.route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );

    let demo = std::env::args().any(|a| a == "--demo");
    let addr = if demo {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3001"
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if !demo {
        eprintln!("serving on http://{addr} (try /report and /metrics)");
        server.await??;
        return Ok(());
    }

    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    for _ in 0..5 {
        client.get(format!("http://{addr}/report").parse()?).await?;
    }
    let res = client
        .get(format!("http://{addr}/metrics").parse()?)
        .await?;
    let text = res.into_body().collect().await?.to_bytes();
    for line in String::from_utf8_lossy(&text).lines() {
        if line.starts_with("daramjwee_requests_total") && !line.ends_with(" 0") {
            println!("{line}");
        }
    }
    Ok(())
}
