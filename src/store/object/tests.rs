//! Unit tests of the object-store tier on the in-memory and local-directory backends.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::throttle::{ThrottleConfig, ThrottledStore};

use object_store::memory::InMemory;

use super::commit::Swap;
use super::layout::key_hash;
use super::pointer::{decode_pointer, encode_pointer, encode_tombstone};
use super::*;
use crate::error::Error;
use crate::store::Packing;

const MIB: usize = 1024 * 1024;

fn body(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn ok_meta() -> Metadata {
    Metadata::new(http::StatusCode::OK).with_etag("\"v1\"")
}

async fn fill(store: &BucketStore, key: &str, data: &Bytes, chunk: usize) {
    let mut w = store.put(key, ok_meta()).await.expect("put");
    for c in data.chunks(chunk.max(1)) {
        w.write(data.slice_ref(c)).await.expect("write");
    }
    w.commit().await.expect("commit");
}

async fn read(store: &BucketStore, key: &str) -> Option<(Arc<Metadata>, Bytes)> {
    let e = store.get(key).await.expect("get")?;
    Some((e.meta, e.body.collect().await.expect("body")))
}

async fn objects(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    let prefix = Path::from(prefix);
    let mut out: Vec<String> = store
        .list(Some(&prefix))
        .map(|m| m.expect("list").location.to_string())
        .collect()
        .await;
    out.sort();
    out
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn memory() -> (Arc<dyn ObjectStore>, BucketStore) {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = BucketStore::builder(os.clone(), "cache")
        .part_size(MIN_PART_SIZE)
        .build();
    (os, store.expect("build"))
}

fn local(dir: &tempfile::TempDir) -> BucketStore {
    let os = LocalFileSystem::new_with_prefix(dir.path()).expect("local fs");
    BucketStore::builder(Arc::new(os), "cache")
        .part_size(MIN_PART_SIZE)
        .build()
        .expect("build")
}

#[tokio::test]
async fn committed_entry_reads_back_byte_for_byte_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mem) = memory();
    for store in [mem, local(&dir)] {
        for (key, len) in [("empty", 0), ("small", 1000), ("multipart", 11 * MIB + 7)] {
            let data = body(len);
            fill(&store, key, &data, 256 * 1024).await;
            let (meta, got) = read(&store, key).await.expect("hit");
            assert_eq!(got, data, "{key}");
            assert_eq!(meta.content_length, Some(len as u64));
            assert_eq!(meta.etag.as_deref(), Some("\"v1\""));
        }
    }
}

#[tokio::test]
async fn uncommitted_entry_is_invisible() {
    let (os, store) = memory();
    let mut w = store.put("k", ok_meta()).await.unwrap();
    w.write(body(100)).await.unwrap();
    assert!(store.head("k").await.unwrap().is_none());
    assert!(store.get("k").await.unwrap().is_none());
    drop(w);
    assert!(objects(&os, "cache").await.is_empty());
}

#[tokio::test]
async fn head_reads_the_pointer_without_touching_the_body() {
    let (os, store) = memory();
    fill(&store, "k", &body(5000), 5000).await;
    // Remove every body object: head must still answer from the pointer alone.
    for p in objects(&os, "cache").await {
        if p.ends_with(".body") {
            os.delete(&Path::from(p)).await.unwrap();
        }
    }
    let meta = store.head("k").await.unwrap().expect("head from pointer");
    assert_eq!(meta.content_length, Some(5000));
    // ...while a get, which needs the body, is a miss.
    assert!(store.get("k").await.unwrap().is_none());
}

