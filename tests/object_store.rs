//! `BucketStore` against a real S3-compatible server (moto, started by `scripts/s3-server.sh`).
//!
//! Run with:
//!
//! ```text
//! eval "$(bash scripts/s3-server.sh start)"
//! DARAMJWEE_S3_REQUIRED=1 cargo test --features aws --test object_store
//! bash scripts/s3-server.sh stop
//! ```
//!
//! Without `AWS_ENDPOINT` and `DARAMJWEE_S3_BUCKET` every test prints `SKIPPED` and returns; with
//! `DARAMJWEE_S3_REQUIRED=1` (as CI sets it) a missing server fails them instead. Each test works
//! under its own prefix, so they run in parallel on one bucket.
#![cfg(feature = "aws")]

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use daramjwee::store::{BucketStore, MemStore, Store, MIN_PART_SIZE};
use daramjwee::{Cache, EntryBody, Fetched, Metadata, Outcome, StoreError};
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

struct S3 {
    endpoint: String,
    bucket: String,
    prefix: String,
}

/// The server from the environment, or `None` (after saying so) when there is none.
fn s3(test: &str) -> Option<S3> {
    let endpoint = std::env::var("AWS_ENDPOINT").ok();
    let bucket = std::env::var("DARAMJWEE_S3_BUCKET").ok();
    match (endpoint, bucket) {
        (Some(endpoint), Some(bucket)) => {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            Some(S3 {
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                bucket,
                prefix: format!("{test}-{}-{nanos}", std::process::id()),
            })
        }
        _ if std::env::var("DARAMJWEE_S3_REQUIRED").as_deref() == Ok("1") => panic!(
            "DARAMJWEE_S3_REQUIRED=1 but AWS_ENDPOINT / DARAMJWEE_S3_BUCKET are unset: \
             run `eval \"$(bash scripts/s3-server.sh start)\"` first"
        ),
        _ => {
            // Written to stderr directly, past libtest's capture, so a skip is never silent.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no S3 server (set AWS_ENDPOINT and DARAMJWEE_S3_BUCKET, e.g. \
                 `eval \"$(bash scripts/s3-server.sh start)\"`)"
            );
            None
        }
    }
}

macro_rules! require_s3 {
    ($name:literal) => {
        match s3($name) {
            Some(s) => s,
            None => return,
        }
    };
}

impl S3 {
    fn builder(&self) -> daramjwee::store::BucketStoreBuilder {
        BucketStore::from_url(&format!("s3://{}/{}", self.bucket, self.prefix))
            .expect("s3 url")
            .part_size(MIN_PART_SIZE)
            .op_timeout(Duration::from_secs(20))
    }

    fn store(&self) -> BucketStore {
        self.builder().build().expect("build from env")
    }

    /// Keys of every object under this test's prefix.
    async fn objects(&self, store: &BucketStore) -> Vec<String> {
        let prefix = Path::from(self.prefix.as_str());
        let mut out: Vec<String> = store
            .object_store()
            .list(Some(&prefix))
            .map(|m| m.expect("list").location.to_string())
            .collect()
            .await;
        out.sort();
        out
    }

    /// In-progress multipart uploads under this test's prefix.
    ///
    /// object_store has no ListMultipartUploads, so this asks the server directly with a plain
    /// GET `?uploads`: moto does not check signatures, which keeps this free of a signer or a
    /// Python helper.
    async fn multipart_uploads(&self) -> usize {
        let hostport = self
            .endpoint
            .strip_prefix("http://")
            .expect("the test server speaks plain http");
        let mut conn = tokio::net::TcpStream::connect(hostport)
            .await
            .expect("connect to the S3 server");
        let req = format!(
            "GET /{}?uploads&prefix={} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n",
            self.bucket, self.prefix
        );
        conn.write_all(req.as_bytes()).await.expect("send");
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp).await.expect("receive");
        let resp = String::from_utf8_lossy(&resp);
        assert!(
            resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
            "ListMultipartUploads failed: {resp}"
        );
        assert!(resp.contains("ListMultipartUploadsResult"), "{resp}");
        resp.matches("<Upload>").count()
    }
}

fn body(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn meta() -> Metadata {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "text/plain".parse().unwrap());
    Metadata::new(http::StatusCode::OK)
        .with_headers(headers)
        .with_etag("\"v1\"")
}

async fn fill(store: &BucketStore, key: &str, data: &Bytes, meta: Metadata) {
    let mut w = store.put(key, meta).await.expect("put");
    for c in data.chunks(MIB) {
        w.write(data.slice_ref(c)).await.expect("write");
    }
    w.commit().await.expect("commit");
}

