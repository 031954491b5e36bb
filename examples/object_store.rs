//! A hot memory tier plus a cold tier on S3, configured from a URL, in front of an axum app.
//!
//! Two "instances" (two `Cache`s with their own memory tiers) share the bucket: what the first
//! fetched from the origin, the second serves from the bucket without calling the origin. Then
//! a purge on the first, recorded in the bucket by `SharedPurges`, is a miss on the second
//! within the poll interval.
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
use daramjwee::store::{BucketStore, MemStore, SharedPurges, Store};
use daramjwee::Cache;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often each instance looks for the other's purges.
const PURGE_POLL: Duration = Duration::from_millis(200);

/// One cache instance: its own memory tier, the shared cold tier, the origin behind it, and its
/// end of the purges shared through the bucket.
async fn instance(
    cold: BucketStore,
    origin_calls: Arc<AtomicUsize>,
) -> Result<(std::net::SocketAddr, SharedPurges), BoxError> {
    let cache = Cache::builder()
        .hot(MemStore::new(64 << 20))
        .cold(cold.clone())
        .build();
    let purges = SharedPurges::builder(cache.clone(), cold)
        .interval(PURGE_POLL)
        .start()
        .await?;
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
    Ok((addr, purges))
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
    let (first, purges) = instance(cold.clone(), origin_calls.clone()).await?;
    // The second instance opens the bucket on its own, as another process would.
    let other = BucketStore::from_url(&url)?.build()?;
    let (second, _second_purges) = instance(other, origin_calls.clone()).await?;

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

    // A purge on instance 1 goes into the bucket's purge log; instance 2 applies it at its next
    // poll, so after one interval it answers from the origin again.
    purges.purge_key(&key).await?;
    tokio::time::sleep(PURGE_POLL * 2).await;
    let (status, _) = fetch(second).await?;
    println!("instance 2, after a purge on instance 1: {status}");
    println!(
        "origin calls: {} (cold tier: {url})",
        origin_calls.load(Ordering::SeqCst)
    );
    Ok(())
}