#[tokio::test]
async fn overwrite_replaces_entry_and_deletes_the_old_body() {
    let (os, store) = memory();
    fill(&store, "k", &body(10), 10).await;
    let second = Bytes::from_static(b"second version");
    let mut w = store.put("k", ok_meta().with_etag("\"v2\"")).await.unwrap();
    w.write(second.clone()).await.unwrap();
    w.commit().await.unwrap();
    let (meta, got) = read(&store, "k").await.unwrap();
    assert_eq!(got, second);
    assert_eq!(meta.etag.as_deref(), Some("\"v2\""));
    let objs = objects(&os, "cache").await;
    assert_eq!(
        objs.iter().filter(|p| p.ends_with(".body")).count(),
        1,
        "{objs:?}"
    );
    assert_eq!(
        objs.iter().filter(|p| p.ends_with(".meta")).count(),
        1,
        "{objs:?}"
    );
}

#[tokio::test]
async fn delete_leaves_a_tombstone_and_removes_the_body() {
    let (os, store) = memory();
    fill(&store, "k", &body(10), 10).await;
    fill(&store, "other", &body(10), 10).await;
    store.delete("k").await.unwrap();
    store.delete("never-stored").await.unwrap();
    assert!(store.get("k").await.unwrap().is_none());
    let objs = objects(&os, "cache").await;
    let bodies = objs.iter().filter(|p| p.ends_with(".body")).count();
    assert_eq!(bodies, 1, "only `other`'s body is left: {objs:?}");
    // Two tombstones (`k`, `never-stored`) and `other`'s pointer.
    assert_eq!(objs.len() - bodies, 3, "{objs:?}");
    assert!(read(&store, "other").await.is_some());
    // A fill after the delete is served again.
    fill(&store, "k", &body(7), 7).await;
    assert_eq!(read(&store, "k").await.unwrap().1, body(7));
}

#[tokio::test]
async fn fill_older_than_a_delete_is_not_committed_and_leaves_no_body() {
    let (os, store) = memory();
    let mut meta = ok_meta();
    meta.stored_at = SystemTime::now() - Duration::from_secs(1);
    let mut w = store.put("k", meta).await.unwrap();
    w.write(body(10)).await.unwrap();
    store.delete("k").await.unwrap();
    w.commit().await.expect("a purged fill is dropped quietly");
    assert!(store.get("k").await.unwrap().is_none());
    let objs = objects(&os, "cache").await;
    assert!(objs.iter().all(|p| !p.ends_with(".body")), "{objs:?}");
}

#[tokio::test]
async fn commit_that_lost_its_swap_deletes_its_own_body() {
    let (os, store) = memory();
    let h = key_hash("k");
    let seen = store.inner.read_slot("k", &h).await.unwrap();
    assert!(seen.version.is_none(), "absent");
    // Another instance commits between our read and our swap.
    fill(&BucketStore::new(os.clone(), "cache"), "k", &body(3), 3).await;
    let path = store.inner.layout.meta_path(&h);
    let record = encode_tombstone(SystemTime::now());
    let swap = store
        .inner
        .swapper
        .swap(os.as_ref(), "k", &path, None, record.clone());
    assert_eq!(
        swap.await.unwrap(),
        Swap::Lost,
        "create over an existing pointer"
    );
    let now = store.inner.read_slot("k", &h).await.unwrap();
    let stale = seen.version.or(Some(object_store::UpdateVersion {
        e_tag: Some("\"x\"".into()),
        version: None,
    }));
    let swap = store
        .inner
        .swapper
        .swap(os.as_ref(), "k", &path, stale.as_ref(), record.clone());
    assert_eq!(
        swap.await.unwrap(),
        Swap::Lost,
        "update against a stale version"
    );
    let swap = store
        .inner
        .swapper
        .swap(os.as_ref(), "k", &path, now.version.as_ref(), record);
    assert_eq!(
        swap.await.unwrap(),
        Swap::Done,
        "update against the version read"
    );
}