async fn read(store: &BucketStore, key: &str) -> Option<(Arc<Metadata>, Bytes)> {
    let e = store.get(key).await.expect("get")?;
    Some((e.meta, e.body.collect().await.expect("body")))
}

#[tokio::test]
async fn fill_then_get_returns_the_same_bytes() {
    let s3 = require_s3!("fill");
    let store = s3.store();
    for (key, len) in [("small", 1000), ("multipart", 12 * MIB + 3)] {
        let data = body(len);
        fill(&store, key, &data, meta()).await;
        let (m, got) = read(&store, key).await.expect("cold hit");
        assert_eq!(got.len(), data.len());
        assert!(got == data, "{key}: bytes differ");
        assert_eq!(m.content_length, Some(len as u64));
    }
    assert_eq!(
        s3.multipart_uploads().await,
        0,
        "completed uploads are not listed"
    );
}

#[tokio::test]
async fn head_returns_metadata_without_the_body() {
    let s3 = require_s3!("head");
    let store = s3.store();
    fill(&store, "k", &body(4321), meta()).await;
    // Delete the body behind the store's back: head must answer from the pointer alone.
    for p in s3.objects(&store).await {
        if p.ends_with(".body") {
            store.object_store().delete(&Path::from(p)).await.unwrap();
        }
    }
    let m = store.head("k").await.unwrap().expect("head");
    assert_eq!(m.content_length, Some(4321));
    assert_eq!(m.etag.as_deref(), Some("\"v1\""));
    assert_eq!(m.headers.get("content-type").unwrap(), "text/plain");
    assert!(store.get("k").await.unwrap().is_none(), "no body, no hit");
}

#[tokio::test]
async fn overwrite_serves_the_new_version_and_removes_the_old_body() {
    let s3 = require_s3!("overwrite");
    let store = s3.store();
    fill(&store, "k", &body(6 * MIB), meta()).await;
    let v2 = Bytes::from_static(b"version two");
    fill(&store, "k", &v2, meta().with_etag("\"v2\"")).await;
    let (m, got) = read(&store, "k").await.unwrap();
    assert_eq!(got, v2);
    assert_eq!(m.etag.as_deref(), Some("\"v2\""));
    let objs = s3.objects(&store).await;
    assert_eq!(objs.len(), 2, "one pointer, one body: {objs:?}");
}

#[tokio::test]
async fn delete_leaves_only_a_tombstone_pointer() {
    let s3 = require_s3!("delete");
    let store = s3.store();
    fill(&store, "k", &body(100), meta()).await;
    assert_eq!(s3.objects(&store).await.len(), 2);
    store.delete("k").await.unwrap();
    store.delete("k").await.unwrap();
    assert!(store.get("k").await.unwrap().is_none());
    // The body is gone; the pointer stays as a tombstone (the key's purge floor) until the
    // lifecycle rule or `clear` removes it.
    assert_eq!(
        s3.objects(&store).await,
        vec![store.meta_path("k").to_string()]
    );
    fill(&store, "k", &body(10), meta()).await;
    assert_eq!(read(&store, "k").await.unwrap().1, body(10));
}

#[tokio::test]
async fn update_metadata_keeps_the_body() {
    let s3 = require_s3!("update");
    let store = s3.store();
    let data = body(7000);
    fill(&store, "k", &data, meta()).await;
    assert!(store
        .update_metadata("k", meta().with_etag("\"v7\""))
        .await
        .unwrap());
    let (m, got) = read(&store, "k").await.unwrap();
    assert_eq!(got, data);
    assert_eq!(m.etag.as_deref(), Some("\"v7\""));
    assert_eq!(m.content_length, Some(7000));
    assert!(!store.update_metadata("absent", meta()).await.unwrap());
}

#[tokio::test]
async fn abort_mid_upload_leaves_no_object_and_no_multipart_upload() {
    let s3 = require_s3!("abort");
    let store = s3.store();
    let mut w = store
        .put("big", meta().with_content_length(20 * MIB as u64))
        .await
        .unwrap();
    for _ in 0..12 {
        w.write(body(MIB)).await.unwrap();
    }
    assert_eq!(s3.multipart_uploads().await, 1, "the upload is in progress");
    w.abort().await.unwrap();
    assert_eq!(s3.multipart_uploads().await, 0);
    assert_eq!(s3.objects(&store).await, Vec::<String>::new());
    assert!(store.get("big").await.unwrap().is_none());
}

