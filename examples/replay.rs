//! Replays cache workloads through daramjwee's eviction policies and prints their miss ratios.
//!
//! ```text
//! cargo run --release --example replay -- [--trace PATH] [--quick] [--trace-only] [--hasher-seeds N] [--keys N] [--requests N] [--plot PATH]
//! ```
//!
//! `--trace-only` skips the Zipf workloads and always prints the miss counts at libCacheSim's
//! reference sizes (a fast check, about a minute, while working on a policy for the trace).
//! `--hasher-seeds N` adds a table of moka's and quick_cache's trace miss ratios over `N`
//! seeded hashers (min / median / max per cell, and where the fixed-hasher figure sits); their
//! frequency estimates hash keys with the cache's hasher, so their figures depend on it. The
//! official rows keep the fixed hasher.
//!
//! Workloads: the CloudPhysics block-I/O trace in libCacheSim's `oracleGeneral` format (objects
//! weighted by their size in bytes; default path `../shared/traces/cloudPhysicsIO.oracleGeneral.bin`
//! next to the crate root), and three Zipf workloads (alpha 0.7, 0.9, 1.0, unit weights) that
//! this program generates from a fixed seed, so every run prints the same figures.
//!
//! Contenders: [`Lru`], [`S3Fifo`], [`Sieve`], [`TinyLfu`] (each behind a harness-side map of
//! resident ids that evicts while over capacity, as a store does), Belady's OPT (evict the
//! resident object whose next access is furthest; the lower bound for these policies), moka 0.12
//! (TinyLFU: LRU with frequency-sketch admission, no window; pending maintenance is run after
//! every request so eviction is exact) and quick_cache 0.6 (one shard, so its capacity is not
//! split). Cache sizes are fractions of each workload's working set (bytes of distinct objects
//! for the trace, distinct keys for Zipf).
//!
//! Zipf sizes: 500,000 keys and 5,000,000 requests by default (about 2.5 CPU-minutes for the
//! whole run), 20,000 keys and 200,000 requests with `--quick` (about 10 seconds).
//!
//! Prints markdown tables to stdout and, in a full run (or with `--plot`), draws
//! `docs/eviction-miss-ratio.png`. The trace is only read, never copied anywhere.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use daramjwee::eviction::{EvictionPolicy, Lru, S3Fifo, Sieve, TinyLfu};

/// One request: object id, its weight, and the index of the next request for the same object.
#[derive(Debug, Clone, Copy)]
struct Req {
    id: u64,
    size: u32,
    /// Index of the next request for `id`, or `i64::MAX` if there is none.
    next: i64,
}

/// A workload: its requests and the size of its working set in weight units.
struct Workload {
    name: String,
    /// A title short enough for a plot panel.
    short: String,
    reqs: Vec<Req>,
    working_set: u64,
    /// Number of distinct objects.
    objects: u64,
    /// Whether weights are bytes (report the byte miss ratio too).
    sized: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lru,
    S3Fifo,
    Sieve,
    TinyLfu,
    Moka,
    QuickCache,
    Opt,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Lru,
        Kind::Sieve,
        Kind::S3Fifo,
        Kind::TinyLfu,
        Kind::Moka,
        Kind::QuickCache,
        Kind::Opt,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Lru => "daramjwee LRU",
            Kind::S3Fifo => "daramjwee S3-FIFO",
            Kind::Sieve => "daramjwee SIEVE",
            Kind::TinyLfu => "daramjwee W-TinyLFU",
            Kind::Moka => "moka (TinyLFU)",
            Kind::QuickCache => "quick_cache (S3-FIFO-like)",
            Kind::Opt => "Belady OPT",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    requests: u64,
    misses: u64,
    bytes: u64,
    miss_bytes: u64,
}

impl Stats {
    fn record(&mut self, hit: bool, size: u32) {
        self.requests += 1;
        self.bytes += u64::from(size);
        if !hit {
            self.misses += 1;
            self.miss_bytes += u64::from(size);
        }
    }

    fn miss_ratio(&self) -> f64 {
        self.misses as f64 / self.requests.max(1) as f64
    }

    fn byte_miss_ratio(&self) -> f64 {
        self.miss_bytes as f64 / self.bytes.max(1) as f64
    }
}