#[tokio::test]
async fn racing_writers_leave_one_pointer_and_one_body() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let stores: Vec<_> = (0..4)
        .map(|_| BucketStore::new(os.clone(), "cache"))
        .collect();
    for round in 0..20u8 {
        let mut writers = Vec::new();
        for s in &stores {
            let mut w = s.put("k", ok_meta()).await.unwrap();
            w.write(Bytes::from(vec![round; 100])).await.unwrap();
            writers.push(w);
        }
        let commits = writers.into_iter().map(|w| tokio::spawn(w.commit()));
        for c in commits {
            c.await.unwrap().unwrap();
        }
    }
    let objs = objects(&os, "cache").await;
    assert_eq!(
        objs.iter().filter(|p| p.ends_with(".body")).count(),
        1,
        "{objs:?}"
    );
    assert_eq!(
        read(&stores[0], "k").await.unwrap().1,
        Bytes::from(vec![19u8; 100])
    );
}

#[tokio::test]
async fn prefix_purge_masks_older_entries_only() {
    let (_, store) = memory();
    fill(&store, "http://a/x/1", &body(10), 10).await;
    fill(&store, "http://b/1", &body(10), 10).await;
    assert_eq!(store.purge_prefix("http://a/").await.unwrap(), 0);
    assert!(store.get("http://a/x/1").await.unwrap().is_none());
    assert!(store.head("http://a/x/1").await.unwrap().is_none());
    assert!(read(&store, "http://b/1").await.is_some());
    let mut old = ok_meta();
    old.stored_at = SystemTime::now() - Duration::from_secs(5);
    let mut w = store.put("http://a/y", old).await.unwrap();
    w.write(body(3)).await.unwrap();
    w.commit().await.unwrap();
    assert!(
        store.get("http://a/y").await.unwrap().is_none(),
        "older than the purge"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    fill(&store, "http://a/x/1", &body(4), 4).await;
    assert_eq!(read(&store, "http://a/x/1").await.unwrap().1, body(4));
}

#[tokio::test]
async fn overwrite_on_a_backend_without_conditional_updates_still_replaces() {
    // The local filesystem implements `PutMode::Create` but not `PutMode::Update`.
    let dir = tempfile::tempdir().unwrap();
    let store = local(&dir);
    fill(&store, "k", &body(10), 10).await;
    fill(&store, "k", &body(20), 20).await;
    assert_eq!(read(&store, "k").await.unwrap().1, body(20));
    store.delete("k").await.unwrap();
    assert!(store.get("k").await.unwrap().is_none());
    let bodies = files_under(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "body"))
        .count();
    assert_eq!(bodies, 0);
}

#[tokio::test]
async fn update_metadata_keeps_the_body_and_its_length() {
    let (_, store) = memory();
    let data = body(3000);
    fill(&store, "k", &data, 1000).await;
    let refreshed = ok_meta().with_etag("\"v9\"").with_content_length(1);
    assert!(store.update_metadata("k", refreshed).await.unwrap());
    let (meta, got) = read(&store, "k").await.unwrap();
    assert_eq!(got, data);
    assert_eq!(meta.etag.as_deref(), Some("\"v9\""));
    assert_eq!(meta.content_length, Some(3000));
    assert!(!store.update_metadata("absent", ok_meta()).await.unwrap());
}

#[tokio::test]
async fn aborted_multipart_upload_leaves_no_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = local(&dir);
    let mut w = store.put("big", ok_meta()).await.unwrap();
    for _ in 0..12 {
        w.write(body(MIB)).await.unwrap();
    }
    assert!(
        !files_under(dir.path()).is_empty(),
        "the upload is staged on disk"
    );
    w.abort().await.unwrap();
    assert_eq!(files_under(dir.path()), Vec::<std::path::PathBuf>::new());
    assert!(store.get("big").await.unwrap().is_none());
}

