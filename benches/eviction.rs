//! Eviction policy throughput: hits (`touch`) and inserts that force an eviction.
//!
//! ```text
//! cargo bench --bench eviction
//! ```
//!
//! Every policy holds `RESIDENT` unit-weight entries in a policy of the same byte capacity.
//! - `hit/*`: `touch` on resident ids drawn uniformly at random (precomputed), no lock.
//! - `insert_evict/*`: `insert` of a new id, then `evict` until the weight is back at capacity
//!   (one eviction per insert in steady state), no lock.
//! - `sharded_*/{policy}/{1,2}_threads`: the same operations through a store-like structure of
//!   two `Mutex`-protected shards, taking the shard lock for every operation. With 2 threads,
//!   each thread works on its own shard (ids routed by `id % 2`), so this measures whether the
//!   per-shard design scales when shards are not contended; with 1 thread, one thread does
//!   all the work on both shards. Criterion's elements/s counts operations over all threads.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use daramjwee::eviction::{EvictionPolicy, PolicyKind};
use parking_lot::Mutex;

const RESIDENT: u64 = 100_000;
const BATCH: usize = 4096;

fn kinds() -> [(&'static str, PolicyKind); 4] {
    [
        ("lru", PolicyKind::Lru),
        ("sieve", PolicyKind::Sieve),
        ("s3fifo", PolicyKind::S3Fifo),
        ("tinylfu", PolicyKind::TinyLfu),
    ]
}

/// splitmix64, so the access pattern is fixed across runs.
fn ids(n: usize, range: u64, seed: u64) -> Vec<u64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % range
        })
        .collect()
}

/// A policy of `cap` bytes holding ids `first, first + step, ...` (`cap` of them), weight 1.
fn filled(kind: &PolicyKind, cap: u64, first: u64, step: u64) -> Box<dyn EvictionPolicy> {
    let mut p = kind.build(cap);
    for i in 0..cap {
        p.insert(first + i * step, 1);
    }
    p
}

fn single_threaded(c: &mut Criterion) {
    let touches = ids(BATCH, RESIDENT, 1);
    let mut g = c.benchmark_group("hit");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, kind) in kinds() {
        let mut p = filled(&kind, RESIDENT, 0, 1);
        g.bench_function(name, |b| {
            b.iter(|| {
                for &id in &touches {
                    p.touch(black_box(id));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("insert_evict");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, kind) in kinds() {
        let mut p = filled(&kind, RESIDENT, 0, 1);
        let mut next = RESIDENT;
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    p.insert(next, 1);
                    next += 1;
                    while p.weight() > RESIDENT {
                        black_box(p.evict());
                    }
                }
            })
        });
    }
    g.finish();
}

/// Two shards of `RESIDENT / 2` entries each; shard `s` holds the ids `≡ s (mod 2)`.
struct Sharded {
    shards: [Mutex<Box<dyn EvictionPolicy>>; 2],
    cap: u64,
}

impl Sharded {
    fn new(kind: &PolicyKind) -> Self {
        let cap = RESIDENT / 2;
        Sharded {
            shards: [
                Mutex::new(filled(kind, cap, 0, 2)),
                Mutex::new(filled(kind, cap, 1, 2)),
            ],
            cap,
        }
    }

    fn touch(&self, id: u64) {
        self.shards[(id % 2) as usize].lock().touch(id);
    }

    fn insert_evict(&self, id: u64) {
        let mut p = self.shards[(id % 2) as usize].lock();
        p.insert(id, 1);
        while p.weight() > self.cap {
            black_box(p.evict());
        }
    }
}

/// Runs `iters` batches on each of the two shards and returns the wall time. With two threads,
/// thread `s` runs `work(s, iters)`; with one, a single thread alternates shards batch by batch.
fn run_threads(threads: u64, iters: u64, work: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let start = Instant::now();
    if threads == 1 {
        for _ in 0..iters {
            work(0, 1);
            work(1, 1);
        }
    } else {
        std::thread::scope(|s| {
            for shard in 0..2 {
                s.spawn(move || work(shard, iters));
            }
        });
    }
    start.elapsed()
}

/// A per-shard counter on its own cache line, so the two threads share no written memory
/// outside their shard.
#[repr(align(128))]
struct Padded(AtomicU64);

fn sharded(c: &mut Criterion) {
    // Resident ids of shard s: s, s + 2, s + 4, ...
    let hits: [Vec<u64>; 2] = [0, 1].map(|s| {
        ids(BATCH, RESIDENT / 2, 7 + s)
            .iter()
            .map(|i| i * 2 + s)
            .collect()
    });
    let mut g = c.benchmark_group("sharded_hit");
    g.throughput(Throughput::Elements(2 * BATCH as u64));
    for (name, kind) in kinds() {
        for threads in [1u64, 2] {
            let cache = Sharded::new(&kind);
            let work = |shard: usize, iters: u64| {
                for _ in 0..iters {
                    for &id in &hits[shard] {
                        cache.touch(id);
                    }
                }
            };
            g.bench_with_input(
                BenchmarkId::new(name, format!("{threads}_threads")),
                &threads,
                |b, &threads| b.iter_custom(|iters| run_threads(threads, iters, &work)),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("sharded_insert_evict");
    g.throughput(Throughput::Elements(2 * BATCH as u64));
    for (name, kind) in kinds() {
        for threads in [1u64, 2] {
            let cache = Sharded::new(&kind);
            // Every insert is a new id (sequence n of shard s is id 2n + s), so each one evicts.
            let next = [
                Padded(AtomicU64::new(RESIDENT)),
                Padded(AtomicU64::new(RESIDENT)),
            ];
            let work = |shard: usize, iters: u64| {
                let mut n = next[shard].0.load(Ordering::Relaxed);
                for _ in 0..iters * BATCH as u64 {
                    cache.insert_evict(n * 2 + shard as u64);
                    n += 1;
                }
                next[shard].0.store(n, Ordering::Relaxed);
            };
            g.bench_with_input(
                BenchmarkId::new(name, format!("{threads}_threads")),
                &threads,
                |b, &threads| b.iter_custom(|iters| run_threads(threads, iters, &work)),
            );
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = single_threaded, sharded
}
criterion_main!(benches);
