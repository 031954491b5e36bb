//! Engine `get` cost per lookup: fresh hot hit, stale hot hit, cold-tier hit, miss.
//!
//! ```text
//! cargo bench --bench engine -- --measurement-time 3 --warm-up-time 1
//! ```
//!
//! Every case times `cache.get(key, fetcher)` *and* draining the returned body (1 KiB), on a
//! current-thread tokio runtime, so work the lookup hands to spawned tasks (promotions, fills) is
//! on the clock too. A counting global allocator counts heap allocations inside the timed loop;
//! after criterion's own report the bench prints a table of mean ns/op and allocations/op.
//!
//! How each case is set up:
//! - **fresh hot hit**: the key sits in a hot `MemStore`, no TTL.
//! - **stale hot hit**: `default_ttl` of 1 ns, so every lookup finds the entry stale and serves it
//!   at once. The first lookup schedules a refresh whose fetcher never answers (idle timeout and
//!   lock age of a day), so every measured lookup takes the "refresh already in flight" path:
//!   the steady state of a hot key under load, where one refresh runs and every other request
//!   is a stale hit. The cost of running the refresh itself is not included.
//! - **cold hit**: the hot tier's `max_object_size` (512 B) is smaller than the body, so each
//!   lookup misses hot, reads the cold `MemStore`, and starts a promotion that the hot tier
//!   refuses: every iteration is a real cold read, and pays what a cold hit of an object that
//!   never fits the hot tier pays (the promotion task streams the body to the caller).
//! - **miss**: a new key every iteration (keys made before the clock starts); the fetcher
//!   answers a 1 KiB static body at once, and the fill commits it to the hot tier.
//! - **store put** (group `mem_store_put_1KiB`): a full 256 MiB `MemStore` alone takes a new
//!   entry (put, write, commit, and the eviction that makes room) with the six fields of a
//!   typical response, in a header map with room for what an answer adds, as the layer's
//!   fills give it: what storing costs past the engine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, Criterion};
use daramjwee::store::{MemStore, Store};
use daramjwee::{BoxError, Cache, EntryBody, Fetched, Metadata};
use futures_util::StreamExt;
use http::StatusCode;

/// Counts allocations (alloc, alloc_zeroed, realloc) of the whole process.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BODY_LEN: usize = 1024;
static BODY: [u8; BODY_LEN] = [b'x'; BODY_LEN];

/// Totals of the timed loops of one case, over warm-up and measurement.
#[derive(Clone, Copy)]
struct Tally {
    iters: u64,
    nanos: u128,
    allocs: u64,
    /// Fastest ns/op of one timed loop (criterion sample): the least disturbed by other load.
    best: f64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            iters: 0,
            nanos: 0,
            allocs: 0,
            best: f64::INFINITY,
        }
    }
}

static TALLIES: Mutex<Vec<(&'static str, Tally)>> = Mutex::new(Vec::new());

fn record(case: &'static str, iters: u64, elapsed: Duration, allocs: u64) {
    let mut t = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
    let slot = match t.iter().position(|(c, _)| *c == case) {
        Some(i) => &mut t[i].1,
        None => {
            t.push((case, Tally::default()));
            &mut t.last_mut().expect("just pushed").1
        }
    };
    slot.iters += iters;
    slot.nanos += elapsed.as_nanos();
    slot.allocs += allocs;
    if iters > 0 {
        slot.best = slot.best.min(elapsed.as_nanos() as f64 / iters as f64);
    }
}

type Fut = std::future::Ready<Result<Fetched, BoxError>>;

fn entry() -> Fetched {
    Fetched::Entry {
        meta: Metadata::new(StatusCode::OK).with_content_length(BODY_LEN as u64),
        body: EntryBody::from_bytes(Bytes::from_static(&BODY)),
    }
}

/// The origin for misses: a static 1 KiB body, at once.
fn origin(_prev: Option<Arc<Metadata>>) -> Fut {
    std::future::ready(Ok(entry()))
}

/// For hits: must not be called.
fn never(_prev: Option<Arc<Metadata>>) -> Fut {
    std::future::ready(Err("a hit must not fetch".into()))
}

/// Reads a body to its end without copying it; returns its length.
async fn drain(mut body: EntryBody) -> usize {
    let mut n = 0;
    while let Some(chunk) = body.next().await {
        n += chunk.map_or(0, |c| c.len());
    }
    n
}

async fn put(store: &dyn Store, key: &str) {
    let mut w = store
        .put(
            key,
            Metadata::new(StatusCode::OK).with_content_length(BODY_LEN as u64),
        )
        .await
        .expect("put");
    w.write(Bytes::from_static(&BODY)).await.expect("write");
    w.commit().await.expect("commit");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Times `iters` lookups of `key` (or of fresh keys when `key` is `None`).
async fn timed(
    case: &'static str,
    cache: &Cache,
    key: Option<&'static str>,
    iters: u64,
) -> Duration {
    let keys: Vec<String> = match key {
        Some(_) => Vec::new(),
        None => {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let base = NEXT.fetch_add(iters, Ordering::Relaxed);
            (base..base + iters)
                .map(|i| format!("miss/{i:016x}"))
                .collect()
        }
    };
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut fresh = keys.iter();
    for _ in 0..iters {
        let lookup = match key {
            Some(k) => cache.get(k, never).await,
            None => {
                cache
                    .get(fresh.next().expect("one key per iteration"), origin)
                    .await
            }
        };
        let lookup = lookup.expect("lookup");
        black_box(drain(lookup.body).await);
    }
    let elapsed = start.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    drop(keys);
    record(case, iters, elapsed, allocs);
    elapsed
}

fn engine(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("engine_get_1KiB");

    // Fresh hot hit.
    let fresh = rt.block_on(async {
        let cache = Cache::builder().hot(MemStore::new(64 << 20)).build();
        put(cache.tier_store(0).expect("hot").as_ref(), "hot").await;
        cache
    });
    g.bench_function("fresh_hot_hit", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed("fresh hot hit", &fresh, Some("hot"), iters))
    });

    // Stale hot hit with its refresh in flight.
    let stale = rt.block_on(async {
        let cache = Cache::builder()
            .hot(MemStore::new(64 << 20))
            .default_ttl(Duration::from_nanos(1))
            .idle_timeout(Duration::from_secs(86_400))
            .lock_age(Duration::from_secs(86_400))
            .build();
        put(cache.tier_store(0).expect("hot").as_ref(), "stale").await;
        let first = cache
            .get("stale", |_prev| {
                std::future::pending::<Result<Fetched, BoxError>>()
            })
            .await
            .expect("stale lookup");
        assert!(matches!(
            first.outcome,
            daramjwee::Outcome::Hit { stale: true, .. }
        ));
        drain(first.body).await;
        // Let the worker start the refresh (it then waits forever on its fetcher).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(cache.stats().refreshes, 1, "the refresh must be in flight");
        cache
    });
    g.bench_function("stale_hot_hit_refresh_in_flight", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed("stale hot hit", &stale, Some("stale"), iters))
    });

    // Cold-tier hit whose promotion the hot tier refuses.
    let cold = rt.block_on(async {
        let cold = Arc::new(MemStore::new(64 << 20));
        put(cold.as_ref(), "cold").await;
        let cache = Cache::builder()
            .hot(
                MemStore::builder()
                    .capacity(64 << 20)
                    .max_object_size(BODY_LEN as u64 / 2)
                    .build(),
            )
            .tier(cold, None)
            .build();
        let first = cache.get("cold", never).await.expect("cold lookup");
        assert!(matches!(
            first.outcome,
            daramjwee::Outcome::Hit { tier: 1, .. }
        ));
        drain(first.body).await;
        cache
    });
    g.bench_function("cold_hit_promotion_refused", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed("cold hit", &cold, Some("cold"), iters))
    });

    // Miss: a new key each time.
    let miss = Cache::builder().hot(MemStore::new(64 << 20)).build();
    g.bench_function("miss_new_key", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed("miss", &miss, None, iters))
    });
    g.finish();

    // Every cold lookup must have been a cold hit (the hot tier never took the entry).
    let cold_stats = cold.stats();
    let miss_stats = miss.stats();
    println!(
        "\nsanity: cold case hits per tier {:?}; miss case misses {} fills committed {}",
        cold_stats.hits, miss_stats.misses, miss_stats.fills_committed
    );
}

