//! Reloading the configuration on SIGHUP (issue 16), through the binary's real listener: under
//! load, with no failed request; the kept site keeps its cache; a bad file is refused and the
//! running configuration keeps serving.
#![cfg(feature = "proxy")]

mod proxy_common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing;
use proxy_common::{client, get, run_to_exit, Proxy, TestClient};

async fn serve_origin(tag: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/{*rest}",
            routing::get(move |State(c): State<Arc<AtomicUsize>>| async move {
                c.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", "max-age=60")], tag)
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

fn write_config(path: &Path, a: SocketAddr, generation: u32, extra: &str) {
    std::fs::write(
        path,
        format!(
            r#"
            [[site]]
            name = "web"
            upstream = "http://{a}"
            hot = "memory:8MiB"
            cold = "none"
            response_headers = [{{ set = "x-gen", value = "{generation}" }}]
            {extra}
            "#
        ),
    )
    .unwrap();
}

/// Requests from `tasks` clients in a loop until `stop`; counts the answers that were not 200.
fn load(
    c: &TestClient,
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    tasks: usize,
) -> Vec<tokio::task::JoinHandle<(usize, usize)>> {
    (0..tasks)
        .map(|t| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/load/{}", (i * 7 + t) % 40);
                    match c.get(format!("http://{addr}{path}").parse().unwrap()).await {
                        Ok(r) if r.status() == 200 => {
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                            ok += 1;
                        }
                        _ => failed += 1,
                    }
                    i += 1;
                }
                (ok, failed)
            })
        })
        .collect()
}

/// Polls (bounded) until `done` holds for the proxy's answer to `path`.
async fn wait_for(
    c: &TestClient,
    proxy: &Proxy,
    path: &str,
    done: impl Fn(&proxy_common::Got) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(c, proxy.addr, path).await;
        if done(&r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reload not seen; stderr:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_under_load_without_a_failed_request() {
    let (a, a_calls) = serve_origin("from-a").await;
    let (b, _) = serve_origin("from-b").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("proxy.toml");
    write_config(&cfg, a, 1, "");
    let proxy = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    let c = client();
    assert_eq!(get(&c, proxy.addr, "/kept").await.text(), "from-a");

    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&c, proxy.addr, &stop, 4);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let api = format!(
        "[[site]]\nname = \"api\"\nprefix = \"/api\"\nupstream = \"http://{b}\"\ncold = \"none\""
    );
    write_config(&cfg, a, 2, &api);
    proxy.signal("-HUP");
    wait_for(&c, &proxy, "/", |r| {
        r.headers.get("x-gen").is_some_and(|v| v == "2")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed += f;
    }
    assert_eq!(failed, 0, "{ok} ok");
    assert!(ok > 0);

    // The site kept its cache: what it stored before the reload is a hit after it, answered
    // with the new response rules.
    let calls = a_calls.load(Ordering::SeqCst);
    let kept = get(&c, proxy.addr, "/kept").await;
    assert!(
        kept.cache_status().contains("; hit"),
        "{}",
        kept.cache_status()
    );
    assert_eq!(
        (kept.text().as_str(), &kept.headers["x-gen"]),
        ("from-a", &"2".parse::<http::HeaderValue>().unwrap())
    );
    assert_eq!(a_calls.load(Ordering::SeqCst), calls);
    assert_eq!(
        get(&c, proxy.addr, "/api/x").await.text(),
        "from-b",
        "the new site routes"
    );

    // A bad file is refused, logged, and the running configuration keeps serving.
    std::fs::write(
        &cfg,
        "[[site]]\nname = \"web\"\nupstream = \"http://h\"\neviction = \"fifo\"\n",
    )
    .unwrap();
    proxy.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.stderr().contains("configuration reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        proxy.stderr().contains("eviction: `fifo`"),
        "{}",
        proxy.stderr()
    );
    let r = get(&c, proxy.addr, "/api/x").await;
    assert_eq!((r.text().as_str(), r.status.as_u16()), ("from-b", 200));
}

#[test]
fn check_validates_a_file_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    write_config(&good, "127.0.0.1:1".parse().unwrap(), 1, "");
    let (status, stderr) = run_to_exit(&["--check", good.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[site]]\nname = \"a\"\nupstream = \"https://h\"\nca_file = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let (status, stderr) = run_to_exit(&["--check", bad.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("site `a`: ca_file /nonexistent/ca.pem"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_tier_whose_settings_changed_is_refused_until_a_restart() {
    let (a, _) = serve_origin("from-a").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("proxy.toml");
    let write = |eviction: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[[site]]\nname = \"web\"\nupstream = \"http://{a}\"\n\
                 cold = \"file:{}:1MiB\"\neviction = \"{eviction}\"\n",
                dir.path().join("cold").display()
            ),
        )
        .unwrap();
    };
    write("lru");
    let proxy = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    let c = client();
    assert_eq!(get(&c, proxy.addr, "/x").await.text(), "from-a");
    write("sieve");
    proxy.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.stderr().contains("configuration reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        proxy
            .stderr()
            .contains("site `web`: its cache settings changed and its tiers persist"),
        "{}",
        proxy.stderr()
    );
    let r = get(&c, proxy.addr, "/x").await;
    assert!(
        r.cache_status().contains("; hit"),
        "still serving: {}",
        r.cache_status()
    );
}