#[tokio::test]
async fn dropped_multipart_writer_is_aborted_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = local(&dir);
    let mut w = store.put("big", ok_meta()).await.unwrap();
    for _ in 0..12 {
        w.write(body(MIB)).await.unwrap();
    }
    assert!(!files_under(dir.path()).is_empty());
    drop(w);
    // The abort runs on a spawned task; give it a bounded number of turns.
    let mut left = files_under(dir.path());
    for _ in 0..500 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        left = files_under(dir.path());
    }
    assert_eq!(left, Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn body_not_matching_declared_length_is_not_committed() {
    let (os, store) = memory();
    let mut w = store
        .put("k", ok_meta().with_content_length(10))
        .await
        .unwrap();
    w.write(body(9)).await.unwrap();
    assert!(matches!(w.commit().await, Err(StoreError::Corrupt { .. })));
    assert!(store.head("k").await.unwrap().is_none());
    assert!(objects(&os, "cache").await.is_empty());
}

#[tokio::test]
async fn entry_older_than_the_ttl_is_a_miss() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = BucketStore::builder(os, "c")
        .ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut old = ok_meta();
    old.stored_at = SystemTime::now() - Duration::from_secs(7200);
    let mut w = store.put("old", old.clone()).await.unwrap();
    w.write(body(10)).await.unwrap();
    w.commit().await.unwrap();
    fill(&store, "new", &body(10), 10).await;

    assert!(store.get("old").await.unwrap().is_none());
    assert!(store.head("old").await.unwrap().is_none());
    assert!(!store.update_metadata("old", old).await.unwrap());
    assert!(read(&store, "new").await.is_some());
}

#[tokio::test]
async fn hash_collision_is_a_miss_not_another_keys_body() {
    let (os, store) = memory();
    // What key "a" would have written if it hashed like "b": its body in b's directory and
    // a pointer at b's path that records "a".
    let h = key_hash("b");
    let body_path = store.inner.layout.new_body_path(&h);
    os.put(&body_path, body(10).into()).await.unwrap();
    let record = encode_pointer(
        &body_path,
        "a",
        &ok_meta().with_content_length(10),
        SystemTime::UNIX_EPOCH,
    );
    os.put(&store.meta_path("b"), record.into()).await.unwrap();

    assert!(store.get("b").await.unwrap().is_none());
    assert!(store.head("b").await.unwrap().is_none());
    assert!(!store.update_metadata("b", ok_meta()).await.unwrap());
    // Deleting `b` must not take the other key's entry with it.
    store.delete("b").await.unwrap();
    assert!(os.head(&store.meta_path("b")).await.is_ok());
    assert!(os.head(&body_path).await.is_ok());
}

#[tokio::test]
async fn corrupt_pointer_is_an_error_and_can_be_deleted() {
    let (os, store) = memory();
    fill(&store, "k", &body(10), 10).await;
    let path = store.meta_path("k");
    let mut raw = os.get(&path).await.unwrap().bytes().await.unwrap().to_vec();
    let last = raw.len() - 1;
    raw[last] ^= 0x55;
    os.put(&path, raw.into()).await.unwrap();
    assert!(matches!(
        store.get("k").await,
        Err(StoreError::Corrupt { .. })
    ));
    os.put(&path, Bytes::from_static(b"garbage").into())
        .await
        .unwrap();
    assert!(matches!(
        store.head("k").await,
        Err(StoreError::Corrupt { .. })
    ));
    store.delete("k").await.unwrap();
    assert!(store.get("k").await.unwrap().is_none());
}

#[tokio::test]
async fn pointer_naming_a_foreign_path_is_rejected() {
    let (os, store) = memory();
    fill(&store, "victim", &body(10), 10).await;
    let foreign = Path::from("cache/elsewhere/x.body");
    os.put(&foreign, Bytes::from_static(b"0123456789").into())
        .await
        .unwrap();
    let meta = ok_meta().with_content_length(10);
    let record = encode_pointer(&foreign, "k", &meta, SystemTime::UNIX_EPOCH);
    os.put(&store.meta_path("k"), record.into()).await.unwrap();
    assert!(matches!(
        store.get("k").await,
        Err(StoreError::Corrupt { .. })
    ));
    store.delete("k").await.unwrap();
    assert!(
        os.head(&foreign).await.is_ok(),
        "delete stays inside the key's directory"
    );
}

