//! Large objects through the `daramjwee` binary with its default configuration (issue 20): a
//! 1 GiB object is cached in the cold tier on its first miss and served from there; one larger
//! than every tier streams unstored, is counted, and is not a store error.
#![cfg(feature = "proxy")]

mod large_common;
mod proxy_common;

use std::net::SocketAddr;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use large_common::{get_checked, origin, Calls, TestClient, MIB};
use proxy_common::{client, get, upstream, Proxy};
use serde_json::Value;

async fn start_origin() -> (SocketAddr, Calls) {
    let (app, calls) = origin();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

fn big_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The default site's `/stats`, once its fills have committed `fills` entries (bounded wait).
async fn stats_after(proxy: &Proxy, fills: u64) -> Value {
    let c = client();
    for _ in 0..500 {
        let body = get(&c, proxy.admin, "/stats").await.body;
        let v: Value = serde_json::from_slice(&body).unwrap();
        let site = v["sites"]["default"].clone();
        if site["fills_committed"].as_u64() >= Some(fills) {
            return site;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{fills} fills never committed");
}

/// Miss then hit, every byte checked: the hit comes from the cold (file) tier, one origin call.
async fn cached_in_cold(proxy: &Proxy, calls: &Calls, path: &str, size: u64) {
    let c = big_client();
    let miss = get_checked(&c, proxy.addr, path, None).await;
    assert_eq!((miss.status.as_u16(), miss.len), (200, size));
    assert!(
        miss.cache_status().contains("stored"),
        "{}",
        miss.cache_status()
    );
    let before = calls.get();
    stats_after(proxy, 1).await;
    let hit = get_checked(&c, proxy.addr, path, None).await;
    assert_eq!(hit.len, size);
    let status = hit.cache_status();
    assert!(
        status.contains("; hit;") && status.ends_with("detail=file"),
        "{status}"
    );
    assert_eq!(calls.get(), before);
}

#[tokio::test]
async fn the_default_configuration_caches_1_gib_in_the_cold_tier_on_the_first_miss() {
    let (origin, calls) = start_origin().await;
    let proxy = Proxy::start(&["--upstream", &upstream(origin)]);
    cached_in_cold(&proxy, &calls, "/cl/1024", 1024 * MIB).await;
    let site = stats_after(&proxy, 1).await;
    assert_eq!(site["tiers"][0]["fills"], 0, "{site}");
    assert_eq!(site["tiers"][1]["fills"], 1, "{site}");
    assert_eq!(
        (site["store_errors"].as_u64(), site["too_large"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn a_chunked_100_mib_object_moves_to_the_cold_tier_mid_stream() {
    let (origin, calls) = start_origin().await;
    let proxy = Proxy::start(&["--upstream", &upstream(origin)]);
    cached_in_cold(&proxy, &calls, "/chunked/100", 100 * MIB).await;
    let site = stats_after(&proxy, 1).await;
    assert_eq!(site["fills_committed"], 1, "{site}");
    assert_eq!(site["tiers"][1]["fills"], 1, "{site}");
    assert_eq!((site["store_errors"].as_u64(), calls.get()), (Some(0), 1));
}

#[tokio::test]
async fn an_object_larger_than_every_tier_streams_unstored_and_is_counted() {
    let (origin, calls) = start_origin().await;
    let args = [
        "--upstream",
        &upstream(origin),
        "--cold-max-object-size",
        "512MiB",
    ];
    let proxy = Proxy::start(&args);
    let c = big_client();
    for round in 1..=2 {
        let got = get_checked(&c, proxy.addr, "/cl/1024", None).await;
        assert_eq!(got.len, 1024 * MIB);
        let status = got.cache_status();
        assert!(
            status.contains("fwd=uri-miss") && status.contains("detail=too-large"),
            "{status}"
        );
        assert_eq!(calls.get(), round);
    }
    let site = stats_after(&proxy, 0).await;
    assert_eq!(site["too_large"], 2, "{site}");
    assert_eq!(
        (
            site["fills_committed"].as_u64(),
            site["store_errors"].as_u64()
        ),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn write_through_fills_both_tiers_as_the_body_streams() {
    let (origin, calls) = start_origin().await;
    let args = [
        "--upstream",
        &upstream(origin),
        "--cold-fill",
        "write-through",
    ];
    let proxy = Proxy::start(&args);
    let c = big_client();
    let miss = get_checked(&c, proxy.addr, "/cl/1", None).await;
    assert_eq!(miss.len, MIB);
    let site = stats_after(&proxy, 2).await;
    assert_eq!(
        (
            site["tiers"][0]["fills"].as_u64(),
            site["tiers"][1]["fills"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(calls.get(), 1);
}
