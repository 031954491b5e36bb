//! File store tests, on a real filesystem (tempfile). They use a tiny FIFO policy of their own so
//! they do not depend on the built-in policies.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::{CommitMode, FileStore, Loc};
use crate::entry::{Metadata, StoredEntry};
use crate::error::{Error, StoreError};
use crate::eviction::{EvictionPolicy, PolicyKind};
use crate::store::{Store, StoreWriter};

/// First in, first out; hits change nothing.
#[derive(Debug, Default)]
struct Fifo {
    order: VecDeque<u64>,
    weights: HashMap<u64, u64>,
}

impl EvictionPolicy for Fifo {
    fn insert(&mut self, id: u64, weight: u64) {
        if self.weights.insert(id, weight).is_none() {
            self.order.push_back(id);
        }
    }
    fn touch(&mut self, _id: u64) {}
    fn remove(&mut self, id: u64) {
        if self.weights.remove(&id).is_some() {
            self.order.retain(|&x| x != id);
        }
    }
    fn evict(&mut self) -> Option<u64> {
        let id = self.order.pop_front()?;
        self.weights.remove(&id);
        Some(id)
    }
    fn len(&self) -> usize {
        self.weights.len()
    }
    fn weight(&self) -> u64 {
        self.weights.values().sum()
    }
}

fn fifo() -> PolicyKind {
    PolicyKind::Custom(Arc::new(|_| Box::new(Fifo::default())))
}

async fn open(dir: &Path, capacity: u64) -> FileStore {
    FileStore::builder(dir)
        .capacity(capacity)
        .policy(fifo())
        .open()
        .await
        .expect("open store")
}

fn meta() -> Metadata {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    Metadata::new(StatusCode::OK)
        .with_headers(headers)
        .with_etag("\"v1\"")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// Writes `body` in 10 000-byte chunks without committing.
async fn write(store: &FileStore, key: &str, body: &[u8]) -> Box<dyn StoreWriter> {
    let mut w = store.put(key, meta()).await.expect("put");
    for c in body.chunks(10_000) {
        w.write(Bytes::copy_from_slice(c)).await.expect("write");
    }
    w
}

async fn put(store: &FileStore, key: &str, body: &[u8]) {
    write(store, key, body)
        .await
        .commit()
        .await
        .expect("commit");
}

/// Reads a whole entry; panics if its stream does not end cleanly.
async fn read(store: &FileStore, key: &str) -> Option<Vec<u8>> {
    let entry = store.get(key).await.expect("get")?;
    let body = entry.body.collect().await.expect("clean body");
    Some(body.to_vec())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("dir entry");
            if e.file_type().expect("file type").is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn disk_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Flips bits of the byte at `at` in the file at `path` (corruption behind the store's back).
fn flip_byte(path: &Path, at: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= mask;
    std::fs::write(path, &bytes).unwrap();
}

fn entry_path(dir: &Path, key: &str) -> PathBuf {
    Loc::of(key).path(&dir.join("objects"))
}

#[tokio::test]
async fn committed_bodies_read_back_equal_small_empty_and_large() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let bodies = [
        ("small", b"hello, disk".to_vec()),
        ("empty", Vec::new()),
        ("large", pattern(5 << 20, 7)),
    ];
    for (k, b) in &bodies {
        put(&store, k, b).await;
    }
    for (k, b) in &bodies {
        assert_eq!(read(&store, k).await.as_ref(), Some(b), "{k}");
        let head = store.head(k).await.unwrap().expect("head hit");
        assert_eq!(head.content_length, Some(b.len() as u64));
        assert_eq!(head.etag.as_deref(), Some("\"v1\""));
        assert_eq!(head.headers["content-type"], "text/plain");
    }
    assert_eq!(store.len(), Some(3));
    assert_eq!(store.used_bytes(), Some(disk_bytes(dir.path())));
    assert_eq!(read(&store, "absent").await, None);
    assert_eq!(store.name(), "file");
}

#[tokio::test]
async fn large_body_streams_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let body = pattern(1 << 20, 3);
    put(&store, "k", &body).await;
    let mut stream = store.get("k").await.unwrap().unwrap().body;
    let (mut chunks, mut got) = (0, Vec::new());
    while let Some(c) = stream.next().await {
        let c = c.expect("clean chunk");
        assert!(c.len() <= 64 * 1024, "chunk of {} bytes", c.len());
        chunks += 1;
        got.extend_from_slice(&c);
    }
    assert_eq!(got, body);
    assert_eq!(chunks, 16);
    assert!(
        stream.next().await.is_none(),
        "polling past the end stays ended"
    );
}

#[tokio::test]
async fn uncommitted_or_aborted_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let w = write(&store, "dropped", &pattern(300_000, 1)).await;
    assert!(
        store.used_bytes().unwrap() >= 300_000,
        "in-flight bytes are counted"
    );
    drop(w);
    write(&store, "aborted", &pattern(300_000, 2))
        .await
        .abort()
        .await
        .unwrap();
    assert!(files_under(dir.path()).is_empty());
    assert_eq!(store.used_bytes(), Some(0));
    assert_eq!(read(&store, "dropped").await, None);
    assert_eq!(read(&store, "aborted").await, None);
}

