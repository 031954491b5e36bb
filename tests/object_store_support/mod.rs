//! What the multi-instance object-store tests share: the S3-compatible server from the
//! environment (see `tests/object_store.rs` for how to start it), engines over it, and bucket
//! inspection.
#![allow(dead_code)] // each test crate uses a part

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use daramjwee::store::{BucketStore, MemStore, Store, MIN_PART_SIZE};
use daramjwee::{Cache, ColdFill, EntryBody, Fetched, Metadata};
use futures_util::StreamExt;
use object_store::path::Path;

/// The server and a prefix of this test's own.
pub struct S3 {
    pub bucket: String,
    pub prefix: String,
}

/// The server from the environment, or `None` (after saying so) when there is none.
pub fn s3(test: &str) -> Option<S3> {
    let endpoint = std::env::var("AWS_ENDPOINT").ok();
    let bucket = std::env::var("DARAMJWEE_S3_BUCKET").ok();
    match (endpoint, bucket) {
        (Some(_), Some(bucket)) => {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            Some(S3 {
                bucket,
                prefix: format!("{test}-{}-{nanos}", std::process::id()),
            })
        }
        _ if std::env::var("DARAMJWEE_S3_REQUIRED").as_deref() == Ok("1") => panic!(
            "DARAMJWEE_S3_REQUIRED=1 but AWS_ENDPOINT / DARAMJWEE_S3_BUCKET are unset: \
             run `eval \"$(bash scripts/s3-server.sh start)\"` first"
        ),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no S3 server (set AWS_ENDPOINT and DARAMJWEE_S3_BUCKET)"
            );
            None
        }
    }
}

#[macro_export]
macro_rules! require_s3 {
    ($name:literal) => {
        match object_store_support::s3($name) {
            Some(s) => s,
            None => return,
        }
    };
}

impl S3 {
    /// A store with a client of its own (as another process would have).
    pub fn store(&self) -> BucketStore {
        BucketStore::from_url(&format!("s3://{}/{}", self.bucket, self.prefix))
            .expect("s3 url")
            .part_size(MIN_PART_SIZE)
            .op_timeout(Duration::from_secs(20))
            .build()
            .expect("build from env")
    }

    /// A store that packs bodies up to 64 KiB (flushed after 50 ms, others' packs looked for
    /// every 100 ms).
    pub fn packed_store(&self) -> BucketStore {
        let packing = daramjwee::store::Packing::new(64 << 10)
            .flush_after(Duration::from_millis(50))
            .refresh(Duration::from_millis(100));
        BucketStore::from_url(&format!("s3://{}/{}", self.bucket, self.prefix))
            .expect("s3 url")
            .op_timeout(Duration::from_secs(20))
            .packing(packing)
            .build()
            .expect("build from env")
    }

    /// Every object under this test's prefix.
    pub async fn objects(&self, store: &BucketStore) -> Vec<String> {
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
}

pub fn body(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

/// An engine with a memory hot tier over `cold`, writing the cold tier through (so a fill's
/// cold commit is done when the fill is).
pub fn engine(cold: BucketStore) -> Cache {
    Cache::builder()
        .hot(MemStore::builder().capacity(64 << 20).build())
        .cold(cold)
        .cold_fill(ColdFill::WriteThrough)
        .default_ttl(Duration::from_secs(3600))
        .build()
}

/// An origin that counts its calls and answers `data`.
pub fn origin(
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

/// Reads `key` through `cache`, with `origin` answering a miss: the body served.
pub async fn serve(cache: &Cache, key: &str, calls: &Arc<AtomicUsize>, data: Bytes) -> Bytes {
    let got = cache.get(key, origin(calls, data)).await.expect("get");
    got.body.collect().await.expect("body")
}

/// Polls `store` until `key` is present (or absent), a bounded number of times.
pub async fn wait_presence(store: &dyn Store, key: &str, present: bool) -> bool {
    for _ in 0..200 {
        if matches!(store.head(key).await, Ok(Some(_))) == present {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