#[tokio::test]
async fn dropped_writer_mid_upload_is_aborted_on_the_server() {
    let s3 = require_s3!("drop");
    let store = s3.store();
    let mut w = store.put("big", meta()).await.unwrap();
    for _ in 0..12 {
        w.write(body(MIB)).await.unwrap();
    }
    assert_eq!(s3.multipart_uploads().await, 1);
    drop(w);
    // The abort runs on a task spawned by Drop: poll for it, a bounded number of times.
    let mut left = 1;
    for _ in 0..100 {
        left = s3.multipart_uploads().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "dangling multipart upload");
    assert_eq!(s3.objects(&store).await, Vec::<String>::new());
}

#[tokio::test]
async fn entry_older_than_the_ttl_is_a_miss() {
    let s3 = require_s3!("ttl");
    let store = s3.builder().ttl(Duration::from_secs(3600)).build().unwrap();
    let mut old = meta();
    old.stored_at = SystemTime::now() - Duration::from_secs(2 * 3600);
    fill(&store, "old", &body(10), old).await;
    fill(&store, "new", &body(10), meta()).await;
    assert!(store.get("old").await.unwrap().is_none());
    assert!(store.head("old").await.unwrap().is_none());
    assert!(read(&store, "new").await.is_some());
}

#[tokio::test]
async fn two_stores_on_one_bucket_see_each_others_entries() {
    let s3 = require_s3!("shared");
    let a = s3.store();
    let b = s3.store();
    fill(&a, "k", &body(6 * MIB), meta()).await;
    assert!(read(&b, "k").await.unwrap().1 == body(6 * MIB));
    fill(&b, "k", &body(5), meta()).await;
    assert_eq!(read(&a, "k").await.unwrap().1, body(5));
    a.delete("k").await.unwrap();
    assert!(b.head("k").await.unwrap().is_none());
}

/// A server of its own, started and stopped through the script with a private state directory.
struct OwnServer {
    dir: tempfile::TempDir,
    endpoint: String,
    bucket: String,
}

impl OwnServer {
    fn script() -> std::process::Command {
        let mut c = std::process::Command::new("bash");
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-server.sh"));
        c
    }

    fn start() -> OwnServer {
        let dir = tempfile::tempdir().unwrap();
        let out = Self::script()
            .arg("start")
            .env("DARAMJWEE_S3_DIR", dir.path())
            .output()
            .expect("run scripts/s3-server.sh");
        assert!(
            out.status.success(),
            "s3-server.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} missing from: {stdout}"))
                .to_owned()
        };
        OwnServer {
            endpoint: var("AWS_ENDPOINT"),
            bucket: var("DARAMJWEE_S3_BUCKET"),
            dir,
        }
    }

    fn stop(&self) {
        let out = Self::script()
            .arg("stop")
            .env("DARAMJWEE_S3_DIR", self.dir.path())
            .output()
            .expect("run scripts/s3-server.sh");
        assert!(out.status.success());
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn stopped_server_makes_operations_fail_instead_of_hanging() {
    let _ = require_s3!("stopped");
    let server = OwnServer::start();
    let op_timeout = Duration::from_secs(2);
    let store = BucketStore::from_url(&format!("s3://{}/stopped", server.bucket))
        .unwrap()
        .option("aws_endpoint", &server.endpoint)
        .retry(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(1),
            ..RetryConfig::default()
        })
        .op_timeout(op_timeout)
        .part_size(MIN_PART_SIZE)
        .build()
        .unwrap();
    fill(&store, "k", &body(100), meta()).await;
    assert!(read(&store, "k").await.is_some());
    // A multipart upload that is running when the server goes away.
    let mut w = store.put("big", meta()).await.unwrap();
    for _ in 0..6 {
        w.write(body(MIB)).await.unwrap();
    }

    server.stop();

    // A guard, not a measurement: a hang fails here instead of stalling the suite.
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let failed = |r: Result<(), StoreError>| match r {
            Err(StoreError::Timeout { key, .. }) | Err(StoreError::Backend { key, .. }) => {
                key == "k" || key == "big"
            }
            _ => false,
        };
        assert!(failed(store.get("k").await.map(drop)), "get");
        assert!(failed(store.head("k").await.map(drop)), "head");
        assert!(failed(store.delete("k").await), "delete");
        assert!(
            failed(store.update_metadata("k", meta()).await.map(drop)),
            "update"
        );
        let mut small = store.put("k", meta()).await.unwrap();
        small.write(body(10)).await.unwrap();
        assert!(failed(small.commit().await), "commit");
        let mut r = Ok(());
        for _ in 0..6 {
            r = w.write(body(MIB)).await;
            if r.is_err() {
                break;
            }
        }
        let r = match r {
            Ok(()) => w.commit().await,
            Err(e) => Err(e),
        };
        assert!(failed(r), "multipart upload");
    })
    .await;
    assert!(outcome.is_ok(), "an operation hung on the stopped server");
}

