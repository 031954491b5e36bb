//! Unit tests of the parent module.

use super::*;
use crate::config::Settings;
use std::sync::atomic::Ordering;

fn parts(host: Option<&str>, path: &str) -> Parts {
    let mut b = Request::get(path);
    if let Some(h) = host {
        b = b.header(header::HOST, h);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn prefix_matches_only_at_segment_boundaries() {
    assert!(prefix_matches("/", "/anything"));
    assert!(prefix_matches("/api", "/api"));
    assert!(prefix_matches("/api", "/api/x"));
    assert!(!prefix_matches("/api", "/apix"));
}

#[tokio::test]
async fn sites_are_picked_by_host_ignoring_case_and_port_then_by_longest_prefix() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sites.toml");
    std::fs::write(
        &path,
        r#"
        [defaults]
        upstream = "http://127.0.0.1:1"
        hot = "memory:1MiB"
        cold = "none"
        [[site]]
        name = "any"
        [[site]]
        name = "api"
        prefix = "/api"
        [[site]]
        name = "b"
        host = "B.example"
        "#,
    )
    .unwrap();
    let cli = crate::config::Cli::parse_from(["daramjwee", "--config", path.to_str().unwrap()]);
    let settings = Settings::load(&cli).unwrap();
    let workers = WorkerRuntime::new(1);
    let mut sites = Vec::new();
    for s in settings.sites {
        sites.push(Arc::new(Site::open(s, &workers).await.unwrap()));
    }
    let router = Router::new(sites);
    let name = |host: Option<&str>, path: &str| {
        router
            .pick(&parts(host, path))
            .map(|s| s.settings.name.clone())
    };
    assert_eq!(name(Some("b.EXAMPLE:8080"), "/api/x").as_deref(), Some("b"));
    assert_eq!(name(Some("b.example"), "/").as_deref(), Some("b"));
    assert_eq!(name(Some("c.example"), "/api/x").as_deref(), Some("api"));
    assert_eq!(name(None, "/apix").as_deref(), Some("any"));
}

#[test]
fn request_ids_are_the_prefix_and_a_counter() {
    let ids = RequestIds::new();
    let a = ids.make();
    let b = ids.make();
    let prefix = ids.prefix.to_string();
    assert_eq!(a, format!("{prefix}-1").as_str());
    assert_eq!(b, format!("{prefix}-2").as_str());
    ids.next.store(u64::MAX, Ordering::Relaxed);
    assert_eq!(ids.make(), format!("{prefix}-{}", u64::MAX).as_str());
    // Ids cut from one block stay whole once it is replaced.
    ids.next.store(1, Ordering::Relaxed);
    let many: Vec<_> = (0..1000).map(|_| ids.make()).collect();
    for (i, id) in many.iter().enumerate() {
        assert_eq!(id, format!("{prefix}-{}", i + 1).as_str());
    }
}

#[test]
fn request_host_drops_port() {
    let host = |h: Option<&str>| {
        let p = parts(h, "/");
        request_host(&p.uri, &p.headers).map(str::to_owned)
    };
    assert_eq!(
        host(Some("Example.COM:8080")).as_deref(),
        Some("Example.COM")
    );
    assert_eq!(host(Some("[::1]:80")).as_deref(), Some("::1"));
    assert_eq!(host(None), None);
}