#[tokio::test]
async fn restart_keeps_entries_and_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("key-{i}"), pattern(i * 150_000 + 3, i as u8)))
        .collect();
    let used = {
        let store = open(dir.path(), 64 << 20).await;
        for (k, b) in &bodies {
            put(&store, k, b).await;
        }
        store.used_bytes()
    };
    let store = open(dir.path(), 64 << 20).await;
    assert_eq!(store.len(), Some(4));
    assert_eq!(store.used_bytes(), used);
    for (k, b) in &bodies {
        assert_eq!(read(&store, k).await.as_ref(), Some(b), "{k}");
    }
}

#[tokio::test]
async fn corrupt_trailer_is_a_miss_and_the_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    for (key, at_end) in [("record", 40), ("footer", 10)] {
        put(&store, key, &pattern(200_000, 1)).await;
        let path = entry_path(dir.path(), key);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        flip_byte(&path, len - at_end, 0x20);
        assert!(store.head(key).await.unwrap().is_none(), "{key}");
        assert!(!path.exists(), "{key}: corrupt file still on disk");
        assert_eq!(read(&store, key).await, None);
    }
    assert_eq!(store.len(), Some(0));
    assert_eq!(store.used_bytes(), Some(0));
}

#[tokio::test]
async fn flipped_body_byte_ends_the_stream_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let body = pattern(300_000, 9);
    put(&store, "k", &body).await;
    let path = entry_path(dir.path(), "k");
    flip_byte(&path, 150_000, 1);

    let mut stream = store
        .get("k")
        .await
        .unwrap()
        .expect("trailer is valid")
        .body;
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    match items.last() {
        Some(Err(Error::Store(StoreError::Corrupt { key, .. }))) => assert_eq!(key, "k"),
        other => panic!("stream did not end with a corrupt error: {other:?}"),
    }
    let served: usize = items.iter().flatten().map(|c| c.len()).sum();
    assert!(served < body.len(), "the whole corrupt body was served");
    assert!(!path.exists(), "corrupt file still on disk");
    assert_eq!(store.len(), Some(0));
}

#[tokio::test]
async fn flipped_byte_in_a_small_body_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    put(&store, "k", b"small body read in one go").await;
    let path = entry_path(dir.path(), "k");
    flip_byte(&path, 3, 1);
    assert!(store.get("k").await.unwrap().is_none());
    assert!(!path.exists());
}

#[tokio::test]
async fn truncated_file_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    for (key, keep) in [("short", 0.5), ("clipped", 0.999), ("empty", 0.0)] {
        put(&store, key, &pattern(100_000, 4)).await;
        let path = entry_path(dir.path(), key);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len((len as f64 * keep) as u64).unwrap();
        drop(f);
        assert!(store.get(key).await.unwrap().is_none(), "{key}");
        assert!(!path.exists(), "{key}");
    }
    assert_eq!(store.used_bytes(), Some(0));
}

