//! Memory bound: a body far larger than memory budgets streams through a miss into a
//! `FileStore` hot tier, then back out as a hit, and peak RSS stays flat.
//!
//! ```text
//! cargo bench --bench memory                               # 1 GiB (2 MiB under cargo test)
//! MEMORY_BENCH_BYTES=$((4<<30)) cargo bench --bench memory # any size
//! ```
//!
//! The origin generates the body on the fly in freshly allocated 64 KiB chunks (never held
//! whole; fresh buffers so that any chunk the pipeline kept would show up in RSS). A consumer
//! reads the `Lookup` body of the miss while the fill writes the file; then a second `get` is
//! a hit read back from disk. Peak RSS is the kernel's `VmHWM` from `/proc/self/status`, reset
//! between phases through `/proc/self/clear_refs` (Linux) so each phase reports its own peak.
//! Goal: under 64 MiB whatever the body size.
//!
//! `MEMORY_BENCH_DIR` picks the directory for the store (default: a temp dir); set it to a real
//! disk if `/tmp` is a tmpfs, whose pages would count as memory of the machine (not of this
//! process's RSS).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use daramjwee::store::FileStore;
use daramjwee::{BoxError, Cache, EntryBody, Fetched, Metadata, Outcome};
use futures_util::{stream, StreamExt};
use http::StatusCode;

const CHUNK: usize = 64 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

/// The byte at offset `pos` of the generated body (cheap to check on the way out).
fn pattern(pos: u64) -> u8 {
    (pos / 4096 % 251) as u8
}

/// A body of `len` bytes produced chunk by chunk.
fn generated(len: u64) -> EntryBody {
    let chunks = stream::unfold(0u64, move |pos| async move {
        if pos >= len {
            return None;
        }
        let n = CHUNK.min((len - pos) as usize);
        let mut buf = BytesMut::with_capacity(n);
        // Runs of 4 KiB share a byte value: a fill per run, not per byte.
        let mut p = pos;
        while p < pos + n as u64 {
            let run_end = ((p / 4096 + 1) * 4096).min(pos + n as u64);
            buf.resize(buf.len() + (run_end - p) as usize, pattern(p));
            p = run_end;
        }
        Some((Ok::<Bytes, daramjwee::Error>(buf.freeze()), pos + n as u64))
    });
    EntryBody::from_stream(chunks)
}

/// Reads a body to its end, checking each chunk's first byte against the pattern.
async fn consume(mut body: EntryBody) -> Result<u64, String> {
    let mut pos = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("body failed at {pos}: {e}"))?;
        if let Some(&b) = chunk.first() {
            if b != pattern(pos) {
                return Err(format!("wrong byte at {pos}"));
            }
        }
        pos += chunk.len() as u64;
    }
    Ok(pos)
}

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// Resets `VmHWM` to the current RSS (Linux: writing 5 to `clear_refs`).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and then it only smoke-tests the phases on a 2 MiB body.
    let benching = std::env::args().any(|a| a == "--bench");
    let len: u64 = std::env::var("MEMORY_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1 << 30 } else { 2 << 20 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(len))
}

async fn run(len: u64) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = match std::env::var("MEMORY_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d)?,
        Err(_) => tempfile::tempdir()?,
    };
    let store = FileStore::builder(dir.path())
        .capacity(len + (64 << 20))
        .open()
        .await?;
    let cache = Cache::builder()
        .hot(store)
        .idle_timeout(Duration::from_secs(600))
        .op_timeout(Duration::from_secs(600))
        .build();
    let key = "memory-bench/big-object";

    println!(
        "memory bench: {:.0} MiB body in {} KiB chunks, FileStore hot tier in {}",
        len as f64 / MIB,
        CHUNK / 1024,
        dir.path().display()
    );
    println!("RSS before: {}", mib(status_kib("VmRSS:")));
    let resettable = reset_peak();
    if !resettable {
        println!("(cannot reset VmHWM: the miss peak includes start-up)");
    }

    // Miss: origin -> (caller + file) at once.
    let t = Instant::now();
    let fetcher = move |_prev: Option<Arc<Metadata>>| async move {
        Ok::<_, BoxError>(Fetched::Entry {
            meta: Metadata::new(StatusCode::OK).with_content_length(len),
            body: generated(len),
        })
    };
    let miss = cache.get(key, fetcher).await?;
    assert_eq!(miss.outcome, Outcome::Miss);
    let got = consume(miss.body).await?;
    let miss_time = t.elapsed();
    assert_eq!(got, len, "the miss body is complete");
    let miss_peak = status_kib("VmHWM:");

    // The caller's body ends once the whole body is through; the commit (the file's fsync)
    // may still be running. Wait for it, and report how long it took beyond the miss.
    let hot = cache.tier_store(0).ok_or("no hot tier")?.clone();
    let mut stored = false;
    for _ in 0..6000 {
        if hot.head(key).await?.is_some() {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let commit_time = t.elapsed();

    reset_peak();
    let t = Instant::now();
    let hit = cache
        .get(key, |_prev: Option<Arc<Metadata>>| async {
            Err::<Fetched, BoxError>("a hit must not fetch".into())
        })
        .await?;
    let hit_outcome = hit.outcome;
    let got = consume(hit.body).await?;
    let hit_time = t.elapsed();
    assert_eq!(got, len, "the hit body is complete");
    let hit_peak = status_kib("VmHWM:");

    let rate = |d: Duration| len as f64 / MIB / d.as_secs_f64();
    println!(
        "miss: {:>8.2} s  {:>8.1} MiB/s  peak RSS {}  (stored in hot tier: {stored}, committed at {:.2} s)",
        miss_time.as_secs_f64(),
        rate(miss_time),
        mib(miss_peak),
        commit_time.as_secs_f64()
    );
    println!(
        "hit:  {:>8.2} s  {:>8.1} MiB/s  peak RSS {}  ({hit_outcome:?})",
        hit_time.as_secs_f64(),
        rate(hit_time),
        mib(hit_peak)
    );
    let worst = miss_peak.max(hit_peak).unwrap_or(0) as f64 / 1024.0;
    println!(
        "goal: peak RSS < 64 MiB -> {}",
        if worst < 64.0 { "met" } else { "NOT met" }
    );
    cache.close(Duration::from_secs(10)).await?;
    Ok(())
}