#[tokio::test]
async fn body_of_the_wrong_size_is_a_miss() {
    let (os, store) = memory();
    fill(&store, "k", &body(100), 100).await;
    let body_path = objects(&os, "cache")
        .await
        .into_iter()
        .find(|p| p.ends_with(".body"))
        .unwrap();
    os.put(&Path::from(body_path), body(99).into())
        .await
        .unwrap();
    assert!(store.get("k").await.unwrap().is_none());
}

#[test]
fn pointer_record_round_trips_and_rejects_every_bit_flip() {
    let body = Path::from("p/ab/cd/h/x.body");
    let mut meta = ok_meta().with_content_length(42);
    // The codec keeps microseconds.
    meta.stored_at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    let floor = SystemTime::UNIX_EPOCH + Duration::from_micros(1_600_000_000_654_321);
    let rec = encode_pointer(&body, "key", &meta, floor);
    let (got_floor, p) = decode_pointer(&rec).unwrap();
    let p = p.expect("live");
    assert_eq!((p.key.as_str(), p.body.as_ref()), ("key", body.as_ref()));
    assert_eq!((p.meta, got_floor), (meta, floor));
    let tomb = encode_tombstone(floor);
    assert!(matches!(decode_pointer(&tomb), Ok((f, None)) if f == floor));
    for n in 0..tomb.len() {
        assert!(decode_pointer(&tomb[..n]).is_err());
    }
    for i in 0..rec.len() {
        let mut bad = rec.clone();
        bad[i] ^= 0x10;
        assert!(decode_pointer(&bad).is_err(), "flip at {i} accepted");
    }
    for n in 0..rec.len() {
        assert!(decode_pointer(&rec[..n]).is_err());
    }
}

#[tokio::test(start_paused = true)]
async fn stalled_backend_times_out_instead_of_hanging() {
    let os = InMemory::new();
    let slow = ThrottledStore::new(
        os,
        ThrottleConfig {
            wait_get_per_call: Duration::from_secs(3600),
            wait_put_per_call: Duration::from_secs(3600),
            wait_delete_per_call: Duration::from_secs(3600),
            ..ThrottleConfig::default()
        },
    );
    let store = BucketStore::builder(Arc::new(slow), "c")
        .op_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let timed_out = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Timeout { ref key, .. }) if key == "k");
    assert!(timed_out(store.get("k").await.map(drop)));
    assert!(timed_out(store.head("k").await.map(drop)));
    assert!(timed_out(store.delete("k").await));
    assert!(timed_out(
        store.update_metadata("k", ok_meta()).await.map(drop)
    ));
    let mut w = store.put("k", ok_meta()).await.unwrap();
    w.write(body(10)).await.unwrap();
    assert!(timed_out(w.commit().await));
}