#[tokio::test]
async fn open_sweeps_orphaned_temp_files_and_half_written_entries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 64 << 20).await;
        put(&store, "kept", b"kept").await;
        // A writer "killed" mid-write: its temp file stays behind if Drop never runs.
        std::mem::forget(write(&store, "crashed", &pattern(100_000, 1)).await);
    }
    std::fs::write(dir.path().join("tmp").join("stray.tmp"), b"junk").unwrap();
    let half = entry_path(dir.path(), "half");
    std::fs::create_dir_all(half.parent().unwrap()).unwrap();
    std::fs::write(&half, pattern(1000, 2)).unwrap();

    let store = open(dir.path(), 64 << 20).await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert!(!half.exists());
    assert_eq!(store.len(), Some(1));
    assert_eq!(read(&store, "kept").await.as_deref(), Some(&b"kept"[..]));
}

#[tokio::test]
async fn file_holding_another_key_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    put(&store, "A", b"body of A").await;
    put(&store, "B", b"body of B").await;
    // A collision, simulated: B's path now holds A's entry.
    std::fs::copy(entry_path(dir.path(), "A"), entry_path(dir.path(), "B")).unwrap();
    assert_eq!(read(&store, "B").await, None);
    assert!(store.head("B").await.unwrap().is_none());
    assert_eq!(read(&store, "A").await.as_deref(), Some(&b"body of A"[..]));

    // On open, a file whose name is not the hash of the key inside is dropped too.
    let c = entry_path(dir.path(), "C");
    std::fs::create_dir_all(c.parent().unwrap()).unwrap();
    std::fs::copy(entry_path(dir.path(), "A"), &c).unwrap();
    drop(store);
    let store = open(dir.path(), 64 << 20).await;
    assert!(!c.exists());
    assert_eq!(store.len(), Some(1));
    assert_eq!(read(&store, "C").await, None);
}

#[tokio::test]
async fn odd_keys_never_escape_the_directory() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("cache");
    let store = open(&dir, 64 << 20).await;
    let long = "k/".repeat(5 * 1024);
    let keys = [
        long.as_str(),
        "../../../../etc/passwd",
        "/absolute/path",
        "a/b/../../../c",
        "..\\..\\windows",
        "ключ/🔑/../..",
        "%2e%2e%2f",
        "",
        "CON",
        "x\u{202e}y\u{0007}",
    ];
    for (i, k) in keys.iter().enumerate() {
        put(&store, k, &pattern(100 + i, i as u8)).await;
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            read(&store, k).await,
            Some(pattern(100 + i, i as u8)),
            "{k:?}"
        );
    }
    let all = files_under(outer.path());
    assert_eq!(all.len(), keys.len());
    for f in &all {
        assert!(
            f.starts_with(dir.join("objects")),
            "{} escaped",
            f.display()
        );
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 64);
    }
}