/// Replays through one of our policies, the way a store drives it: a map of resident ids and
/// their weights, `touch` on a hit, `insert` on a miss, `evict` while over capacity. Objects
/// larger than the whole cache are not admitted (by any contender).
fn run_policy(mut policy: Box<dyn EvictionPolicy>, reqs: &[Req], cap: u64) -> Stats {
    let mut stats = Stats::default();
    let mut resident: HashMap<u64, u64> = HashMap::new();
    let mut used = 0u64;
    for r in reqs {
        let w = u64::from(r.size);
        let hit = match resident.get_mut(&r.id) {
            Some(old) if *old == w => {
                policy.touch(r.id);
                true
            }
            Some(old) => {
                used = used - *old + w;
                *old = w;
                policy.insert(r.id, w);
                true
            }
            None => {
                if w <= cap {
                    policy.insert(r.id, w);
                    resident.insert(r.id, w);
                    used += w;
                }
                false
            }
        };
        while used > cap {
            let victim = policy
                .evict()
                .expect("policy is empty while the harness is over capacity");
            used -= resident
                .remove(&victim)
                .expect("policy evicted an id that is not resident");
        }
        stats.record(hit, r.size);
    }
    assert_eq!(
        policy.weight(),
        used,
        "policy weight drifted from the harness"
    );
    assert_eq!(
        policy.len(),
        resident.len(),
        "policy len drifted from the harness"
    );
    stats
}

/// Belady's OPT: on overflow, evict the resident object requested furthest in the future.
fn run_opt(reqs: &[Req], cap: u64) -> Stats {
    let mut stats = Stats::default();
    let mut by_next: BTreeSet<(i64, u64)> = BTreeSet::new();
    let mut resident: HashMap<u64, (i64, u64)> = HashMap::new();
    let mut used = 0u64;
    for r in reqs {
        let w = u64::from(r.size);
        let hit = if let Some(slot) = resident.get_mut(&r.id) {
            by_next.remove(&(slot.0, r.id));
            by_next.insert((r.next, r.id));
            used = used - slot.1 + w;
            *slot = (r.next, w);
            true
        } else {
            if w <= cap {
                resident.insert(r.id, (r.next, w));
                by_next.insert((r.next, r.id));
                used += w;
            }
            false
        };
        while used > cap {
            let (_, victim) = by_next.pop_last().expect("OPT empty while over capacity");
            used -= resident.remove(&victim).map_or(0, |(_, w)| w);
        }
        stats.record(hit, r.size);
    }
    stats
}

/// SipHash with fixed keys: moka's and quick_cache's frequency estimates hash keys with the
/// cache's hasher, so a random one makes their miss ratios change from run to run.
type FixedHasher = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// SipHash with fixed keys that hashes a seed before each key: one more hash function per seed,
/// for `--hasher-seeds`, which shows how much moka's and quick_cache's figures owe to the hasher.
#[derive(Debug, Clone, Copy)]
struct SeededHasher(u64);

impl std::hash::BuildHasher for SeededHasher {
    type Hasher = std::collections::hash_map::DefaultHasher;

    fn build_hasher(&self) -> Self::Hasher {
        use std::hash::Hasher;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u64(self.0);
        h
    }
}

/// A hasher the competitors can take: the fixed one (the official rows) or a seeded one.
trait CacheHasher: std::hash::BuildHasher + Clone + Send + Sync + 'static {}
impl<H: std::hash::BuildHasher + Clone + Send + Sync + 'static> CacheHasher for H {}

fn run_moka(reqs: &[Req], cap: u64) -> Stats {
    run_moka_with(reqs, cap, FixedHasher::default())
}

fn run_moka_with<H: CacheHasher>(reqs: &[Req], cap: u64, hasher: H) -> Stats {
    let cache: moka::sync::Cache<u64, u32, H> = moka::sync::Cache::builder()
        .max_capacity(cap)
        .weigher(|_id: &u64, size: &u32| *size)
        .build_with_hasher(hasher);
    let mut stats = Stats::default();
    for r in reqs {
        let hit = cache.get(&r.id).is_some();
        if !hit {
            cache.insert(r.id, r.size);
        }
        // moka applies reads, writes and evictions in batches; draining after every request
        // makes its residency exact (and its frequency sketch complete) at each step.
        cache.run_pending_tasks();
        stats.record(hit, r.size);
    }
    stats
}

#[derive(Clone)]
struct SizeWeighter;

