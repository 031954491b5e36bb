//! Purges as an operator writes them (issue 17): a path prefix, not a whole-key prefix.
#![cfg(feature = "proxy")]

mod proxy_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing;
use bytes::Bytes;
use proxy_common::{client, get, post, upstream, Proxy};

async fn serve() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/{*rest}",
            routing::get(|State(c): State<Arc<AtomicUsize>>| async move {
                c.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", "max-age=600")], "body")
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

/// GETs `path` until it is a hit (the fill commits a moment after its body ends).
async fn until_hit(c: &proxy_common::TestClient, addr: SocketAddr, path: &str) {
    for _ in 0..100 {
        if get(c, addr, path).await.cache_status().contains("; hit") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{path} never became a hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_prefix_purge_removes_what_is_under_it_and_nothing_else() {
    let (oaddr, calls) = serve().await;
    let proxy = Proxy::start(&["--upstream", &upstream(oaddr)]);
    let c = client();
    for path in ["/obj/1", "/obj/2", "/other/3"] {
        until_hit(&c, proxy.addr, path).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let purged = post(&c, proxy.admin, "/purge?prefix=/obj/", Bytes::new()).await;
    assert_eq!(purged.status, http::StatusCode::OK, "{}", purged.text());
    // Summed over the tiers that held them (memory and disk by default).
    assert!(
        purged.text().contains("/obj/\",\"removed\":4"),
        "{}",
        purged.text()
    );
    for path in ["/obj/1", "/obj/2"] {
        let after = get(&c, proxy.addr, path).await;
        assert!(
            after.cache_status().contains("fwd=uri-miss"),
            "{path}: {}",
            after.cache_status()
        );
    }
    let kept = get(&c, proxy.addr, "/other/3").await;
    assert!(
        kept.cache_status().contains("; hit"),
        "{}",
        kept.cache_status()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}
