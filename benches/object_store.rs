//! Streams one large object (256 MiB by default) through the engine with a disk hot tier and the
//! object-store cold tier, and prints throughput and peak RSS of each phase:
//!
//! 1. miss: origin → client, written through to the hot tier (disk) and the cold tier (bucket);
//! 2. cold hit on a second engine with an empty hot tier: bucket → client, promoted to its disk;
//! 3. `BucketStore::get` alone (pointer GET + body stream, no engine, no promotion);
//! 4. a plain `object_store` GET of the same body object, the baseline for phase 2.
//!
//! ```text
//! eval "$(bash scripts/s3-server.sh start)"
//! cargo bench --bench object_store --features aws            # s3://$DARAMJWEE_S3_BUCKET/bench-*
//! DARAMJWEE_BENCH_URL=file:///tmp/cold cargo bench --bench object_store --features aws
//! DARAMJWEE_BENCH_MIB=64 ...                                  # another object size
//! ```
//!
//! With `DARAMJWEE_BENCH_SMALL=1` it measures many small objects instead (10,000 × 1 KiB by
//! default, `DARAMJWEE_BENCH_N` and `DARAMJWEE_BENCH_BYTES` to change): the requests that N fills
//! and N cold reads send, each object its own objects and then packed, and the cold reads'
//! latency (see `object_store_support/small.rs`; `DARAMJWEE_BENCH_ONLY=packed` runs only the
//! modes whose name contains it).
//!
//! Peak RSS is the process high-water mark (`VmHWM`), reset before each phase through
//! `/proc/self/clear_refs` (Linux). The S3 server runs in its own process and is not counted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use daramjwee::store::{BucketStore, FileStore, Store};
use daramjwee::{Cache, ColdFill, EntryBody, Fetched, Metadata, Outcome};
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;

#[path = "object_store_support/counting.rs"]
mod counting;
#[path = "object_store_support/small.rs"]
mod small;

const CHUNK: usize = 64 << 10;
const MIB: f64 = 1024.0 * 1024.0;

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// An origin that produces `size` bytes in freshly allocated 64 KiB chunks, as a network body.
fn origin(
    size: usize,
) -> impl FnOnce(
    Option<std::sync::Arc<Metadata>>,
) -> std::future::Ready<Result<Fetched, daramjwee::BoxError>>
       + Send
       + 'static {
    move |_| {
        let chunks = (0..size.div_ceil(CHUNK)).map(move |i| {
            let len = CHUNK.min(size - i * CHUNK);
            Ok(Bytes::from(vec![(i % 251) as u8; len]))
        });
        std::future::ready(Ok(Fetched::Entry {
            meta: Metadata::new(http::StatusCode::OK).with_content_length(size as u64),
            body: EntryBody::from_stream(futures_util::stream::iter(chunks)),
        }))
    }
}

fn never() -> impl FnOnce(
    Option<std::sync::Arc<Metadata>>,
) -> std::future::Ready<Result<Fetched, daramjwee::BoxError>>
       + Send
       + 'static {
    |_| std::future::ready(Err("the origin must not be called".into()))
}

async fn drain<S, E>(mut body: S) -> Result<u64, E>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut n = 0;
    while let Some(chunk) = body.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}