impl quick_cache::Weighter<u64, u32> for SizeWeighter {
    fn weight(&self, _id: &u64, size: &u32) -> u64 {
        u64::from(*size)
    }
}

fn run_quick_cache(reqs: &[Req], cap: u64, avg_weight: u64) -> Stats {
    run_quick_cache_with(reqs, cap, avg_weight, FixedHasher::default())
}

fn run_quick_cache_with<H: CacheHasher>(
    reqs: &[Req],
    cap: u64,
    avg_weight: u64,
    hasher: H,
) -> Stats {
    let options = quick_cache::OptionsBuilder::new()
        .shards(1)
        .estimated_items_capacity((cap / avg_weight.max(1)).max(1) as usize)
        .weight_capacity(cap)
        .build()
        .expect("quick_cache options are complete");
    let cache: quick_cache::sync::Cache<u64, u32, SizeWeighter, H> =
        quick_cache::sync::Cache::with_options(
            options,
            SizeWeighter,
            hasher,
            quick_cache::sync::DefaultLifecycle::default(),
        );
    let mut stats = Stats::default();
    for r in reqs {
        let hit = cache.get(&r.id).is_some();
        if !hit {
            cache.insert(r.id, r.size);
        }
        stats.record(hit, r.size);
    }
    stats
}

fn run(kind: Kind, w: &Workload, cap: u64) -> Stats {
    let avg = w.working_set / w.objects.max(1);
    match kind {
        Kind::Lru => run_policy(Box::new(Lru::new()), &w.reqs, cap),
        Kind::S3Fifo => run_policy(Box::new(S3Fifo::new(cap)), &w.reqs, cap),
        Kind::Sieve => run_policy(Box::new(Sieve::new()), &w.reqs, cap),
        Kind::TinyLfu => run_policy(Box::new(TinyLfu::new(cap)), &w.reqs, cap),
        Kind::Opt => run_opt(&w.reqs, cap),
        Kind::Moka => run_moka(&w.reqs, cap),
        Kind::QuickCache => run_quick_cache(&w.reqs, cap, avg),
    }
}

fn distinct(reqs: &[Req]) -> u64 {
    reqs.iter().map(|r| r.id).collect::<HashSet<_>>().len() as u64
}

/// Loads an `oracleGeneral` trace: packed little-endian records of
/// `u32 timestamp | u64 id | u32 size | i64 next access (-1 = never)`.
fn load_trace(path: &Path) -> std::io::Result<Workload> {
    const RECORD: usize = 24;
    let bytes = std::fs::read(path)?;
    if bytes.len() % RECORD != 0 {
        eprintln!(
            "warning: {} has {} trailing bytes (not a whole record); ignoring them",
            path.display(),
            bytes.len() % RECORD
        );
    }
    let mut reqs = Vec::with_capacity(bytes.len() / RECORD);
    let mut sizes: HashMap<u64, u32> = HashMap::new();
    let mut resized = 0u64;
    for rec in bytes.chunks_exact(RECORD) {
        let field = |a: usize, b: usize| -> [u8; 8] {
            let mut out = [0u8; 8];
            out[..b - a].copy_from_slice(&rec[a..b]);
            out
        };
        let id = u64::from_le_bytes(field(4, 12));
        let size = u64::from_le_bytes(field(12, 16)) as u32;
        let next = i64::from_le_bytes(field(16, 24));
        if let Some(old) = sizes.insert(id, size) {
            resized += u64::from(old != size);
        }
        reqs.push(Req {
            id,
            size,
            next: if next < 0 { i64::MAX } else { next },
        });
    }
    let working_set = sizes.values().map(|&s| u64::from(s)).sum();
    eprintln!(
        "trace: {} requests, {} objects, working set {} bytes, {} requests changed an object's size",
        reqs.len(),
        sizes.len(),
        working_set,
        resized
    );
    // OPT uses the file's next-access field; check it against our own computation, which the
    // Zipf workloads use, so both are known to follow one convention.
    let mut recomputed = reqs.clone();
    fill_next(&mut recomputed);
    let agree = reqs
        .iter()
        .zip(&recomputed)
        .filter(|(a, b)| a.next == b.next || a.next == b.next.saturating_add(1))
        .count();
    eprintln!(
        "trace: next-access field matches the recomputed one (the file counts from 1) on {agree} of {} requests",
        reqs.len()
    );
    Ok(Workload {
        name: "CloudPhysics trace (bytes)".into(),
        short: "CloudPhysics trace (bytes)".into(),
        objects: sizes.len() as u64,
        reqs,
        working_set,
        sized: true,
    })
}

