//! Purges shared through the bucket: three engine instances over one real S3-compatible server
//! (moto, from `scripts/s3-server.sh`; see `tests/object_store.rs`), each with its own memory
//! (or disk) hot tier and its own client, coordinated by `SharedPurges` alone.
#![cfg(feature = "aws")]

mod object_store_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use daramjwee::store::{BucketStore, FileStore, SharedPurges, Store};
use daramjwee::{Cache, ColdFill, EntryBody, Fetched, Metadata, Outcome};
use object_store::ObjectStoreExt;
use object_store_support::{body, engine, serve, wait_presence, S3};

/// Compares bodies without printing kilobytes of bytes on failure.
macro_rules! assert_same {
    ($got:expr, $want:expr) => {
        assert_same!($got, $want, "")
    };
    ($got:expr, $want:expr, $($msg:tt)+) => {{
        let (got, want): (&[u8], &[u8]) = (&$got[..], &$want[..]);
        assert!(
            got == want,
            "bodies differ ({} vs {} bytes, first {:?} vs {:?}) {}",
            got.len(),
            want.len(),
            &got[..got.len().min(4)],
            &want[..want.len().min(4)],
            format_args!($($msg)+)
        );
    }};
}

const INTERVAL: Duration = Duration::from_millis(200);
/// How long a purge may take to reach every instance in these tests: the interval, plus the
/// requests of one poll on a loaded two-core machine.
const REACH: Duration = Duration::from_secs(2);

struct Instance {
    cache: Cache,
    purges: SharedPurges,
}

async fn instance(s3: &S3) -> Instance {
    let bucket = s3.store();
    let cache = engine(bucket.clone());
    let purges = SharedPurges::builder(cache.clone(), bucket)
        .interval(INTERVAL)
        .start()
        .await
        .expect("start shared purges");
    Instance { cache, purges }
}

fn hot(cache: &Cache) -> Arc<dyn Store> {
    cache.tier_store(0).expect("hot tier").clone()
}

fn cold(cache: &Cache) -> Arc<dyn Store> {
    cache.tier_store(1).expect("cold tier").clone()
}

/// Waits until `key` is gone from `cache`'s hot tier; how long it took, or `None` past `REACH`.
async fn purged_within(cache: &Cache, key: &str) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < REACH {
        if hot(cache).head(key).await.expect("head").is_none() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A, B and C serve `keys` (A from the origin, B and C from the bucket into their hot tiers).
async fn warm(all: &[&Instance], keys: &[&str], calls: &Arc<AtomicUsize>, data: &Bytes) {
    for key in keys {
        for i in all {
            // The first instance's cold commit may end after its client's body, and a packed
            // entry reaches another instance's index within its refresh: each one reads it
            // from the bucket once it can see it there.
            if !std::ptr::eq(*i, all[0]) {
                assert!(wait_presence(cold(&i.cache).as_ref(), key, true).await);
            }
            assert_same!(&serve(&i.cache, key, calls, data.clone()).await, data);
            assert!(wait_presence(cold(&i.cache).as_ref(), key, true).await);
            assert!(wait_presence(hot(&i.cache).as_ref(), key, true).await);
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        keys.len(),
        "one origin call per key"
    );
}

#[tokio::test]
async fn purge_on_one_instance_is_a_miss_on_the_others_within_the_interval() {
    let s3 = require_s3!("purge-reach");
    let (a, b, c) = (
        instance(&s3).await,
        instance(&s3).await,
        instance(&s3).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let (v1, v2) = (body(3000, 1), body(3000, 2));
    let keys = ["http://x/a", "http://x/b?v=1", "http://y/c"];
    warm(&[&a, &b, &c], &keys, &calls, &v1).await;

    a.purges.purge_key("http://x/a").await.unwrap();
    for i in [&b, &c] {
        let took = purged_within(&i.cache, "http://x/a").await;
        assert!(
            took.is_some(),
            "purge reached the instance within {REACH:?}"
        );
    }
    let got = b.cache.get(
        "http://x/a",
        object_store_support::origin(&calls, v2.clone()),
    );
    let got = got.await.unwrap();
    assert_eq!(
        got.outcome,
        Outcome::Miss,
        "a miss, not the bucket's old entry"
    );
    assert_same!(got.body.collect().await.unwrap(), v2);
    assert_same!(serve(&c.cache, "http://x/a", &calls, v2.clone()).await, v2);
    assert_same!(serve(&a.cache, "http://x/a", &calls, v2.clone()).await, v2);

    // A prefix (a URL's variants, a host) from B reaches A and C; other keys stay.
    b.purges.purge_prefix("http://x/b").await.unwrap();
    for i in [&a, &c] {
        assert!(purged_within(&i.cache, "http://x/b?v=1").await.is_some());
        assert!(hot(&i.cache).head("http://y/c").await.unwrap().is_some());
    }
    assert_same!(
        serve(&a.cache, "http://x/b?v=1", &calls, v2.clone()).await,
        v2
    );

    // Everything, from C.
    c.purges.purge_all().await.unwrap();
    for i in [&a, &b] {
        assert!(purged_within(&i.cache, "http://y/c").await.is_some());
    }
    let before = calls.load(Ordering::SeqCst);
    assert_same!(serve(&b.cache, "http://y/c", &calls, v2.clone()).await, v2);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 1,
        "the bucket's entry is purged too"
    );
    assert!(a.purges.stats().received >= 2 && b.purges.stats().received >= 2);
}

/// An origin whose response head (and so its `stored_at`) arrives at once, and whose body is
/// held until `release` fires: a fill that started before a purge and ends after it.
fn slow_origin(
    calls: &Arc<AtomicUsize>,
    data: Bytes,
    started: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
) -> impl FnOnce(
    Option<Arc<Metadata>>,
) -> futures_util::future::BoxFuture<'static, Result<Fetched, daramjwee::BoxError>>
       + Send
       + 'static {
    let calls = calls.clone();
    move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        let meta = Metadata::new(http::StatusCode::OK).with_content_length(data.len() as u64);
        Box::pin(async move {
            let _ = started.send(());
            let _ = release.await;
            Ok(Fetched::Entry {
                meta,
                body: EntryBody::from_bytes(data),
            })
        })
    }
}

