//! The engine on its own, driven with hand-written fetchers (no HTTP).

mod common;

use common::{counting_origin, never, wait_stored};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use daramjwee::store::{MemStore, Store};
use daramjwee::{Cache, EntryBody, Error, Fetched, Metadata, Outcome};
use http::StatusCode;

#[tokio::test]
async fn miss_then_hot_hit_with_identical_bytes_and_one_origin_call() {
    let cache = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = cache
        .get("k", counting_origin(&calls, "hello world"))
        .await
        .unwrap();
    assert_eq!(first.outcome, Outcome::Miss);
    assert_eq!(first.body.collect().await.unwrap(), "hello world");
    for _ in 0..10 {
        let hit = cache.get("k", never()).await.unwrap();
        assert_eq!(
            hit.outcome,
            Outcome::Hit {
                tier: 0,
                stale: false
            }
        );
        assert_eq!(hit.body.collect().await.unwrap(), "hello world");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn truncated_origin_body_is_an_error_and_leaves_no_entry() {
    let cache = Cache::builder().build();
    let lookup = cache
        .get("k", |_| async {
            Ok(Fetched::Entry {
                meta: Metadata::new(StatusCode::OK).with_content_length(100),
                body: EntryBody::from_bytes("short"),
            })
        })
        .await
        .unwrap();
    assert!(
        lookup.body.collect().await.is_err(),
        "a truncated body must end in an error"
    );
    tokio::task::yield_now().await;
    assert!(matches!(
        cache
            .get_with(
                "k",
                daramjwee::GetOptions::default().only_cached(true),
                never()
            )
            .await,
        Err(Error::NotCached)
    ));
}

#[tokio::test]
async fn origin_error_mid_body_leaves_no_entry() {
    let cache = Cache::builder().build();
    let lookup = cache
        .get("k", |_| async {
            let chunks: Vec<Result<Bytes, Error>> = vec![
                Ok(Bytes::from_static(b"part")),
                Err(Error::Fetch("connection reset".into())),
            ];
            Ok(Fetched::Entry {
                meta: Metadata::new(StatusCode::OK),
                body: EntryBody::from_stream(futures_util::stream::iter(chunks)),
            })
        })
        .await
        .unwrap();
    assert!(lookup.body.collect().await.is_err());
    let hot = cache.tier_store(0).unwrap();
    assert!(hot.head("k").await.unwrap().is_none());
}

#[tokio::test]
async fn panicking_fetcher_is_an_error_not_a_hang() {
    let cache = Cache::builder().build();
    let res = cache
        .get("k", |_| async {
            if true {
                panic!("boom");
            }
            Err("unreachable".into())
        })
        .await;
    assert!(res.is_err());
    // The key is not left locked.
    let calls = Arc::new(AtomicUsize::new(0));
    let ok = cache
        .get("k", counting_origin(&calls, "fine"))
        .await
        .unwrap();
    assert_eq!(ok.body.collect().await.unwrap(), "fine");
}

#[tokio::test]
async fn cold_hit_promotes_into_hot() {
    let cold = Arc::new(MemStore::new(1 << 20));
    let cache = Cache::builder()
        .hot(MemStore::new(1 << 20))
        .tier(cold.clone(), None)
        .build();
    let mut w = cold.put("k", Metadata::new(StatusCode::OK)).await.unwrap();
    w.write(Bytes::from_static(b"from cold")).await.unwrap();
    w.commit().await.unwrap();

    let hit = cache.get("k", never()).await.unwrap();
    assert_eq!(
        hit.outcome,
        Outcome::Hit {
            tier: 1,
            stale: false
        }
    );
    assert_eq!(hit.body.collect().await.unwrap(), "from cold");
    // The promotion commits right after the body ends.
    wait_stored(cache.tier_store(0).unwrap().as_ref(), "k").await;
    let again = cache.get("k", never()).await.unwrap();
    assert_eq!(
        again.outcome,
        Outcome::Hit {
            tier: 0,
            stale: false
        }
    );
    assert_eq!(again.body.collect().await.unwrap(), "from cold");
}

#[tokio::test]
async fn delete_then_get_goes_to_origin() {
    let cache = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get("k", counting_origin(&calls, "v1"))
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    cache.delete("k").await.unwrap();
    let again = cache.get("k", counting_origin(&calls, "v2")).await.unwrap();
    assert_eq!(again.outcome, Outcome::Miss);
    assert_eq!(again.body.collect().await.unwrap(), "v2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Starts a lookup of `k` whose origin answers `body` only when the returned sender fires;
/// the task yields the body the lookup streamed.
fn slow_fill(
    cache: &Cache,
    body: &'static str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Bytes>,
) {
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let c2 = cache.clone();
    let fill = tokio::spawn(async move {
        let lookup = c2
            .get("k", move |_| async move {
                let _ = release_rx.await;
                Ok::<_, daramjwee::BoxError>(Fetched::Entry {
                    meta: Metadata::new(StatusCode::OK),
                    body: EntryBody::from_bytes(body),
                })
            })
            .await
            .unwrap();
        lookup.body.collect().await.unwrap()
    });
    (release_tx, fill)
}

#[tokio::test]
async fn set_racing_a_slow_fill_wins() {
    let cache = Cache::builder().build();
    let (release_tx, fill) = slow_fill(&cache, "stale fill");
    // Let the fill start and wait on its origin.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut w = cache.set("k", Metadata::new(StatusCode::OK)).await.unwrap();
    w.write(Bytes::from_static(b"newer set")).await.unwrap();
    w.commit().await.unwrap();
    release_tx.send(()).unwrap();
    assert_eq!(fill.await.unwrap(), "stale fill");
    let hit = cache.get("k", never()).await.unwrap();
    assert_eq!(hit.body.collect().await.unwrap(), "newer set");
}

#[tokio::test]
async fn delete_racing_a_slow_fill_wins() {
    let cache = Cache::builder().build();
    let (release_tx, fill) = slow_fill(&cache, "old");
    tokio::time::sleep(Duration::from_millis(20)).await;
    cache.delete("k").await.unwrap();
    release_tx.send(()).unwrap();
    fill.await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(cache
        .tier_store(0)
        .unwrap()
        .head("k")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn negative_entry_is_served_until_its_ttl() {
    let cache = Cache::builder()
        .negative_ttl(Duration::from_millis(200))
        .serve_stale_for(Some(Duration::ZERO))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let not_found = move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            Ok(Fetched::Entry {
                meta: Metadata::negative(StatusCode::NOT_FOUND),
                body: EntryBody::from_bytes("nope"),
            })
        }
    };
    let first = cache.get("missing", not_found.clone()).await.unwrap();
    assert_eq!(first.body.collect().await.unwrap(), "nope");
    let second = cache.get("missing", not_found.clone()).await.unwrap();
    assert!(second.outcome.is_hit());
    assert!(second.meta.is_negative());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let third = cache.get("missing", not_found).await.unwrap();
    assert_eq!(third.outcome, Outcome::Miss);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_entry_is_served_at_once_while_a_refresh_runs() {
    let cache = Cache::builder()
        .default_ttl(Duration::from_millis(50))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get("k", counting_origin(&calls, "v1"))
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let stale = cache.get("k", counting_origin(&calls, "v2")).await.unwrap();
    assert_eq!(
        stale.outcome,
        Outcome::Hit {
            tier: 0,
            stale: true
        }
    );
    assert_eq!(stale.body.collect().await.unwrap(), "v1");
    for _ in 0..100 {
        if calls.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let fresh = cache.get("k", never()).await.unwrap();
    assert_eq!(
        fresh.outcome,
        Outcome::Hit {
            tier: 0,
            stale: false
        }
    );
    assert_eq!(fresh.body.collect().await.unwrap(), "v2");
}

#[tokio::test]
async fn not_modified_refresh_keeps_the_body_and_restamps() {
    let cache = Cache::builder()
        .default_ttl(Duration::from_millis(30))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get("k", counting_origin(&calls, "body"))
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen_prev = Arc::new(AtomicUsize::new(0));
    let sp = seen_prev.clone();
    let revalidated = cache
        .get_with(
            "k",
            daramjwee::GetOptions::default().no_stale(true),
            move |prev: Option<Arc<Metadata>>| {
                if prev.is_some() {
                    sp.fetch_add(1, Ordering::SeqCst);
                }
                async { Ok(Fetched::NotModified { meta: None }) }
            },
        )
        .await
        .unwrap();
    assert_eq!(revalidated.outcome, Outcome::Revalidated { tier: 0 });
    assert_eq!(revalidated.body.collect().await.unwrap(), "body");
    assert_eq!(seen_prev.load(Ordering::SeqCst), 1);
    let hit = cache.get("k", never()).await.unwrap();
    assert_eq!(
        hit.outcome,
        Outcome::Hit {
            tier: 0,
            stale: false
        }
    );
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let cache = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let (go_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let cache = cache.clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let lookup = cache
                .get("k", move |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let chunks: Vec<Result<Bytes, Error>> = (0..64)
                        .map(|i| Ok(Bytes::from(vec![i as u8; 1024])))
                        .collect();
                    Ok::<_, daramjwee::BoxError>(Fetched::Entry {
                        meta: Metadata::new(StatusCode::OK).with_content_length(64 * 1024),
                        body: EntryBody::from_stream(futures_util::stream::iter(chunks)),
                    })
                })
                .await
                .unwrap();
            lookup.body.collect().await.unwrap()
        }));
    }
    drop(go_tx);
    let expected: Vec<u8> = (0..64).flat_map(|i| vec![i as u8; 1024]).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), expected);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_drains_background_work_and_refuses_new_gets() {
    let cache = Cache::builder().build();
    cache.close(Duration::from_secs(1)).await.unwrap();
    assert!(matches!(cache.get("k", never()).await, Err(Error::Closed)));
}

#[tokio::test]
async fn a_promotion_is_not_copied_back_into_the_tier_it_came_from() {
    let cold = Arc::new(MemStore::new(1 << 20));
    let cache = Cache::builder()
        .hot(MemStore::new(1 << 20))
        .tier(cold.clone(), None)
        .build();
    let mut w = cold.put("k", Metadata::new(StatusCode::OK)).await.unwrap();
    w.write(Bytes::from_static(b"cold")).await.unwrap();
    w.commit().await.unwrap();
    let hit = cache.get("k", never()).await.unwrap();
    assert_eq!(hit.body.collect().await.unwrap(), "cold");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // One commit: the promotion into hot. No second write into the cold tier.
    assert_eq!(cache.stats().fills_committed, 1);
}

#[tokio::test]
async fn probation_promotes_only_on_the_second_lower_tier_hit() {
    let cold = Arc::new(MemStore::new(1 << 20));
    let cache = Cache::builder()
        .hot(MemStore::new(1 << 20))
        .tier(cold.clone(), None)
        .promotion(daramjwee::Promotion::SecondHit(1000))
        .build();
    let mut w = cold.put("k", Metadata::new(StatusCode::OK)).await.unwrap();
    w.write(Bytes::from_static(b"cold")).await.unwrap();
    w.commit().await.unwrap();
    let hot = cache.tier_store(0).unwrap().clone();
    cache
        .get("k", never())
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        hot.head("k").await.unwrap().is_none(),
        "a one-hit wonder stays out of hot"
    );
    cache
        .get("k", never())
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        hot.head("k").await.unwrap().is_some(),
        "the second hit promotes"
    );
}