#[tokio::test]
async fn capacity_counts_writes_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 400_000;
    let store = open(dir.path(), capacity).await;
    put(&store, "a", &pattern(100_000, 1)).await;
    put(&store, "b", &pattern(100_000, 2)).await;
    let in_flight = write(&store, "w", &pattern(150_000, 3)).await;
    assert!(store.used_bytes().unwrap() <= capacity);

    // Room for "c" is made by evicting the oldest committed entry, not by ignoring "w".
    put(&store, "c", &pattern(100_000, 4)).await;
    assert_eq!(store.evictions(), 1);
    assert_eq!(read(&store, "a").await, None);
    assert!(!entry_path(dir.path(), "a").exists());
    assert!(store.used_bytes().unwrap() <= capacity);
    assert!(disk_bytes(dir.path()) <= capacity);

    // The other write in progress holds 150 000 bytes: 300 000 more can never fit.
    let mut big = store.put("big", meta()).await.unwrap();
    let err = big
        .write(Bytes::from(pattern(300_000, 5)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    drop(big);
    assert_eq!(
        store.evictions(),
        1,
        "nothing evicted for a write that cannot fit"
    );
    assert!(read(&store, "b").await.is_some());

    in_flight.commit().await.unwrap();
    assert_eq!(store.len(), Some(3));
    assert_eq!(store.used_bytes(), Some(disk_bytes(dir.path())));
    assert!(store.used_bytes().unwrap() <= capacity);
}

#[tokio::test]
async fn any_policy_keeps_the_store_within_capacity() {
    // A policy that never offers a victim must not let the store overfill or wedge it.
    #[derive(Debug)]
    struct Never;
    impl EvictionPolicy for Never {
        fn insert(&mut self, _: u64, _: u64) {}
        fn touch(&mut self, _: u64) {}
        fn remove(&mut self, _: u64) {}
        fn evict(&mut self) -> Option<u64> {
            None
        }
        fn len(&self) -> usize {
            0
        }
        fn weight(&self) -> u64 {
            0
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let capacity = 250_000;
    let store = FileStore::builder(dir.path())
        .capacity(capacity)
        .policy(PolicyKind::Custom(Arc::new(|_| Box::new(Never))))
        .open()
        .await
        .unwrap();
    for i in 0..10u8 {
        put(&store, &format!("k{i}"), &pattern(60_000, i)).await;
        assert!(disk_bytes(dir.path()) <= capacity);
    }
    assert!(store.evictions() >= 6);
    assert_eq!(store.used_bytes(), Some(disk_bytes(dir.path())));
    assert!(read(&store, "k9").await.is_some());
}

#[tokio::test]
async fn too_large_object_is_rejected_and_its_temp_file_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .capacity(1 << 20)
        .max_object_size(1000)
        .policy(fifo())
        .open()
        .await
        .unwrap();
    let mut w = store.put("k", meta()).await.unwrap();
    w.write(Bytes::from(vec![1u8; 600])).await.unwrap();
    let err = w.write(Bytes::from(vec![1u8; 600])).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                size: 1200,
                limit: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(w.commit().await.is_err());
    assert!(files_under(dir.path()).is_empty());
    assert_eq!(store.used_bytes(), Some(0));

    let declared = meta().with_content_length(5000);
    let err = store
        .put("k", declared)
        .await
        .err()
        .expect("declared too large");
    assert!(matches!(err, StoreError::TooLarge { size: 5000, .. }));
}

#[tokio::test]
async fn body_not_matching_declared_length_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20).await;
    let mut w = store
        .put("k", meta().with_content_length(10))
        .await
        .unwrap();
    w.write(Bytes::from_static(b"short")).await.unwrap();
    assert!(matches!(w.commit().await, Err(StoreError::Corrupt { .. })));
    assert!(files_under(dir.path()).is_empty());
    assert_eq!(read(&store, "k").await, None);
}

#[tokio::test]
async fn update_metadata_keeps_the_body_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(200_000, 6);
    {
        let store = open(dir.path(), 64 << 20).await;
        put(&store, "k", &body).await;
        let mut headers = HeaderMap::new();
        headers.insert("x-refreshed", HeaderValue::from_static("yes"));
        let fresh = Metadata::new(StatusCode::OK)
            .with_headers(headers)
            .with_etag("\"v2\"")
            .with_content_length(7);
        assert!(store.update_metadata("k", fresh).await.unwrap());
        assert!(!store.update_metadata("absent", meta()).await.unwrap());
        assert_eq!(store.len(), Some(1));
        assert_eq!(store.used_bytes(), Some(disk_bytes(dir.path())));
    }
    let store = open(dir.path(), 64 << 20).await;
    let entry = store.get("k").await.unwrap().expect("still there");
    assert_eq!(entry.meta.etag.as_deref(), Some("\"v2\""));
    assert_eq!(entry.meta.headers["x-refreshed"], "yes");
    assert!(entry.meta.headers.get("content-type").is_none());
    assert_eq!(entry.meta.content_length, Some(body.len() as u64));
    assert_eq!(entry.body.collect().await.unwrap().to_vec(), body);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn update_metadata_of_a_corrupt_body_drops_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    put(&store, "k", &pattern(200_000, 6)).await;
    let path = entry_path(dir.path(), "k");
    flip_byte(&path, 1000, 1);
    assert!(!store.update_metadata("k", meta()).await.unwrap());
    assert!(files_under(dir.path()).is_empty());
    assert_eq!(store.used_bytes(), Some(0));
}

