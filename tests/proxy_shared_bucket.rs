//! Two proxies over one bucket (issue 17): a purge on one instance's admin reaches the other's
//! hot tier through the bucket's purge log. Needs the S3-compatible server `scripts/test.sh`
//! starts (skipped without it, unless `DARAMJWEE_S3_REQUIRED=1`).
#![cfg(all(feature = "proxy", feature = "aws"))]

mod proxy_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::routing;
use bytes::Bytes;
use proxy_common::{client, get, post, upstream, Proxy, TestClient};

async fn serve() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/{*rest}",
            routing::get(|State(c): State<Arc<AtomicUsize>>| async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", "max-age=600")], format!("v{n}"))
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

/// The bucket URL of this run, or `None` when no S3 server is configured.
fn bucket_url() -> Option<String> {
    let bucket = std::env::var("DARAMJWEE_S3_BUCKET").ok();
    match (std::env::var("AWS_ENDPOINT").ok(), bucket) {
        (Some(_), Some(bucket)) => {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            Some(format!(
                "s3://{bucket}/proxy-shared-{}-{nanos}",
                std::process::id()
            ))
        }
        _ if std::env::var("DARAMJWEE_S3_REQUIRED").as_deref() == Ok("1") => {
            panic!("DARAMJWEE_S3_REQUIRED=1 but AWS_ENDPOINT / DARAMJWEE_S3_BUCKET are unset")
        }
        _ => {
            eprintln!("SKIPPED proxy_shared_bucket: no S3 server");
            None
        }
    }
}

async fn until_hit(c: &TestClient, addr: SocketAddr, path: &str) -> String {
    for _ in 0..200 {
        let got = get(c, addr, path).await;
        if got.cache_status().contains("; hit") {
            return got.text();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never became a hit on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_proxy_reaches_the_other_through_the_bucket() {
    let Some(cold) = bucket_url() else {
        return;
    };
    let (oaddr, calls) = serve().await;
    let args = [
        "--upstream",
        &upstream(oaddr),
        "--hot",
        "memory:64MiB",
        "--cold",
        &cold,
    ];
    let a = Proxy::start(&args);
    let b = Proxy::start(&args);
    let c = client();
    let first = until_hit(&c, a.addr, "/obj/8").await;
    // B reads A's fill from the bucket (a cold hit, promoted), then hits its own memory.
    assert_eq!(until_hit(&c, b.addr, "/obj/8").await, first);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let purged = post(&c, a.admin, "/purge?path=/obj/8", Bytes::new()).await;
    assert_eq!(purged.status, http::StatusCode::OK, "{}", purged.text());
    assert!(
        purged.text().contains("\"shared\":true"),
        "{}",
        purged.text()
    );
    // B applies the purge within its poll interval (1 s by default): a miss, then the new body.
    let mut refetched = None;
    for _ in 0..100 {
        let got = get(&c, b.addr, "/obj/8").await;
        if !got.cache_status().contains("; hit") {
            refetched = Some(got.text());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refetched = refetched.expect("B still served the purged entry after 5 s");
    assert_ne!(refetched, first, "B served the purged body");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
