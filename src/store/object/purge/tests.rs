//! The purge log protocol on the in-memory backend (the multi-instance behaviour against a real
//! S3 server is in `tests/object_store_purge.rs`).

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::ObjectStore;

use super::log::Log;
use super::SharedPurges;
use crate::store::object::{BucketStore, PURGE_DIR};
use crate::store::{MemStore, Store};
use crate::{Cache, Metadata};

const TICK: Duration = Duration::from_millis(10);

async fn instance(
    os: &Arc<dyn ObjectStore>,
    retention: Duration,
) -> (Cache, BucketStore, SharedPurges) {
    let bucket = BucketStore::new(os.clone(), "c");
    let cache = Cache::builder()
        .hot(MemStore::new(1 << 20))
        .cold(bucket.clone())
        .build();
    let purges = SharedPurges::builder(cache.clone(), bucket.clone())
        // Polls rarely (these tests sync by hand) unless the retention is short: it is at least
        // four intervals.
        .interval(retention / 4)
        .retention(retention)
        .start()
        .await
        .unwrap();
    (cache, bucket, purges)
}

fn log(os: &Arc<dyn ObjectStore>, bucket: &BucketStore) -> Log {
    let dir = bucket.inner.layout.under(PURGE_DIR);
    Log::new(os.clone(), dir, Duration::from_secs(5))
}

async fn store_entry(store: &BucketStore, key: &str) {
    let mut w = store
        .put(key, Metadata::new(http::StatusCode::OK))
        .await
        .unwrap();
    w.write(bytes::Bytes::from_static(b"body")).await.unwrap();
    w.commit().await.unwrap();
}

#[tokio::test]
async fn concurrent_publishers_take_dense_distinct_numbers_and_everyone_applies_all() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(instance(&os, Duration::from_secs(600)).await);
    }
    let tasks: Vec<_> = all
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, p))| {
            (0..5).map(move |n| {
                let p = p.clone();
                tokio::spawn(async move { p.purge_key(&format!("k{i}-{n}")).await })
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for (_, _, p) in &all {
        p.sync().await.unwrap();
        let s = p.stats();
        assert_eq!((s.applied_seq, s.published + s.received), (15, 15), "{s:?}");
    }
    let log = log(&os, &all[0].1);
    for seq in 1..=15 {
        assert!(log.read(seq).await.unwrap().is_some(), "entry {seq}");
    }
    assert!(log.read(16).await.unwrap().is_none());
}

#[tokio::test]
async fn compaction_drops_expired_entries_and_keeps_prefix_floors_for_new_instances() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let retention = TICK * 4;
    let (_, bucket, a) = instance(&os, retention).await;
    store_entry(&bucket, "http://x/old").await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    a.purge_prefix("http://x/").await.unwrap();
    a.purge_key("k").await.unwrap();
    tokio::time::sleep(retention * 2).await;
    a.purge_key("recent").await.unwrap();
    a.compact().await.unwrap();

    let log = log(&os, &bucket);
    assert!(
        log.read(1).await.unwrap().is_none(),
        "expired entries deleted"
    );
    assert!(log.read(2).await.unwrap().is_none());
    assert!(log.read(3).await.unwrap().is_some(), "recent entry kept");
    let (cp, _) = log.checkpoint().await.unwrap().unwrap();
    assert_eq!((cp.oldest, cp.head), (3, 3));
    assert_eq!(cp.floors.len(), 1, "{cp:?}");

    // A new instance learns the prefix purge from the checkpoint alone.
    let (_, b_bucket, b) = instance(&os, retention).await;
    assert_eq!(b.stats().applied_seq, 3);
    assert!(b_bucket.get("http://x/old").await.unwrap().is_none());
}

#[tokio::test]
async fn replayed_key_purge_costs_no_second_tombstone() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (_, bucket, a) = instance(&os, Duration::from_secs(600)).await;
    let (_, _, b) = instance(&os, Duration::from_secs(600)).await;
    store_entry(&bucket, "k").await;
    a.purge_key("k").await.unwrap();
    let pointer = bucket.meta_path("k");
    let before = object_store::ObjectStoreExt::head(os.as_ref(), &pointer)
        .await
        .unwrap();
    assert_eq!(b.sync().await.unwrap(), 1);
    let after = object_store::ObjectStoreExt::head(os.as_ref(), &pointer)
        .await
        .unwrap();
    assert_eq!(
        before.e_tag, after.e_tag,
        "B found the purge in the bucket already"
    );
    assert_eq!(b.stats().received, 1);
}