#[tokio::test]
async fn callers_validator_is_answered_not_modified() {
    let cache = Cache::builder().build();
    cache
        .get("k", |_| async {
            Ok(Fetched::Entry {
                meta: Metadata::new(StatusCode::OK).with_etag("\"v9\""),
                body: EntryBody::from_bytes("body"),
            })
        })
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    let l = cache
        .get_with(
            "k",
            daramjwee::GetOptions::default().if_none_match("\"v9\""),
            never(),
        )
        .await
        .unwrap();
    assert_eq!(l.outcome, Outcome::NotModified);
    assert!(l.body.collect().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_refresh_can_be_scheduled_as_soon_as_the_fill_was_read() {
    let cache = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    for round in 0..50 {
        cache.delete("k").await.unwrap();
        let l = cache.get("k", counting_origin(&calls, "v")).await.unwrap();
        l.body.collect().await.unwrap();
        // The fill ended for its reader: it no longer stands in the way of a refresh.
        assert!(
            cache.schedule_refresh("k", counting_origin(&calls, "v")),
            "round {round}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_write_started_before_a_prefix_purge_cannot_bring_its_key_back() {
    let cache = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get("site/a", counting_origin(&calls, "old"))
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    let mut w = cache
        .set("site/b", Metadata::new(StatusCode::OK))
        .await
        .unwrap();
    w.write(Bytes::from_static(b"late")).await.unwrap();
    let removed = cache.purge_prefix("site/").await.unwrap();
    assert!(removed >= 1);
    assert!(matches!(w.commit().await, Err(Error::Superseded)));
    let hot = cache.tier_store(0).unwrap();
    assert!(hot.head("site/a").await.unwrap().is_none());
    assert!(hot.head("site/b").await.unwrap().is_none());
    // A write that starts after the purge is not affected.
    let mut w = cache
        .set("site/b", Metadata::new(StatusCode::OK))
        .await
        .unwrap();
    w.write(Bytes::from_static(b"new")).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        cache
            .get("site/b", never())
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap(),
        "new"
    );
}

/// A memory store with two injected faults: its next `get` can be made to miss once (as a read
/// that ran just before another fill committed would), and its commits can be held until the
/// test lets them go (a slow `fsync` or upload). Otherwise it is a real `MemStore`.
#[derive(Debug)]
struct Injected {
    inner: MemStore,
    miss_next: std::sync::atomic::AtomicBool,
    hold_commits: std::sync::atomic::AtomicBool,
    commit_gate: Arc<tokio::sync::Semaphore>,
}

impl Injected {
    fn new() -> Arc<Injected> {
        Arc::new(Injected {
            inner: MemStore::new(1 << 20),
            miss_next: false.into(),
            hold_commits: false.into(),
            commit_gate: Arc::new(tokio::sync::Semaphore::new(0)),
        })
    }
}

struct GatedWriter {
    inner: Box<dyn daramjwee::store::StoreWriter>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait::async_trait]
impl daramjwee::store::StoreWriter for GatedWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), daramjwee::StoreError> {
        self.inner.write(chunk).await
    }
    async fn commit(self: Box<Self>) -> Result<(), daramjwee::StoreError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        self.inner.commit().await
    }
    fn written(&self) -> u64 {
        self.inner.written()
    }
}