async fn wait_for(store: &dyn Store, key: &str) -> Duration {
    let t = Instant::now();
    for _ in 0..6000 {
        if matches!(store.head(key).await, Ok(Some(_))) {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never appeared in the {} tier", store.name());
}

fn report(phase: &str, bytes: u64, took: Duration) -> f64 {
    let rate = bytes as f64 / MIB / took.as_secs_f64();
    println!(
        "{phase:<44} {:>8.1} MiB in {:>7.3} s = {rate:>8.1} MiB/s, peak RSS {}",
        bytes as f64 / MIB,
        took.as_secs_f64(),
        mib(proc_status_kib("VmHWM:"))
    );
    rate
}

async fn hot_tier(dir: &std::path::Path) -> FileStore {
    FileStore::builder(dir)
        .capacity(2 << 30)
        .max_object_size(1 << 30)
        .fsync(false)
        .open()
        .await
        .expect("open file store")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and
    // then it only smoke-tests the phases on a small object.
    let benching = std::env::args().any(|a| a == "--bench");
    let default_mib = if benching { 256 } else { 2 };
    let size = std::env::var("DARAMJWEE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default_mib)
        << 20;
    let url = std::env::var("DARAMJWEE_BENCH_URL").unwrap_or_else(|_| {
        match std::env::var("DARAMJWEE_S3_BUCKET") {
            Ok(bucket) if std::env::var("AWS_ENDPOINT").is_ok() => {
                format!("s3://{bucket}/bench-{}", std::process::id())
            }
            _ => format!(
                "file://{}",
                std::env::temp_dir().join("daramjwee-bench-cold").display()
            ),
        }
    });
    if std::env::var("DARAMJWEE_BENCH_SMALL").as_deref() == Ok("1") {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let n = var("DARAMJWEE_BENCH_N", if benching { 10_000 } else { 200 });
        small::run(&url, n, var("DARAMJWEE_BENCH_BYTES", 1024)).await;
        return;
    }
    let cold = BucketStore::from_url(&url)
        .expect("cold url")
        .op_timeout(Duration::from_secs(60))
        .build()
        .expect("cold store");
    cold.clear().await.expect("clear the bench prefix");
    let key = "bench/object";
    let dir_a = tempfile::tempdir().unwrap();
    let rss_reset = reset_peak();
    println!(
        "object {} MiB, cold tier {url}, baseline RSS {}{}",
        size >> 20,
        mib(proc_status_kib("VmRSS:")),
        if rss_reset {
            ""
        } else {
            " (peak RSS cannot be reset here: figures are cumulative)"
        }
    );

    // 1. Miss: origin → client, written through to disk and bucket.
    let a = Cache::builder()
        .hot(hot_tier(dir_a.path()).await)
        .cold(cold.clone())
        .cold_fill(ColdFill::WriteThrough)
        .build();
    reset_peak();
    let t = Instant::now();
    let miss = a.get(key, origin(size)).await.expect("miss");
    assert_eq!(miss.outcome, Outcome::Miss);
    let n = drain(miss.body).await.expect("miss body");
    let to_client = t.elapsed();
    let committed = to_client + wait_for(&cold, key).await;
    assert_eq!(n, size as u64);
    report("miss -> client (+ hot + cold write-through)", n, to_client);
    report("miss -> committed in hot and cold", n, committed);

    let prefix = cold.prefix().clone();
    let listed: Vec<Path> = cold
        .object_store()
        .list(Some(&prefix))
        .filter_map(|m| std::future::ready(m.ok().map(|m| m.location)))
        .collect()
        .await;
    let body_path = listed
        .into_iter()
        .find(|p| p.as_ref().ends_with(".body"))
        .expect("the body object");

    // Phases 2-4 alternate for a few rounds: on a shared machine one run of each is noise.
    let rounds = std::env::var("DARAMJWEE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(if benching { 3 } else { 1 })
        .max(1);
    let (mut cold_rates, mut plain_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        println!("-- round {round}/{rounds}");
        // 2. Cold hit on a second engine with an empty hot tier.
        let dir = tempfile::tempdir().unwrap();
        let b_hot = hot_tier(dir.path()).await;
        // Write-through so that the promotion does not schedule a background copy of the entry
        // back into the cold tier it came from (the engine does that with `ColdFill::Background`),
        // which would re-upload the object while the next phases measure.
        let b = Cache::builder()
            .hot(b_hot.clone())
            .cold(BucketStore::from_url(&url).unwrap().build().unwrap())
            .cold_fill(ColdFill::WriteThrough)
            .build();
        reset_peak();
        let t = Instant::now();
        let hit = b.get(key, never()).await.expect("cold hit");
        assert_eq!(
            hit.outcome,
            Outcome::Hit {
                tier: 1,
                stale: false
            }
        );
        let n = drain(hit.body).await.expect("cold hit body");
        let to_client = t.elapsed();
        let promoted = to_client + wait_for(&b_hot, key).await;
        assert_eq!(n, size as u64);
        cold_rates.push(report(
            "cold hit -> client (+ promotion to disk)",
            n,
            to_client,
        ));
        report("cold hit -> promoted", n, promoted);

        // 3. The store alone: what the engine and the promotion add is the difference to 2.
        reset_peak();
        let t = Instant::now();
        let entry = cold.get(key).await.expect("store get").expect("stored");
        let n = drain(entry.body).await.expect("store body");
        report("BucketStore::get alone (no engine)", n, t.elapsed());

        // 4. Baseline: a plain object_store GET of the body object.
        reset_peak();
        let t = Instant::now();
        let res = cold
            .object_store()
            .get(&body_path)
            .await
            .expect("plain get");
        let n = drain(res.into_stream()).await.expect("plain get body");
        plain_rates.push(report("plain object_store GET", n, t.elapsed()));
    }

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cold_rate, plain_rate) = (median(&mut cold_rates), median(&mut plain_rates));
    println!(
        "median over {rounds} rounds: cold hit {cold_rate:.1} MiB/s, plain GET {plain_rate:.1} MiB/s: \
         cold hit / plain GET = {:.2}x ({})",
        cold_rate / plain_rate,
        if plain_rate <= 2.0 * cold_rate {
            "within 2x"
        } else {
            "NOT within 2x"
        }
    );
    cold.clear().await.expect("clean up");
}