// ---- The engine with a shared cold tier ----

/// An origin that counts its calls and answers `data` with a declared length.
fn origin(
    calls: &Arc<AtomicUsize>,
    data: Bytes,
) -> impl FnOnce(Option<Arc<Metadata>>) -> std::future::Ready<Result<Fetched, daramjwee::BoxError>>
       + Send
       + 'static {
    let calls = calls.clone();
    move |_prev| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Fetched::Entry {
            meta: Metadata::new(http::StatusCode::OK).with_content_length(data.len() as u64),
            body: EntryBody::from_bytes(data),
        }))
    }
}

fn never(
) -> impl FnOnce(Option<Arc<Metadata>>) -> std::future::Ready<Result<Fetched, daramjwee::BoxError>>
       + Send
       + 'static {
    |_| std::future::ready(Err("the origin must not be called".into()))
}

fn engine(cold: BucketStore) -> Cache {
    Cache::builder()
        .hot(
            MemStore::builder()
                .capacity(64 << 20)
                .max_object_size(16 << 20)
                .build(),
        )
        .cold(cold)
        .build()
}

/// Polls `store` until it holds `key`, a bounded number of times (background copies and
/// promotions commit after the body has been served).
async fn wait_for(store: &dyn Store, key: &str) -> bool {
    for _ in 0..200 {
        if matches!(store.head(key).await, Ok(Some(_))) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Two engines with their own hot tiers over one cold tier: the second serves what the first
/// fetched from the cold tier, without calling the origin, and promotes it into its hot tier.
async fn second_engine_serves_cold_hit(cold_a: BucketStore, cold_b: BucketStore, len: usize) {
    let data = body(len);
    let calls = Arc::new(AtomicUsize::new(0));
    let a = engine(cold_a.clone());
    let first = a.get("k", origin(&calls, data.clone())).await.unwrap();
    assert_eq!(first.outcome, Outcome::Miss);
    assert!(first.body.collect().await.unwrap() == data);
    assert!(
        wait_for(&cold_a, "k").await,
        "engine A copied the entry to the cold tier"
    );

    let b = engine(cold_b);
    let cold_hit = b.get("k", never()).await.unwrap();
    assert_eq!(
        cold_hit.outcome,
        Outcome::Hit {
            tier: 1,
            stale: false
        }
    );
    assert!(cold_hit.body.collect().await.unwrap() == data);
    let b_hot = b.tier_store(0).unwrap().clone();
    assert!(
        wait_for(b_hot.as_ref(), "k").await,
        "cold hit promoted into B's hot tier"
    );
    let hot_hit = b.get("k", never()).await.unwrap();
    assert_eq!(
        hot_hit.outcome,
        Outcome::Hit {
            tier: 0,
            stale: false
        }
    );
    assert!(hot_hit.body.collect().await.unwrap() == data);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one origin call for both engines"
    );
}

#[tokio::test]
async fn second_engine_serves_a_cold_hit_from_a_shared_in_memory_bucket() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    second_engine_serves_cold_hit(
        BucketStore::new(bucket.clone(), "shared"),
        BucketStore::new(bucket, "shared"),
        6 * MIB,
    )
    .await;
}

#[tokio::test]
async fn second_engine_serves_a_cold_hit_from_a_shared_s3_bucket() {
    let s3 = require_s3!("engines");
    second_engine_serves_cold_hit(s3.store(), s3.store(), 6 * MIB).await;
}

#[tokio::test]
async fn stopped_server_requests_are_answered_by_the_origin() {
    let _ = require_s3!("failopen");
    let server = OwnServer::start();
    let cold = BucketStore::from_url(&format!("s3://{}/failopen", server.bucket))
        .unwrap()
        .option("aws_endpoint", &server.endpoint)
        .retry(RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_millis(500),
            ..RetryConfig::default()
        })
        .op_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = engine(cold.clone());
    let warm = cache.get("warm", origin(&calls, body(100))).await.unwrap();
    assert_eq!(warm.body.collect().await.unwrap(), body(100));
    assert!(
        wait_for(&cold, "warm").await,
        "the cold tier worked before the stop"
    );

    server.stop();

    let guarded = tokio::time::timeout(Duration::from_secs(60), async {
        for key in ["a", "b"] {
            let got = cache.get(key, origin(&calls, body(1000))).await.unwrap();
            assert_eq!(got.outcome, Outcome::Miss);
            assert_eq!(got.body.collect().await.unwrap(), body(1000));
        }
    })
    .await;
    assert!(guarded.is_ok(), "a request hung on the stopped cold tier");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(cache.stats().store_errors >= 2, "{:?}", cache.stats());
}