#[tokio::test]
async fn last_commit_wins_for_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let first = write(&store, "k", &pattern(100_000, 1)).await;
    let second = write(&store, "k", &pattern(120_000, 2)).await;
    second.commit().await.unwrap();
    first.commit().await.unwrap();
    assert_eq!(read(&store, "k").await, Some(pattern(100_000, 1)));
    assert_eq!(store.len(), Some(1));
    assert_eq!(store.used_bytes(), Some(disk_bytes(dir.path())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_to_one_key_always_leave_one_complete_entry() {
    const LEN: usize = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .capacity(64 << 20)
        .policy(fifo())
        .fsync(false)
        .open()
        .await
        .unwrap();
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..4 {
                    put(&store, "k", &vec![i; LEN]).await;
                }
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            for _ in 0..200 {
                if let Some(body) = read(&store, "k").await {
                    assert_eq!(body.len(), LEN);
                    assert!(body.iter().all(|&b| b == body[0]), "mixed entry");
                    seen += 1;
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    reader.await.unwrap();
    let body = read(&store, "k").await.expect("an entry");
    assert_eq!(body.len(), LEN);
    assert!(body.iter().all(|&b| b == body[0]));
    assert_eq!(store.len(), Some(1));
    assert_eq!(files_under(dir.path()).len(), 1);
    assert_eq!(store.used_bytes(), Some(disk_bytes(dir.path())));
}

#[tokio::test]
async fn delete_removes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    put(&store, "k", b"bye").await;
    store.delete("k").await.unwrap();
    store.delete("never there").await.unwrap();
    assert!(files_under(dir.path()).is_empty());
    assert_eq!(read(&store, "k").await, None);
    assert_eq!((store.len(), store.used_bytes()), (Some(0), Some(0)));
}

#[tokio::test]
async fn clear_removes_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    for i in 0..5 {
        put(&store, &format!("k{i}"), &pattern(1000, i)).await;
    }
    store.clear().await.unwrap();
    assert!(files_under(dir.path()).is_empty());
    assert_eq!((store.len(), store.used_bytes()), (Some(0), Some(0)));
    put(&store, "k0", b"again").await;
    assert_eq!(read(&store, "k0").await.as_deref(), Some(&b"again"[..]));
}

#[tokio::test]
async fn file_deleted_behind_the_store_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    put(&store, "k", b"here").await;
    std::fs::remove_file(entry_path(dir.path(), "k")).unwrap();
    assert_eq!(read(&store, "k").await, None);
    assert_eq!((store.len(), store.used_bytes()), (Some(0), Some(0)));
}

#[tokio::test]
async fn reopening_with_a_smaller_capacity_evicts_down_to_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 64 << 20).await;
        for i in 0..6 {
            put(&store, &format!("k{i}"), &pattern(50_000, i)).await;
        }
    }
    let store = open(dir.path(), 160_000).await;
    assert_eq!(store.len(), Some(3));
    assert_eq!(store.evictions(), 3);
    assert!(disk_bytes(dir.path()) <= 160_000);
    assert_eq!(store.used_bytes(), Some(disk_bytes(dir.path())));
}

#[tokio::test]
async fn copy_commit_mode_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .commit_mode(CommitMode::Copy)
        .policy(fifo())
        .open()
        .await
        .unwrap();
    let body = pattern(300_000, 8);
    put(&store, "k", &body).await;
    put(&store, "k", &body[..1000]).await;
    assert_eq!(read(&store, "k").await.as_deref(), Some(&body[..1000]));
    assert!(store
        .update_metadata("k", meta().with_etag("\"v3\""))
        .await
        .unwrap());
    let head = store.head("k").await.unwrap().unwrap();
    assert_eq!(head.etag.as_deref(), Some("\"v3\""));
    assert_eq!(files_under(dir.path()).len(), 1);
}