/// Sets each request's `next` to the index of the next request for the same id.
fn fill_next(reqs: &mut [Req]) {
    let mut seen: HashMap<u64, i64> = HashMap::new();
    for (i, r) in reqs.iter_mut().enumerate().rev() {
        r.next = seen.insert(r.id, i as i64).unwrap_or(i64::MAX);
    }
}

/// splitmix64: a small, fixed, dependency-free generator so the workloads never change.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Zipf over `keys` ranks by inverse CDF; rank r becomes id `mix(r)` so ids look like hashes.
fn zipf(alpha: f64, keys: usize, requests: usize, seed: u64) -> Workload {
    let mut cdf = Vec::with_capacity(keys);
    let mut acc = 0.0f64;
    for rank in 1..=keys {
        acc += (rank as f64).powf(-alpha);
        cdf.push(acc);
    }
    let mut rng = SplitMix(seed);
    let mut reqs: Vec<Req> = (0..requests)
        .map(|_| {
            let u = rng.next_f64() * acc;
            let rank = cdf.partition_point(|&c| c < u).min(keys - 1) as u64;
            Req {
                id: mix(rank.wrapping_add(1)),
                size: 1,
                next: i64::MAX,
            }
        })
        .collect();
    fill_next(&mut reqs);
    let working_set = distinct(&reqs);
    Workload {
        objects: working_set,
        name: format!("Zipf alpha={alpha} ({keys} keys, {requests} requests, unit weights)"),
        short: format!("Zipf alpha={alpha} (unit weights)"),
        reqs,
        working_set,
        sized: false,
    }
}

