//! A hot memory tier plus a cold tier on S3, configured from a URL, in front of an axum app.
//!
//! Two "instances" (two `Cache`s with their own memory tiers) share the bucket: what the first
//! fetched from the origin, the second serves from the bucket without calling the origin.
//!
//! Against the test server (any S3 works the same way with its own `AWS_*` variables):
//!
//! ```text
//! eval "$(bash scripts/s3-server.sh start)"
//! cargo run --example object_store --features aws -- "s3://$DARAMJWEE_S3_BUCKET/example"
//! bash scripts/s3-server.sh stop
//! ```
//!
//! Without an argument the cold tier is a local directory, `file://$TMPDIR/daramjwee-example`
//! (no server needed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{routing::get, Router};
use bytes::Bytes;
use daramjwee::http::{CacheLayer, PolicyMode};
use daramjwee::store::{BucketStore, MemStore, Store};
use daramjwee::Cache;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One cache instance: its own memory tier, the shared cold tier, and the origin behind it.
async fn instance(cold: BucketStore, origin_calls: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let cache = Cache::builder()
        .hot(MemStore::new(64 << 20))
        .cold(cold)
        .build();
    let layer = CacheLayer::builder(cache)
        .policy(PolicyMode::OriginTrusting {
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
        })
        .build();
    let app = Router::new()
        .route(
            "/report",
            get(move || {
                origin_calls.fetch_add(1, Ordering::SeqCst);
                async { "an expensive report\n" }
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Both instances serve one site (as behind a load balancer): the key includes the host.
const HOST: &str = "reports.example";

async fn fetch(addr: std::net::SocketAddr) -> Result<(String, Bytes), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(format!("http://{addr}/report"))
        .header(http::header::HOST, HOST)
        .body(Empty::new())?;
    let res = client.request(req).await?;
    let status = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    Ok((status, res.into_body().collect().await?.to_bytes()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let url = std::env::args().nth(1).unwrap_or_else(|| {
        let dir = std::env::temp_dir().join("daramjwee-example");
        format!("file://{}", dir.display())
    });

    // `from_url` reads credentials, region and endpoint from the `AWS_*` variables for s3://.
    let cold = BucketStore::from_url(&url)?
        .op_timeout(Duration::from_secs(5))
        .ttl(Duration::from_secs(7 * 24 * 3600))
        .build()?;
    // Start clean so that the first request is a miss every time the example runs.
    cold.clear().await?;

    let origin_calls = Arc::new(AtomicUsize::new(0));
    let first = instance(cold.clone(), origin_calls.clone()).await;
    // The second instance opens the bucket on its own, as another process would.
    let second = instance(BucketStore::from_url(&url)?.build()?, origin_calls.clone()).await;

    let (status, body) = fetch(first).await?;
    println!(
        "instance 1, first request:  {status} ({} bytes)",
        body.len()
    );
    let (status, _) = fetch(first).await?;
    println!("instance 1, second request: {status}");

    // The copy into the cold tier runs in the background after the hot tier committed.
    let key = format!("http://{HOST}/report");
    for _ in 0..100 {
        if cold.head(&key).await?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = fetch(second).await?;
    println!("instance 2, first request:  {status}");
    let (status, _) = fetch(second).await?;
    println!("instance 2, second request: {status}");
    println!(
        "origin calls: {} (cold tier: {url})",
        origin_calls.load(Ordering::SeqCst)
    );
    Ok(())
}