#[tokio::test]
async fn metadata_larger_than_the_tail_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut headers = HeaderMap::new();
    for i in 0..200 {
        let name = http::HeaderName::try_from(format!("x-h{i}")).unwrap();
        headers.insert(name, HeaderValue::from_str(&"v".repeat(100)).unwrap());
    }
    let body = pattern(100_000, 5);
    {
        let store = open(dir.path(), 64 << 20).await;
        let mut w = store
            .put("k", meta().with_headers(headers.clone()))
            .await
            .unwrap();
        w.write(Bytes::from(body.clone())).await.unwrap();
        w.commit().await.unwrap();
    }
    let store = open(dir.path(), 64 << 20).await;
    assert_eq!(store.head("k").await.unwrap().unwrap().headers, headers);
    let entry = store.get("k").await.unwrap().unwrap();
    assert_eq!(entry.meta.headers.len(), 200);
    assert_eq!(entry.body.collect().await.unwrap().to_vec(), body);
}

#[cfg(unix)]
#[tokio::test]
async fn open_stream_keeps_reading_its_entry_after_replace_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let body = pattern(500_000, 1);
    put(&store, "k", &body).await;
    let mut stream = store.get("k").await.unwrap().unwrap().body;
    let mut got = stream.next().await.unwrap().unwrap().to_vec();
    put(&store, "k", &pattern(500_000, 2)).await;
    store.delete("k").await.unwrap();
    while let Some(c) = stream.next().await {
        got.extend_from_slice(&c.expect("clean chunk"));
    }
    assert_eq!(got, body);
    assert!(files_under(dir.path()).is_empty());
}

#[tokio::test]
async fn commit_cancelled_midway_leaves_no_entry_and_no_temp_file() {
    use futures_util::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let w = write(&store, "k", &pattern(300_000, 1)).await;
    // Holding the key's stripe makes the commit unable to finish in one poll; it is dropped
    // while its blocking write or its wait for the lock is in flight.
    let stripe = store.inner.stripe(&Loc::of("k")).lock_owned().await;
    assert!(w.commit().now_or_never().is_none());
    drop(stripe);
    // The blocking task finishes on its own; wait for its cleanup (no timing is asserted).
    for _ in 0..10_000 {
        if store.used_bytes() == Some(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(store.used_bytes(), Some(0));
    assert!(files_under(dir.path()).is_empty());
    assert_eq!(read(&store, "k").await, None);
}

#[tokio::test]
async fn page_cached_hits_are_answered_inline_with_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let small = pattern(1024, 3);
    let large = pattern(300_000, 4);
    put(&store, "small", &small).await;
    put(&store, "large", &large).await;
    // Just written, so in the page cache: both open inline.
    for (key, want) in [("small", &small), ("large", &large)] {
        let entry = inline_entry(&store, key)
            .await
            .expect("a hit, answered inline");
        assert_eq!(entry.meta.etag.as_deref(), Some("\"v1\""));
        assert_eq!(
            &entry.body.collect().await.expect("clean body")[..],
            &want[..]
        );
    }
    // A key the index does not hold is a miss without touching the disk.
    assert!(matches!(store.try_get_now("absent"), Some(Ok(None))));
}

#[tokio::test]
async fn inline_reads_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .policy(fifo())
        .inline_reads(false)
        .open()
        .await
        .unwrap();
    put(&store, "k", b"body").await;
    assert!(
        store.try_get_now("k").is_none(),
        "every read takes the blocking path"
    );
    assert_eq!(read(&store, "k").await.as_deref(), Some(&b"body"[..]));
}

#[tokio::test]
async fn a_corrupt_file_is_never_served_inline_and_the_full_read_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    put(&store, "k", b"small body read in one go").await;
    let path = entry_path(dir.path(), "k");
    flip_byte(&path, 3, 1);
    // Inline, the corrupt entry is handed to `get` (which cleans up), never served.
    assert!(store.try_get_now("k").is_none());
    assert!(store.get("k").await.unwrap().is_none());
    assert!(!path.exists());
    assert!(matches!(store.try_get_now("k"), Some(Ok(None))));
}