#[tokio::test]
async fn fill_racing_a_purge_never_resurrects_the_body() {
    let s3 = require_s3!("purge-race");
    let (a, b, c) = (
        instance(&s3).await,
        instance(&s3).await,
        instance(&s3).await,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let (old, new) = (body(5000, 7), body(5000, 8));
    for round in 0..3 {
        let key = format!("http://x/race-{round}");
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel();
        let fill = {
            let (cache, key) = (b.cache.clone(), key.clone());
            let origin = slow_origin(&calls, old.clone(), started_tx, release_rx);
            tokio::spawn(async move {
                let got = cache.get(&key, origin).await.unwrap();
                got.body.collect().await.unwrap()
            })
        };
        started.await.unwrap();
        a.purges.purge_key(&key).await.unwrap();
        // Round 0: the fill ends at once; round 1: after B applied the purge; round 2: later.
        if round > 0 {
            tokio::time::sleep(INTERVAL * 2 * round).await;
        }
        release.send(()).unwrap();
        assert_same!(
            fill.await.unwrap(),
            old,
            "B's own client gets what it asked for"
        );
        assert!(
            purged_within(&b.cache, &key).await.is_some(),
            "not in B's hot tier"
        );
        tokio::time::sleep(INTERVAL * 2).await;
        for i in [&a, &b, &c] {
            assert!(
                hot(&i.cache).head(&key).await.unwrap().is_none(),
                "round {round}"
            );
            assert_same!(
                serve(&i.cache, &key, &calls, new.clone()).await,
                new,
                "round {round}"
            );
        }
    }
    // Commits still running (a loser deleting its body) end before the bucket is listed.
    for i in [&a, &b, &c] {
        i.cache.close(Duration::from_secs(10)).await.unwrap();
    }
    let store = s3.store();
    for p in s3
        .objects(&store)
        .await
        .iter()
        .filter(|p| p.ends_with(".body"))
    {
        let path = object_store::path::Path::from(p.as_str());
        let got = store.object_store().get(&path).await.unwrap();
        let bytes = got.bytes().await.unwrap();
        assert_same!(bytes, new, "only the new bodies are in the bucket: {p}");
    }
}

/// An instance with a disk hot tier (which survives a restart) and a state file.
async fn disk_instance(s3: &S3, dir: &std::path::Path, retention: Duration) -> Instance {
    let bucket = s3.store();
    let hot = FileStore::builder(dir.join("hot"))
        .capacity(64 << 20)
        .open();
    let cache = Cache::builder()
        .hot(hot.await.expect("open the disk tier"))
        .cold(bucket.clone())
        .cold_fill(ColdFill::WriteThrough)
        .default_ttl(Duration::from_secs(3600))
        .build();
    let purges = SharedPurges::builder(cache.clone(), bucket)
        .interval(INTERVAL)
        .retention(retention)
        .state_file(dir.join("purges.state"))
        .start()
        .await
        .expect("start shared purges");
    Instance { cache, purges }
}

async fn stop(i: Instance) {
    i.purges.shutdown();
    i.cache.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn restarted_instance_does_not_serve_purged_entries() {
    let s3 = require_s3!("purge-restart");
    let dir = tempfile::tempdir().unwrap();
    let a = instance(&s3).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (v1, v2) = (body(2000, 3), body(2000, 4));
    let c = disk_instance(&s3, dir.path(), Duration::from_secs(600)).await;
    for key in ["http://x/gone", "http://x/kept"] {
        assert_same!(serve(&c.cache, key, &calls, v1.clone()).await, v1);
    }
    stop(c).await;

    // While C is down: A purges one key, and the bucket's entry is replaced behind C's back.
    a.purges.purge_key("http://x/gone").await.unwrap();
    assert_same!(
        serve(&a.cache, "http://x/gone", &calls, v2.clone()).await,
        v2
    );

    let c = disk_instance(&s3, dir.path(), Duration::from_secs(600)).await;
    assert_eq!(
        c.purges.stats().hot_clears,
        0,
        "resumed from its state file"
    );
    assert!(hot(&c.cache).head("http://x/gone").await.unwrap().is_none());
    assert!(
        hot(&c.cache).head("http://x/kept").await.unwrap().is_some(),
        "what was not purged is kept across the restart"
    );
    let before = calls.load(Ordering::SeqCst);
    assert_same!(
        serve(&c.cache, "http://x/gone", &calls, v2.clone()).await,
        v2
    );
    assert_same!(
        serve(&c.cache, "http://x/kept", &calls, v2.clone()).await,
        v1
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "v2 from the bucket, v1 from disk"
    );
    stop(c).await;
}

#[tokio::test]
async fn instance_away_longer_than_the_retention_clears_its_hot_tier() {
    let s3 = require_s3!("purge-retention");
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(1);
    let a = instance(&s3).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let v1 = body(2000, 5);
    let c = disk_instance(&s3, dir.path(), retention).await;
    assert_same!(serve(&c.cache, "http://x/k", &calls, v1.clone()).await, v1);
    stop(c).await;

    a.purges.purge_key("http://x/other").await.unwrap();
    tokio::time::sleep(retention + Duration::from_millis(200)).await;
    let a_compacts = SharedPurges::builder(a.cache.clone(), s3.store())
        .interval(INTERVAL)
        .retention(retention)
        .start()
        .await
        .unwrap();
    a_compacts.compact().await.unwrap();

    let c = disk_instance(&s3, dir.path(), retention).await;
    assert_eq!(
        c.purges.stats().hot_clears,
        1,
        "purges it missed are gone from the log"
    );
    assert!(hot(&c.cache).head("http://x/k").await.unwrap().is_none());
    stop(c).await;
}

#[tokio::test]
async fn bucket_store_alone_keeps_its_purge_log_on_clear() {
    let s3 = require_s3!("purge-clear");
    let a = instance(&s3).await;
    a.purges.purge_key("k").await.unwrap();
    let store: BucketStore = s3.store();
    store.clear().await.unwrap();
    let left = s3.objects(&store).await;
    assert!(left.iter().all(|p| p.contains("/_purges/")), "{left:?}");
    assert!(
        left.iter().any(|p| p.ends_with("/_purges/checkpoint")),
        "{left:?}"
    );
}

#[tokio::test]
async fn packed_entries_are_shared_and_purged_like_any_other() {
    let s3 = require_s3!("purge-packed");
    let mut all = Vec::new();
    for _ in 0..3 {
        let bucket = s3.packed_store();
        let cache = engine(bucket.clone());
        let purges = SharedPurges::builder(cache.clone(), bucket)
            .interval(INTERVAL)
            .start()
            .await
            .unwrap();
        all.push(Instance { cache, purges });
    }
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    let calls = Arc::new(AtomicUsize::new(0));
    let (v1, v2) = (body(1500, 9), body(1500, 10));
    let keys = ["http://p/1", "http://p/2"];
    warm(&[a, b, c], &keys, &calls, &v1).await;
    let store = s3.store();
    let objs = s3.objects(&store).await;
    assert!(objs.iter().any(|p| p.ends_with(".pack")), "{objs:?}");
    assert!(
        !objs.iter().any(|p| p.ends_with(".body")),
        "small bodies are packed: {objs:?}"
    );

    a.purges.purge_key("http://p/1").await.unwrap();
    for i in [b, c] {
        assert!(purged_within(&i.cache, "http://p/1").await.is_some());
        assert!(hot(&i.cache).head("http://p/2").await.unwrap().is_some());
    }
    // B's cold tier still indexes the purged packed entry: the key's pointer floor outranks it.
    assert!(cold(&b.cache).get("http://p/1").await.unwrap().is_none());
    let before = calls.load(Ordering::SeqCst);
    assert_same!(serve(&c.cache, "http://p/1", &calls, v2.clone()).await, v2);
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
}
