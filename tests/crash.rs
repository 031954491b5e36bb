//! Crash consistency of the file tier: a worker process fills a `FileStore` through the engine
//! with many concurrent writers and is killed with SIGKILL at random moments; after every kill
//! the store is reopened and every entry it serves must be byte-identical to what the origin
//! would have sent, with no temp file left behind.
//!
//! The worker is this test binary itself, re-run with `DARAMJWEE_CRASH_WORKER` set.
//! `DARAMJWEE_CRASH_KILLS` sets the number of kills (default 50).

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use daramjwee::store::{FileStore, Store};
use daramjwee::{Cache, EntryBody, Error, Fetched, Metadata};
use http::{HeaderValue, StatusCode};

/// The body the origin sends for `key` at `version`: deterministic, 1 KiB to ~600 KiB.
fn body_of(key: u32, version: u32) -> Vec<u8> {
    let len = 1024 + ((key as usize * 7919 + version as usize * 104_729) % (600 * 1024));
    let mut state = (key as u64) << 32 | version as u64 | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn open(dir: &Path) -> FileStore {
    FileStore::builder(dir)
        .capacity(64 << 20)
        .open()
        .await
        .expect("the store opens after a crash")
}

/// Never returns: fills, overwrites and deletes until killed.
async fn worker(dir: &Path) {
    let cache = Cache::builder().hot(open(dir).await).build();
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            let mut n: u32 = t.wrapping_mul(2_654_435_761);
            loop {
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let key = (n >> 8) % 64;
                let version = n >> 20;
                let name = format!("key-{key}");
                match n % 7 {
                    0 => {
                        let _ = cache.delete(&name).await;
                    }
                    1 => {
                        // A set streamed in chunks.
                        let body = body_of(key, version);
                        let meta = versioned(version, body.len());
                        if let Ok(mut w) = cache.set(&name, meta).await {
                            for c in body.chunks(16 * 1024) {
                                let _ = w.write(Bytes::copy_from_slice(c)).await;
                            }
                            let _ = w.commit().await;
                        }
                    }
                    _ => {
                        let _ = cache.delete(&name).await;
                        let fetch = move |_prev: Option<Arc<Metadata>>| async move {
                            let body = body_of(key, version);
                            let meta = versioned(version, body.len());
                            let chunks: Vec<Result<Bytes, Error>> = body
                                .chunks(8 * 1024)
                                .map(|c| Ok(Bytes::copy_from_slice(c)))
                                .collect();
                            Ok::<_, daramjwee::BoxError>(Fetched::Entry {
                                meta,
                                body: EntryBody::from_stream(futures_util::stream::iter(chunks)),
                            })
                        };
                        if let Ok(l) = cache.get(&name, fetch).await {
                            let _ = l.body.collect().await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn versioned(version: u32, len: usize) -> Metadata {
    let mut meta = Metadata::new(StatusCode::OK).with_content_length(len as u64);
    meta.headers
        .insert("x-version", HeaderValue::from(version as u64));
    meta
}

/// Every entry the reopened store holds must be exactly the origin's body for its version.
async fn verify(dir: &Path) -> (usize, usize) {
    let store = open(dir).await;
    let leftover_temp = std::fs::read_dir(dir.join("tmp")).map_or(0, |d| d.count());
    assert_eq!(leftover_temp, 0, "temp files survived the reopen");
    let (mut good, mut bad) = (0, 0);
    for key in 0..64u32 {
        let name = format!("key-{key}");
        let Some(entry) = store.get(&name).await.unwrap() else {
            continue;
        };
        let version: u32 = entry.meta.headers["x-version"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        match entry.body.collect().await {
            Ok(body) if body.as_ref() == body_of(key, version).as_slice() => good += 1,
            // A corrupt file must be reported as an error, never served: count it as bad
            // only if it was served as complete.
            Ok(_) => bad += 1,
            Err(_) => {}
        }
    }
    assert_eq!(
        store.len(),
        Some(good as u64 + bad as u64),
        "index and files disagree"
    );
    (good, bad)
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_wrong_body() {
    if let Ok(dir) = std::env::var("DARAMJWEE_CRASH_WORKER") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(worker(Path::new(&dir)));
        return;
    }
    let kills: usize = std::env::var("DARAMJWEE_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut total_good, mut total_bad) = (0, 0);
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_at_random_moments_never_leaves_a_wrong_body",
                "--nocapture",
            ])
            .env("DARAMJWEE_CRASH_WORKER", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(30 + rng % 300));
        // SIGKILL: no destructor, no flush, no cleanup.
        child.kill().unwrap();
        child.wait().unwrap();
        let (good, bad) = rt.block_on(verify(dir.path()));
        total_good += good;
        total_bad += bad;
        assert_eq!(
            bad, 0,
            "round {round}: a wrong body was served after a crash"
        );
    }
    eprintln!(
        "crash harness: {kills} kills survived, {total_good} entries verified byte-identical, {total_bad} bad"
    );
    assert!(
        total_good > 0,
        "the harness never stored anything: it tested nothing"
    );
}
