//! Many small objects: N fills of a small body through one `BucketStore`, then N cold reads
//! through a second one (another instance), with each object its own pair of objects and then
//! packed. Prints the requests each phase sent (counted in front of the backend) and the
//! latency of the cold reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use daramjwee::store::{BucketStore, Packing, Store};
use daramjwee::Metadata;
use futures_util::StreamExt;

use super::counting::{Counting, Counts};

const CONCURRENCY: usize = 64;

fn store(url: &str, counts: &Arc<Counts>, packing: Option<Packing>) -> BucketStore {
    let base = BucketStore::from_url(url)
        .expect("url")
        .build()
        .expect("store");
    let counted = Counting::new(base.object_store().clone(), counts.clone());
    let mut b = BucketStore::builder(Arc::new(counted), base.prefix().clone())
        .op_timeout(Duration::from_secs(60));
    if let Some(p) = packing {
        b = b.packing(p);
    }
    b.build().expect("counted store")
}

fn body(i: usize, size: usize) -> Bytes {
    (0..size).map(|j| (i + j) as u8).collect::<Vec<u8>>().into()
}

async fn fill_all(s: &BucketStore, n: usize, size: usize) {
    futures_util::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| async move {
            let meta = Metadata::new(http::StatusCode::OK).with_content_length(size as u64);
            let mut w = s.put(&format!("k{i}"), meta).await.expect("put");
            w.write(body(i, size)).await.expect("write");
            w.commit().await.expect("commit");
        })
        .await;
}

/// Reads every key one at a time; the sorted latencies.
async fn read_all(s: &BucketStore, n: usize, size: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let e = s
            .get(&format!("k{i}"))
            .await
            .expect("get")
            .expect("cold hit");
        let got = e.body.collect().await.expect("body");
        took.push(t.elapsed());
        assert!(got == body(i, size), "k{i}: bytes differ");
    }
    took.sort();
    took
}

fn line(what: &str, c: [u64; 5], secs: f64) -> String {
    format!(
        "{what:<28} PUT {:>6}  GET {:>6}  HEAD {:>3}  LIST {:>3}  DELETE {:>4}  in {secs:>6.2} s",
        c[0], c[1], c[2], c[3], c[4]
    )
}

pub async fn run(url: &str, n: usize, size: usize) {
    println!("{n} objects of {size} B, cold tier {url}, {CONCURRENCY} fills at a time");
    let packed = Packing::new(64 << 10);
    let modes = [
        ("own objects", None),
        ("packed", Some(packed)),
        ("packed, trusted index", Some(packed.trust_index(true))),
    ];
    // `DARAMJWEE_BENCH_ONLY=trusted` runs the modes whose name contains it.
    let only = std::env::var("DARAMJWEE_BENCH_ONLY").unwrap_or_default();
    for (name, packing) in modes.into_iter().filter(|(n, _)| n.contains(only.as_str())) {
        let url = format!("{url}/{}", name.replace([' ', ','], "-"));
        let counts = Arc::new(Counts::default());
        let writer = store(&url, &counts, packing);
        writer.clear().await.expect("clear");
        counts.take();
        let t = Instant::now();
        fill_all(&writer, n, size).await;
        println!(
            "{}",
            line(
                &format!("{name}: {n} fills"),
                counts.take(),
                t.elapsed().as_secs_f64()
            )
        );

        let reader = store(&url, &counts, packing);
        let t = Instant::now();
        let took = read_all(&reader, n, size).await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{}",
            line(&format!("{name}: {n} cold reads"), counts.take(), secs)
        );
        let pct = |p: f64| took[((took.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "{name}: cold read latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            pct(0.5),
            pct(0.9),
            pct(0.99)
        );
        writer.clear().await.expect("clean up");
    }
}