#[async_trait::async_trait]
impl Store for Injected {
    fn name(&self) -> &'static str {
        "injected"
    }
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<daramjwee::StoredEntry>, daramjwee::StoreError> {
        if self.miss_next.swap(false, Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<Metadata>, daramjwee::StoreError> {
        self.inner.head(key).await
    }
    async fn put(
        &self,
        key: &str,
        meta: Metadata,
    ) -> Result<Box<dyn daramjwee::store::StoreWriter>, daramjwee::StoreError> {
        let gate = self
            .hold_commits
            .load(Ordering::SeqCst)
            .then(|| self.commit_gate.clone());
        Ok(Box::new(GatedWriter {
            inner: self.inner.put(key, meta).await?,
            gate,
        }))
    }
    async fn update_metadata(
        &self,
        key: &str,
        meta: Metadata,
    ) -> Result<bool, daramjwee::StoreError> {
        self.inner.update_metadata(key, meta).await
    }
    async fn delete(&self, key: &str) -> Result<(), daramjwee::StoreError> {
        self.inner.delete(key).await
    }
    async fn clear(&self) -> Result<(), daramjwee::StoreError> {
        self.inner.clear().await
    }
}

#[tokio::test]
async fn a_fill_committed_between_the_lookup_and_the_claim_is_served_not_fetched_again() {
    let store = Injected::new();
    let cache = Cache::builder()
        .tier(store.clone(), None)
        .default_ttl(Duration::from_secs(60))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = cache
        .get("k", counting_origin(&calls, "stored once"))
        .await
        .unwrap();
    assert_eq!(first.body.collect().await.unwrap(), "stored once");
    tokio::task::yield_now().await;
    // The lookup's tier read misses (as if it ran just before the commit); the claim's second
    // read finds the entry, so the origin is not called again.
    store.miss_next.store(true, Ordering::SeqCst);
    let again = cache
        .get("k", counting_origin(&calls, "fetched twice"))
        .await
        .unwrap();
    assert_eq!(
        again.outcome,
        Outcome::Hit {
            tier: 0,
            stale: false
        }
    );
    assert_eq!(again.body.collect().await.unwrap(), "stored once");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Regression (found by the disk-full test): a reader that has every declared byte may drop
/// its body before the origin's end of stream arrives. The fill was then taken for orphaned
/// and abandoned, so a body larger than the stream window (and than what fills retain for
/// late followers) was never stored.
#[tokio::test]
async fn a_reader_leaving_after_the_declared_length_does_not_abandon_the_fill() {
    use futures_util::StreamExt;
    let cache = Cache::builder()
        .stream_window(64 << 10)
        .follower_retain(0)
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut got = cache
        .get("k", counting_origin(&calls, body.clone()))
        .await
        .unwrap();
    let mut read = Vec::new();
    while read.len() < body.len() {
        read.extend_from_slice(&got.body.next().await.unwrap().unwrap());
    }
    assert_eq!(read, body);
    // Like hyper does once Content-Length bytes are sent: drop without waiting for the end.
    drop(got);
    // A complete body must be stored.
    wait_stored(cache.tier_store(0).unwrap().as_ref(), "k").await;
    let hit = cache.get("k", never()).await.unwrap();
    assert_eq!(hit.body.collect().await.unwrap(), body);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn readers_end_with_the_whole_body_while_the_commit_is_still_running() {
    let store = Injected::new();
    store.hold_commits.store(true, Ordering::SeqCst);
    let cache = Cache::builder()
        .tier(store.clone(), None)
        .default_ttl(Duration::from_secs(60))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = cache
        .get("k", counting_origin(&calls, "whole body"))
        .await
        .unwrap();
    // The commit is held (a slow fsync or upload), yet the body ends, cleanly and whole.
    let body = tokio::time::timeout(Duration::from_secs(5), first.body.collect())
        .await
        .expect("the reader must not wait for the commit");
    assert_eq!(body.unwrap(), "whole body");
    assert!(
        store.inner.get("k").await.unwrap().is_none(),
        "not committed yet"
    );
    // A request meanwhile joins the fill (not finished until committed): no second fetch.
    let joined = cache
        .get("k", counting_origin(&calls, "second"))
        .await
        .unwrap();
    assert_eq!(joined.outcome, Outcome::Coalesced);
    assert_eq!(joined.body.collect().await.unwrap(), "whole body");
    store.commit_gate.add_permits(1);
    wait_stored(&store.inner, "k").await;
    let hit = cache.get("k", never()).await.unwrap();
    assert_eq!(
        hit.outcome,
        Outcome::Hit {
            tier: 0,
            stale: false
        }
    );
    assert_eq!(hit.body.collect().await.unwrap(), "whole body");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_waits_for_a_commit_that_outlives_its_reader() {
    let store = Injected::new();
    store.hold_commits.store(true, Ordering::SeqCst);
    let cache = Cache::builder().tier(store.clone(), None).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let miss = cache
        .get("k", counting_origin(&calls, "body"))
        .await
        .unwrap();
    assert_eq!(miss.body.collect().await.unwrap(), "body");
    // The commit is held: close reports it as pending instead of returning as if drained.
    let err = cache
        .close(Duration::from_millis(100))
        .await
        .expect_err("a commit is still running");
    assert!(err.pending >= 1, "{err}");
    store.commit_gate.add_permits(1);
    cache.close(Duration::from_secs(5)).await.unwrap();
    assert!(
        store.inner.get("k").await.unwrap().is_some(),
        "close returned only after the commit"
    );
}