fn report() {
    let t = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
    println!("\nengine get + drain of a 1 KiB body (current-thread runtime):");
    println!("mean: over all timed iterations; best: the fastest criterion sample");
    println!(
        "{:<16} {:>12} {:>12} {:>12} {:>12}",
        "case", "mean ns/op", "best ns/op", "allocs/op", "iterations"
    );
    for (case, tally) in t.iter() {
        let iters = tally.iters.max(1);
        println!(
            "{:<16} {:>12.1} {:>12.1} {:>12.2} {:>12}",
            case,
            tally.nanos as f64 / iters as f64,
            tally.best,
            tally.allocs as f64 / iters as f64,
            tally.iters
        );
    }
}

/// The fields of a typical stored response.
const FIELDS: [(&str, &str); 6] = [
    ("content-type", "application/octet-stream"),
    ("etag", "\"1k-v1\""),
    ("cache-control", "public, max-age=3600"),
    ("content-length", "1024"),
    ("date", "Sat, 05 Dec 2026 10:17:07 GMT"),
    ("last-modified", "Sat, 05 Dec 2026 10:17:07 GMT"),
];

/// Times `iters` new entries stored into `store`, each under a new key (made before the clock
/// starts) with [`FIELDS`].
async fn timed_puts(store: &MemStore, iters: u64) -> Duration {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = NEXT.fetch_add(iters, Ordering::Relaxed);
    let keys: Vec<String> = (base..base + iters)
        .map(|i| format!("put/{i:016x}"))
        .collect();
    // Room for four more fields, as the layer's stored maps have (so a hit adds its own
    // without growing the map).
    let mut headers = http::HeaderMap::with_capacity(FIELDS.len() + 4);
    for (name, value) in FIELDS {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    let metas: Vec<Metadata> = keys
        .iter()
        .map(|_| {
            let mut meta = Metadata::new(StatusCode::OK).with_content_length(BODY_LEN as u64);
            meta.headers = headers.clone();
            meta
        })
        .collect();
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    for (key, meta) in keys.iter().zip(metas) {
        let mut w = store.put(key, meta).await.expect("put");
        w.write(Bytes::from_static(&BODY)).await.expect("write");
        w.commit().await.expect("commit");
    }
    let elapsed = start.elapsed();
    record(
        "store put",
        iters,
        elapsed,
        ALLOCS.load(Ordering::Relaxed) - a0,
    );
    elapsed
}

fn store_put(c: &mut Criterion) {
    let rt = runtime();
    // Full after about 100,000 entries (about 2.5 KiB each), so the steady state is a full
    // tier's: each put evicts about one entry, and memory stays bounded however long
    // criterion runs.
    let store = MemStore::new(256 << 20);
    let mut g = c.benchmark_group("mem_store_put_1KiB");
    g.bench_function("six_fields", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed_puts(&store, iters))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    engine(&mut c);
    store_put(&mut c);
    c.final_summary();
    report();
}