#[tokio::test(start_paused = true)]
async fn stalled_body_ends_with_a_timeout_error() {
    let first = futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))]);
    let inner = first.chain(futures_util::stream::pending()).boxed();
    let mut s = BodyStream::new(inner, "k".into(), 6, Duration::from_secs(1));
    assert_eq!(s.next().await.unwrap().unwrap(), "abc");
    assert!(matches!(
        s.next().await,
        Some(Err(Error::Store(StoreError::Timeout { .. })))
    ));
    assert!(s.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn slow_consumer_is_not_taken_for_a_stalled_body() {
    // Each chunk takes half the idle limit to arrive once asked for.
    let inner = futures_util::stream::unfold(0u8, |i| async move {
        if i == 3 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some((Ok(Bytes::from(vec![i; 2])), i + 1))
    })
    .boxed();
    let mut s = BodyStream::new(inner, "k".into(), 6, Duration::from_secs(1));
    let mut got = Vec::new();
    while let Some(chunk) = s.next().await {
        got.extend_from_slice(&chunk.expect("no stall"));
        // The client takes far longer than the idle limit between reads.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert_eq!(got, [0, 0, 1, 1, 2, 2]);
}

#[tokio::test]
async fn body_shorter_or_longer_than_expected_ends_with_an_error() {
    let short = futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))]).boxed();
    let mut s = BodyStream::new(short, "k".into(), 4, Duration::from_secs(1));
    assert!(s.next().await.unwrap().is_ok());
    assert!(matches!(s.next().await, Some(Err(Error::Truncated { .. }))));
    let long = futures_util::stream::iter([Ok(Bytes::from_static(b"abcde"))]).boxed();
    let mut s = BodyStream::new(long, "k".into(), 4, Duration::from_secs(1));
    assert!(matches!(s.next().await, Some(Err(Error::TooLong { .. }))));
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn two_instances_on_one_bucket_see_each_others_entries() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = BucketStore::new(os.clone(), "shared");
    let b = BucketStore::new(os, "shared");
    fill(&a, "k", &body(1234), 100).await;
    assert_eq!(read(&b, "k").await.unwrap().1, body(1234));
    b.delete("k").await.unwrap();
    assert!(a.get("k").await.unwrap().is_none());
}

#[tokio::test]
async fn clear_removes_everything_under_the_prefix_only() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = BucketStore::new(os.clone(), "a");
    let b = BucketStore::new(os.clone(), "b");
    fill(&a, "k1", &body(10), 10).await;
    fill(&a, "k2", &body(10), 10).await;
    fill(&b, "k1", &body(10), 10).await;
    a.clear().await.unwrap();
    assert!(objects(&os, "a").await.is_empty());
    assert_eq!(objects(&os, "b").await.len(), 2);
}

#[tokio::test]
async fn file_url_stores_under_the_urls_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/cold", dir.path().display());
    let store = BucketStore::from_url(&url).unwrap().build().unwrap();
    fill(&store, "k", &body(10), 10).await;
    assert_eq!(read(&store, "k").await.unwrap().1, body(10));
    let files = files_under(&dir.path().join("cold"));
    assert_eq!(files.len(), 2, "{files:?}");
}

#[test]
fn unsupported_urls_are_errors() {
    assert!(BucketStore::from_url("ftp://host/x").is_err());
    assert!(BucketStore::from_url("not a url").is_err());
    assert!(BucketStore::from_url("memory:///x")
        .unwrap()
        .option("k", "v")
        .build()
        .is_err());
    #[cfg(not(feature = "aws"))]
    assert!(BucketStore::from_url("s3://bucket/x").is_err());
}

fn packed(os: &Arc<dyn ObjectStore>) -> BucketStore {
    let packing = Packing::new(4096)
        .pack_bytes(64 << 10)
        .flush_after(Duration::from_millis(20))
        .refresh(Duration::from_millis(1));
    BucketStore::builder(os.clone(), "cache")
        .packing(packing)
        .build()
        .unwrap()
}

#[tokio::test]
async fn small_fills_share_packs_and_read_back_byte_for_byte() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = packed(&os);
    let commits: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { fill(&store, &format!("k{i}"), &body(1000 + i), 300).await })
        })
        .collect();
    for c in commits {
        c.await.unwrap();
    }
    fill(&store, "big", &body(10_000), 1000).await;
    let objs = objects(&os, "cache").await;
    let packs = objs.iter().filter(|p| p.ends_with(".pack")).count();
    assert!(
        (1..=8).contains(&packs),
        "200 fills in a few packs: {objs:?}"
    );
    assert_eq!(
        objs.iter().filter(|p| p.ends_with(".body")).count(),
        1,
        "only `big`"
    );
    for i in 0..200 {
        let (meta, got) = read(&store, &format!("k{i}")).await.expect("packed hit");
        assert_eq!(got, body(1000 + i));
        assert_eq!(meta.content_length, Some(1000 + i as u64));
    }
    assert_eq!(read(&store, "big").await.unwrap().1, body(10_000));
    // Another instance finds them on its first lookup.
    let other = packed(&os);
    assert_eq!(read(&other, "k7").await.unwrap().1, body(1007));
    assert_eq!(other.pack_stats().unwrap().indexed, 200);
}