struct Args {
    trace: PathBuf,
    quick: bool,
    trace_only: bool,
    hasher_seeds: usize,
    keys: usize,
    requests: usize,
    plot: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut trace = root.join("../shared/traces/cloudPhysicsIO.oracleGeneral.bin");
    let mut quick = false;
    let mut trace_only = false;
    let mut hasher_seeds = 0;
    let mut keys = None;
    let mut requests = None;
    let mut plot = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--trace" => trace = PathBuf::from(value("--trace")?),
            "--quick" => quick = true,
            "--trace-only" => trace_only = true,
            "--hasher-seeds" => {
                hasher_seeds = value("--hasher-seeds")?
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                if hasher_seeds == 0 {
                    return Err("--hasher-seeds must be at least 1".into());
                }
            }
            "--keys" => keys = Some(value("--keys")?.parse().map_err(|e| format!("{e}"))?),
            "--requests" => {
                requests = Some(value("--requests")?.parse().map_err(|e| format!("{e}"))?)
            }
            "--plot" => plot = Some(PathBuf::from(value("--plot")?)),
            "-h" | "--help" => {
                return Err(
                    "usage: replay [--trace PATH] [--quick] [--trace-only] [--hasher-seeds N] \
                 [--keys N] [--requests N] [--plot PATH]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let (default_keys, default_requests) = if quick {
        (20_000, 200_000)
    } else {
        (500_000, 5_000_000)
    };
    if plot.is_none() && !quick && !trace_only {
        plot = Some(root.join("docs/eviction-miss-ratio.png"));
    }
    let (keys, requests) = (
        keys.unwrap_or(default_keys),
        requests.unwrap_or(default_requests),
    );
    if keys == 0 || requests == 0 {
        return Err("--keys and --requests must be at least 1".into());
    }
    Ok(Args {
        trace,
        quick,
        trace_only,
        hasher_seeds,
        keys,
        requests,
        plot,
    })
}

/// Cache sizes, as fractions of the working set.
const FRACTIONS: [f64; 5] = [0.001, 0.003, 0.01, 0.03, 0.1];

struct Results {
    workload: String,
    short: String,
    sized: bool,
    /// `(fraction, capacity, stats per Kind::ALL)`.
    rows: Vec<(f64, u64, Vec<Stats>)>,
}

fn replay(w: &Workload, fractions: &[f64]) -> Results {
    let started = Instant::now();
    let mut rows = Vec::new();
    for &f in fractions {
        let cap = ((w.working_set as f64 * f).round() as u64).max(1);
        let stats = Kind::ALL.iter().map(|&k| run(k, w, cap)).collect();
        rows.push((f, cap, stats));
    }
    eprintln!("{}: replayed in {:.1?}", w.name, started.elapsed());
    Results {
        workload: w.name.clone(),
        short: w.short.clone(),
        sized: w.sized,
        rows,
    }
}

fn print_table(r: &Results, title: &str, metric: fn(&Stats) -> f64) {
    println!("\n### {} — {}\n", r.workload, title);
    let mut header = String::from("| policy |");
    let mut rule = String::from("|---|");
    for (f, cap, _) in &r.rows {
        header.push_str(&format!(" {}% ({}) |", f * 100.0, human(*cap, r.sized)));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for (k, kind) in Kind::ALL.iter().enumerate() {
        let mut line = format!("| {} |", kind.name());
        for (_, _, stats) in &r.rows {
            line.push_str(&format!(" {:.4} |", metric(&stats[k])));
        }
        println!("{line}");
    }
}

fn human(cap: u64, bytes: bool) -> String {
    if !bytes {
        return format!("{cap} keys");
    }
    let mib = cap as f64 / (1024.0 * 1024.0);
    if mib >= 1.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{:.0} KiB", cap as f64 / 1024.0)
    }
}

/// Miss counts at the cache sizes libCacheSim's tests pin, to check our replay against theirs.
fn print_reference(w: &Workload) {
    println!(
        "\n### {} — miss counts at libCacheSim's reference sizes\n",
        w.name
    );
    let sizes = [128u64, 256, 512, 1024];
    let mut header = String::from("| policy |");
    let mut rule = String::from("|---|");
    for s in sizes {
        header.push_str(&format!(" {s} MiB |"));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for kind in Kind::ALL {
        let mut line = format!("| {} |", kind.name());
        for s in sizes {
            line.push_str(&format!(" {} |", run(kind, w, s << 20).misses));
        }
        println!("{line}");
    }
}

/// moka's and quick_cache's miss ratios on the trace with `seeds` seeded hashers: min / median /
/// max per cell, next to the fixed-hasher figure the official tables use and how many seeded
/// runs missed less than it (so a reader sees where the official figure sits).
fn print_hasher_spread(w: &Workload, seeds: usize) {
    let started = Instant::now();
    let avg = w.working_set / w.objects.max(1);
    let mut rng = SplitMix(0x5eed_4a54);
    let hashers: Vec<SeededHasher> = (0..seeds).map(|_| SeededHasher(rng.next_u64())).collect();
    // `(column, capacity, print miss counts rather than ratios)`, as in the tables above.
    let mut cells: Vec<(String, u64, bool)> = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
        .iter()
        .map(|&f| {
            let cap = ((w.working_set as f64 * f).round() as u64).max(1);
            (format!("{}%", f * 100.0), cap, false)
        })
        .collect();
    cells.extend([128u64, 256, 512, 1024].map(|s| (format!("{s} MiB"), s << 20, true)));
    println!(
        "\n### {} — moka and quick_cache over {seeds} seeded hashers\n",
        w.name
    );
    println!(
        "Miss ratio (miss count in the MiB columns): min / median / max over the seeded \
         hashers; then the fixed-hasher figure (the official rows) and how many seeded runs \
         missed less than it.\n"
    );
    let mut header = String::from("| contender |");
    let mut rule = String::from("|---|");
    for (name, _, _) in &cells {
        header.push_str(&format!(" {name} |"));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for kind in [Kind::Moka, Kind::QuickCache] {
        let mut line = format!("| {} |", kind.name());
        for &(_, cap, counts) in &cells {
            let one = |h: Option<SeededHasher>| -> f64 {
                let stats = match (kind, h) {
                    (Kind::Moka, Some(h)) => run_moka_with(&w.reqs, cap, h),
                    (Kind::Moka, None) => run_moka(&w.reqs, cap),
                    (_, Some(h)) => run_quick_cache_with(&w.reqs, cap, avg, h),
                    (_, None) => run_quick_cache(&w.reqs, cap, avg),
                };
                if counts {
                    stats.misses as f64
                } else {
                    stats.miss_ratio()
                }
            };
            let mut ratios: Vec<f64> = hashers.iter().map(|&h| one(Some(h))).collect();
            ratios.sort_by(f64::total_cmp);
            let fixed = one(None);
            let below = ratios.iter().filter(|&&r| r < fixed).count();
            let show = |x: f64| {
                if counts {
                    format!("{x:.0}")
                } else {
                    format!("{x:.4}")
                }
            };
            line.push_str(&format!(
                " {} / {} / {}; fixed {} ({below} below) |",
                show(ratios[0]),
                show(ratios[ratios.len() / 2]),
                show(ratios[ratios.len() - 1]),
                show(fixed)
            ));
        }
        println!("{line}");
    }
    eprintln!("hasher spread: {:.1?}", started.elapsed());
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut all = Vec::new();
    println!(
        "## Miss ratios ({} run: Zipf {} keys x {} requests, seed fixed)",
        match (args.trace_only, args.quick) {
            (true, _) => "trace-only",
            (false, true) => "quick",
            (false, false) => "full",
        },
        args.keys,
        args.requests
    );
    match load_trace(&args.trace) {
        Ok(trace) => {
            let r = replay(&trace, &[0.001, 0.003, 0.01, 0.03, 0.1, 0.3]);
            print_table(&r, "miss ratio", Stats::miss_ratio);
            print_table(&r, "byte miss ratio", Stats::byte_miss_ratio);
            if !args.quick || args.trace_only {
                print_reference(&trace);
            }
            if args.hasher_seeds > 0 {
                print_hasher_spread(&trace, args.hasher_seeds);
            }
            all.push(r);
        }
        Err(e) => eprintln!(
            "trace {} not readable ({e}); skipping it. It ships in libCacheSim's data/ folder; \
             pass --trace PATH to point at a copy.",
            args.trace.display()
        ),
    }
    let alphas: &[f64] = if args.trace_only {
        &[]
    } else {
        &[0.7, 0.9, 1.0]
    };
    for (i, &alpha) in alphas.iter().enumerate() {
        let w = zipf(alpha, args.keys, args.requests, 0x5eed_0000 + i as u64);
        eprintln!("{}: working set {} keys", w.name, w.working_set);
        let r = replay(&w, &FRACTIONS);
        print_table(&r, "miss ratio", Stats::miss_ratio);
        all.push(r);
    }
    eprintln!("total {:.1?}", started.elapsed());
    if let Some(path) = args.plot {
        match plot::draw(&path, &all) {
            Ok(()) => eprintln!("plot written to {}", path.display()),
            Err(e) => eprintln!("plot not written: {e}"),
        }
    }
}

mod plot {
    //! The miss-ratio-versus-size figure: one panel per workload, one line per contender.
    //!
    //! Lines and grids are drawn by plotters; text is stamped from the public-domain 8x8 bitmap
    //! font of `font8x8`, because plotters' own text needs a font feature (`ttf` or
    //! `ab_glyph`) that, once enabled for the crate's dev-dependencies, also changes how
    //! criterion renders its reports (its plots then fail for want of a registered font).

    use std::path::Path;

    use plotters::prelude::*;

    use super::{Kind, Results};

    const COLORS: [RGBColor; 7] = [
        RGBColor(120, 120, 120),
        RGBColor(230, 159, 0),
        RGBColor(0, 114, 178),
        RGBColor(204, 121, 167),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(0, 0, 0),
    ];
    const W: u32 = 1400;
    const H: u32 = 1000;

    /// Text to stamp after plotters is done: top-left corner, scale, colour, string.
    struct Label(i32, i32, i32, RGBColor, String);

    pub(super) fn draw(path: &Path, all: &[Results]) -> Result<(), Box<dyn std::error::Error>> {
        let mut buf = vec![0u8; (W * H * 3) as usize];
        let mut labels = Vec::new();
        {
            let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
            root.fill(&WHITE)?;
            let cols = 2;
            let rows = all.len().div_ceil(cols);
            for (panel, r) in root.split_evenly((rows, cols)).iter().zip(all) {
                panel_chart(panel, r, &mut labels)?;
            }
            root.present()?;
        }
        for Label(x, y, scale, color, text) in &labels {
            stamp(&mut buf, *x, *y, *scale, *color, text);
        }
        let mut out = BitMapBackend::new(path, (W, H));
        out.blit_bitmap((0, 0), (W, H), &buf)?;
        out.present()?;
        Ok(())
    }

    fn panel_chart(
        panel: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
        r: &Results,
        labels: &mut Vec<Label>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let xs: Vec<f64> = r.rows.iter().map(|(f, _, _)| f * 100.0).collect();
        let (xmin, xmax) = (xs[0] * 0.8, xs[xs.len() - 1] * 1.25);
        let ratios = || {
            r.rows
                .iter()
                .flat_map(|(_, _, s)| s.iter().map(|s| s.miss_ratio()))
        };
        let ymax = ratios().fold(0.0f64, f64::max);
        let ymin = ratios().fold(1.0f64, f64::min);
        let pad = (ymax - ymin) * 0.05;
        let (y0, y1) = ((ymin - pad).max(0.0), (ymax + pad).min(1.0));
        let mut chart = ChartBuilder::on(panel)
            .margin_top(40)
            .margin_left(70)
            .margin_right(20)
            .margin_bottom(50)
            .build_cartesian_2d((xmin..xmax).log_scale(), y0..y1)?;
        chart
            .configure_mesh()
            .x_labels(0)
            .y_labels(0)
            .light_line_style(WHITE)
            .draw()?;
        // Grid and tick labels at the measured sizes and at round miss ratios.
        let grid = RGBColor(225, 225, 225);
        for &x in &xs {
            chart.draw_series(LineSeries::new(vec![(x, y0), (x, y1)], grid))?;
            let (px, py) = chart.backend_coord(&(x, y0));
            let text = format!("{x}%");
            labels.push(Label(px - 4 * text.len() as i32, py + 8, 1, BLACK, text));
        }
        let step = if y1 - y0 > 0.2 { 0.05 } else { 0.02 };
        let mut y = (y0 / step).ceil() * step;
        while y <= y1 {
            chart.draw_series(LineSeries::new(vec![(xmin, y), (xmax, y)], grid))?;
            let (px, py) = chart.backend_coord(&(xmin, y));
            labels.push(Label(px - 44, py - 4, 1, BLACK, format!("{y:.2}")));
            y += step;
        }
        for (k, kind) in Kind::ALL.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let pts: Vec<(f64, f64)> = r
                .rows
                .iter()
                .map(|(f, _, s)| (f * 100.0, s[k].miss_ratio()))
                .collect();
            chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            // Legend, bottom left of the plot area.
            let (lx, ly) = chart.backend_coord(&(xmin, y0));
            let row = ly - 12 - 16 * (Kind::ALL.len() - k) as i32;
            panel.draw(&Rectangle::new(
                [
                    (lx + 12 - panel_origin(panel).0, row - panel_origin(panel).1),
                    (
                        lx + 36 - panel_origin(panel).0,
                        row + 6 - panel_origin(panel).1,
                    ),
                ],
                color.filled(),
            ))?;
            labels.push(Label(lx + 42, row - 1, 1, BLACK, kind.name().to_string()));
        }
        let (tx, ty) = chart.backend_coord(&(xmin, y1));
        labels.push(Label(tx, ty - 30, 2, BLACK, r.short.clone()));
        let (bx, by) = chart.backend_coord(&(xmin, y0));
        labels.push(Label(
            bx,
            by + 26,
            1,
            BLACK,
            "x: cache size, % of working set (log)   y: miss ratio".into(),
        ));
        Ok(())
    }

    fn panel_origin(panel: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> (i32, i32) {
        let range = panel.get_base_pixel();
        (range.0, range.1)
    }

    /// Stamps `text` with the 8x8 font at `scale`, clipped to the image.
    fn stamp(buf: &mut [u8], x: i32, y: i32, scale: i32, color: RGBColor, text: &str) {
        for (n, ch) in text.chars().enumerate() {
            let glyph = font8x8::legacy::BASIC_LEGACY
                .get(ch as usize)
                .copied()
                .unwrap_or([0; 8]);
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..8 {
                    if bits & (1 << gx) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let px = x + (n as i32 * 8 + gx) * scale + dx;
                            let py = y + gy as i32 * scale + dy;
                            if px < 0 || py < 0 || px >= W as i32 || py >= H as i32 {
                                continue;
                            }
                            let i = ((py as u32 * W + px as u32) * 3) as usize;
                            buf[i..i + 3].copy_from_slice(&[color.0, color.1, color.2]);
                        }
                    }
                }
            }
        }
    }
}