#[test]
fn cached_reads_fill_the_buffer_or_report_eof() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = pattern(100_000, 7);
    std::fs::write(&path, &data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 50_000];
    let read = super::format::read_cached_at(&file, &mut buf, 25_000).unwrap();
    // A just-written file is in the page cache; only where the platform cannot tell is the
    // read left to a blocking thread.
    assert_eq!(read, cfg!(target_os = "linux"));
    if read {
        assert_eq!(buf, data[25_000..75_000]);
    }
    let mut past_end = vec![0u8; 10];
    let err = super::format::read_cached_at(&file, &mut past_end, 99_995);
    if cfg!(target_os = "linux") {
        assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }
}

/// Files the store keeps open after hits.
fn kept_open(store: &FileStore) -> usize {
    let st = store.inner.state.lock();
    st.index.values().filter(|e| e.file.is_some()).count()
}

/// Reads `key` through the inline path. That path declines (`None`) whenever a read would
/// wait, and `RWF_NOWAIT` may say so now and then even for pages just written (a page locked
/// for writeback, a busy mapping), so a decline is retried a few times before it counts.
async fn hit_now(store: &FileStore, key: &str) -> Option<Vec<u8>> {
    let entry = inline_entry(store, key).await?;
    Some(entry.body.collect().await.expect("clean body").to_vec())
}

/// [`FileStore::try_get_now`], retried while it declines (see [`hit_now`]); `None` when it
/// declined every time or the key is absent.
async fn inline_entry(store: &FileStore, key: &str) -> Option<StoredEntry> {
    for _ in 0..50 {
        if let Some(found) = store.try_get_now(key) {
            return found.expect("no error");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    None
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_kept_open_file_never_outlives_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    put(&store, "k", b"first version").await;
    assert_eq!(
        hit_now(&store, "k").await.as_deref(),
        Some(&b"first version"[..])
    );
    assert_eq!(kept_open(&store), 1, "the hit keeps its file open");
    assert_eq!(
        hit_now(&store, "k").await.as_deref(),
        Some(&b"first version"[..])
    );

    // A new commit replaces the entry: the kept file (the old version) goes with it.
    put(&store, "k", b"second version").await;
    assert_eq!(kept_open(&store), 0);
    assert_eq!(
        hit_now(&store, "k").await.as_deref(),
        Some(&b"second version"[..])
    );

    // Removed behind the store's back: the kept file has no links left and is not served.
    assert_eq!(kept_open(&store), 1);
    std::fs::remove_file(entry_path(dir.path(), "k")).unwrap();
    assert!(store.try_get_now("k").is_none(), "left to the full path");
    assert_eq!(kept_open(&store), 0);
    assert!(store.get("k").await.unwrap().is_none());

    // Deleted through the store: nothing is kept for it.
    put(&store, "d", b"to delete").await;
    assert!(hit_now(&store, "d").await.is_some());
    store.delete("d").await.unwrap();
    assert_eq!(kept_open(&store), 0);
    assert!(matches!(store.try_get_now("d"), Some(Ok(None))));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn kept_open_files_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 << 20).await;
    let n = super::OPEN_FILES + 20;
    for i in 0..n {
        put(&store, &format!("k{i}"), format!("body {i}").as_bytes()).await;
    }
    for i in 0..n {
        let want = format!("body {i}");
        assert_eq!(
            hit_now(&store, &format!("k{i}")).await.as_deref(),
            Some(want.as_bytes())
        );
    }
    assert_eq!(kept_open(&store), super::OPEN_FILES);
    // Every entry still reads back, kept open or not.
    for i in 0..n {
        let want = format!("body {i}");
        assert_eq!(
            hit_now(&store, &format!("k{i}")).await.as_deref(),
            Some(want.as_bytes())
        );
    }
    store.clear().await.unwrap();
    assert_eq!(kept_open(&store), 0);
}