#[tokio::test]
async fn purged_packed_entry_is_a_miss_on_every_instance() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (a, b) = (packed(&os), packed(&os));
    fill(&a, "k", &body(100), 100).await;
    assert!(read(&b, "k").await.is_some());
    a.delete("k").await.unwrap();
    assert!(a.get("k").await.unwrap().is_none());
    assert!(
        b.get("k").await.unwrap().is_none(),
        "the pointer's floor outranks B's index"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    fill(&b, "k", &body(50), 50).await;
    // A finds B's new pack within its refresh interval (looked for in the background).
    let mut got = None;
    for _ in 0..100 {
        got = read(&a, "k").await;
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(got.expect("found within a bounded wait").1, body(50));
}

#[tokio::test]
async fn newer_entry_wins_between_packed_and_own_object() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = packed(&os);
    fill(&store, "k", &body(100), 100).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    fill(&store, "k", &body(9000), 1000).await;
    assert_eq!(read(&store, "k").await.unwrap().1, body(9000));
    tokio::time::sleep(Duration::from_millis(2)).await;
    fill(&store, "k", &body(10), 10).await;
    assert_eq!(read(&store, "k").await.unwrap().1, body(10));
}

#[tokio::test]
async fn trusted_index_reads_a_packed_entry_without_its_pointer() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let trusting = |os: &Arc<dyn ObjectStore>| {
        let packing = Packing::new(4096)
            .flush_after(Duration::from_millis(5))
            .trust_index(true);
        let b = BucketStore::builder(os.clone(), "cache").packing(packing);
        b.build().unwrap()
    };
    let (a, b) = (trusting(&os), trusting(&os));
    fill(&a, "k", &body(100), 100).await;
    // A broken pointer would fail a read that looks at it: this one does not.
    os.put(&a.meta_path("k"), Bytes::from_static(b"garbage").into())
        .await
        .unwrap();
    assert_eq!(read(&b, "k").await.unwrap().1, body(100));
    // A purge on B is applied to B's index at once; a prefix floor outranks it too.
    b.delete("k").await.unwrap();
    assert!(b.get("k").await.unwrap().is_none());
    a.purge_prefix("k").await.unwrap();
    assert!(a.get("k").await.unwrap().is_none());
}

#[tokio::test]
async fn pack_index_drops_entries_past_the_ttl() {
    let os: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let packing = Packing::new(4096)
        .flush_after(Duration::from_millis(5))
        .refresh(Duration::from_millis(1));
    let store = BucketStore::builder(os.clone(), "cache")
        .ttl(Duration::from_secs(3600))
        .packing(packing)
        .build()
        .unwrap();
    let mut old = ok_meta();
    old.stored_at = SystemTime::now() - Duration::from_secs(7200);
    for (key, meta) in [("old", old), ("new", ok_meta())] {
        let mut w = store.put(key, meta).await.unwrap();
        w.write(body(10)).await.unwrap();
        w.commit().await.unwrap();
    }
    assert!(store.get("old").await.unwrap().is_none(), "past the TTL");
    let mut indexed = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let _ = store.get("new").await.unwrap(); // lookups drive the refresh
        indexed = store.pack_stats().unwrap().indexed;
        if indexed == 1 {
            break;
        }
    }
    assert_eq!(indexed, 1, "the expired entry left the index");
    assert!(read(&store, "new").await.is_some());
}
