//! The README's "Three ways to use it" snippets, compiled and run, and a check that the README
//! still shows exactly these lines (the README is not part of the crate docs, so its code
//! blocks are not doctests).
#![cfg(feature = "serde")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use daramjwee::Cache;
use http_body_util::BodyExt;

type Res = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn in_front_of_a_server() -> Res {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { server_snippet(listener).await.unwrap() });

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    // The first GET is a miss; the entry commits a moment after its body ended, so poll
    // (bounded) for the hit.
    for attempt in 0..100 {
        let res = client.get(format!("http://{addr}/report").parse()?).await?;
        let status = res.headers()["cache-status"].to_str()?.to_owned();
        assert_eq!(
            res.into_body().collect().await?.to_bytes(),
            "expensive report"
        );
        if status.contains("; hit") {
            assert!(attempt > 0, "the first request cannot be a hit");
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never a hit")
}

async fn server_snippet(listener: tokio::net::TcpListener) -> Res {
    // README begin: server
    use axum::{routing::get, Router};
    use daramjwee::{http::CacheLayer, store::MemStore, Cache};

    let cache = Cache::builder().hot(MemStore::new(256 << 20)).build();
    let report = || async { ([("cache-control", "max-age=60")], "expensive report") };
    let app: Router = Router::new()
        .route("/report", get(report))
        .layer(CacheLayer::new(cache));
    axum::serve(listener, app).await?;
    // README end
    Ok(())
}

/// An origin counting its calls.
async fn origin(calls: Arc<AtomicUsize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/",
        get(move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            ([("cache-control", "max-age=60")], "from the origin")
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn around_an_http_client() -> Res {
    let calls = Arc::new(AtomicUsize::new(0));
    let url = format!("http://{}/", origin(calls.clone()).await);
    let again = url.clone();
    // README begin: client
    use daramjwee::http::{CacheLayer, PolicyMode};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    use tower::ServiceExt;

    let layer = CacheLayer::builder(Cache::builder().build())
        .policy(PolicyMode::Private)
        .build();
    let client = layer.layer_service(Client::builder(TokioExecutor::new()).build_http());
    let req = http::Request::get(url).body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let res = client.oneshot(req).await?; // a second call is answered from the cache
                                          // README end
    assert_eq!(
        res.into_body().collect().await?.to_bytes(),
        "from the origin"
    );
    // The body ends a moment before the fill commits.
    while layer.cache().stats().fills_committed == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let client = layer.layer_service(Client::builder(TokioExecutor::new()).build_http());
    let req = http::Request::get(again).body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let res = client.oneshot(req).await?;
    assert!(res.headers()["cache-status"].to_str()?.contains("; hit"));
    assert_eq!(
        res.into_body().collect().await?.to_bytes(),
        "from the origin"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct User {
    id: u64,
    name: String,
}

async fn load_user(id: u64) -> Result<User, std::io::Error> {
    Ok(User {
        id,
        name: "dotori".into(),
    })
}

async fn find_user(_id: u64) -> Result<Option<User>, std::io::Error> {
    Ok(None)
}

#[tokio::test]
async fn typed_values() -> Res {
    // README begin: typed
    use daramjwee::typed::TypedCache;

    let users: TypedCache<User> = TypedCache::new(Cache::builder().build()).schema("user/v1");
    let user = users.get_or_fetch("user:42", || load_user(42)).await?; // one fetch per key
    let none = users
        .get_or_fetch_optional("user:0", || find_user(0))
        .await?; // kept as not-found
                 // README end
    assert_eq!(user.name, "dotori");
    assert_eq!(none, None);
    Ok(())
}

/// The lines between `// README begin: NAME` and `// README end` in this file.
fn snippet(source: &str, name: &str) -> Vec<String> {
    let begin = format!("// README begin: {name}");
    source
        .lines()
        .skip_while(|l| l.trim() != begin)
        .skip(1)
        .take_while(|l| l.trim() != "// README end")
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The README's `rust` code blocks, trimmed line by line.
fn readme_blocks(readme: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in readme.lines() {
        match (&mut current, line.trim()) {
            (None, l) if l.starts_with("```rust") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), l) => b.push(l.to_owned()),
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_shows_these_snippets_verbatim() {
    let source = include_str!("readme_snippets.rs");
    let blocks = readme_blocks(include_str!("../README.md"));
    for name in ["server", "client", "typed"] {
        let code = snippet(source, name);
        assert!(code.len() > 3, "snippet {name} not found");
        assert!(
            blocks.contains(&code),
            "README.md has no code block equal to snippet {name}:\n{}",
            code.join("\n")
        );
    }
}
