//! `TypedCache` over real engines: memory and disk tiers, coalescing, negative entries,
//! refresh, and values whose type changed shape between versions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Json, TypedCache, TypedError};
use crate::store::{FileStore, MemStore};
use crate::Cache;

/// Version 1 of a stored type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct UserV1 {
    id: u32,
    name: String,
}

/// Version 2: a field added.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct UserV2 {
    id: u32,
    name: String,
    #[serde(default)]
    email: String,
}

fn v1() -> UserV1 {
    UserV1 {
        id: 42,
        name: "dotori".into(),
    }
}

fn v2() -> UserV2 {
    UserV2 {
        id: 42,
        name: "dotori".into(),
        email: "d@example.com".into(),
    }
}

fn mem_cache() -> Cache {
    Cache::builder().hot(MemStore::new(1 << 20)).build()
}

/// A fetch that counts its calls and answers `value`.
fn counted<T: Send + 'static>(
    calls: &Arc<AtomicUsize>,
    value: T,
) -> impl FnOnce() -> std::future::Ready<Result<T, std::io::Error>> + Send + 'static {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value))
    }
}

/// Waits (bounded) until the engine committed `n` entries.
async fn committed(cache: &Cache, n: u64) {
    for _ in 0..200 {
        if cache.stats().fills_committed >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{n} commits never happened: {:?}", cache.stats());
}

#[tokio::test]
async fn a_miss_fetches_once_and_a_hit_decodes_the_stored_value() {
    let users: TypedCache<UserV1> = TypedCache::new(mem_cache());
    let calls = Arc::new(AtomicUsize::new(0));
    let first = users
        .get_or_fetch("u", counted(&calls, v1()))
        .await
        .unwrap();
    committed(users.cache(), 1).await;
    let second = users
        .get_or_fetch("u", counted(&calls, v1()))
        .await
        .unwrap();
    assert_eq!((first, second), (v1(), v1()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(users.decode_failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_one_fetch() {
    let users: TypedCache<UserV1> = TypedCache::new(mem_cache());
    let calls = Arc::new(AtomicUsize::new(0));
    let lookups = (0..8).map(|_| {
        let calls = calls.clone();
        users.get_or_fetch("u", move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(v1())
        })
    });
    for got in futures_util::future::join_all(lookups).await {
        assert_eq!(got.unwrap(), v1());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_none_is_stored_as_a_negative_entry() {
    let users: TypedCache<UserV1> = TypedCache::new(mem_cache());
    let calls = Arc::new(AtomicUsize::new(0));
    let absent = users.get_or_fetch_optional("gone", counted(&calls, None));
    assert_eq!(absent.await.unwrap(), None);
    committed(users.cache(), 1).await;
    let again = users.get_or_fetch_optional("gone", counted(&calls, Some(v1())));
    assert_eq!(again.await.unwrap(), None, "the stored not-found answers");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let plain = users.get_or_fetch("gone", counted(&calls, v1())).await;
    assert!(
        matches!(plain, Err(TypedError::NotFound { .. })),
        "{plain:?}"
    );
}

/// A deploy changed the type but not the schema: postcard cannot read the old bytes as the
/// new type, so the stored value is a counted miss and the fresh value replaces it.
#[tokio::test]
async fn a_value_of_an_older_shape_under_the_same_schema_is_a_counted_miss() {
    let cache = mem_cache();
    let old: TypedCache<UserV1> = TypedCache::new(cache.clone()).schema("user");
    old.get_or_fetch("u", counted(&Arc::default(), v1()))
        .await
        .unwrap();
    committed(&cache, 1).await;

    let new: TypedCache<UserV2> = TypedCache::new(cache.clone()).schema("user");
    let calls = Arc::new(AtomicUsize::new(0));
    let got = new.get_or_fetch("u", counted(&calls, v2())).await.unwrap();
    assert_eq!(got, v2());
    assert_eq!(new.decode_failures(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    committed(&cache, 2).await;
    let hit = new.get_or_fetch("u", counted(&calls, v2())).await.unwrap();
    assert_eq!(hit, v2());
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the new value is stored");
}

/// With a new schema the old value is refetched without being decoded at all.
#[tokio::test]
async fn a_value_stored_under_another_schema_is_refetched_undecoded() {
    let cache = mem_cache();
    let old: TypedCache<UserV1> = TypedCache::new(cache.clone()).schema("user/v1");
    old.get_or_fetch("u", counted(&Arc::default(), v1()))
        .await
        .unwrap();
    committed(&cache, 1).await;

    let new: TypedCache<UserV2> = TypedCache::new(cache.clone()).schema("user/v2");
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        new.get_or_fetch("u", counted(&calls, v2())).await.unwrap(),
        v2()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(new.decode_failures(), 0);
    assert_eq!(new.get_cached("u").await.unwrap(), Some(v2()));
    assert_eq!(
        old.get_cached("u").await.unwrap(),
        None,
        "v1 readers miss too"
    );
}

/// JSON is self-describing: an added `#[serde(default)]` field still reads the old value.
#[tokio::test]
async fn json_reads_an_older_value_into_a_type_with_a_defaulted_field() {
    let cache = mem_cache();
    let old = TypedCache::<UserV1, _>::with_codec(cache.clone(), Json).schema("user");
    old.get_or_fetch("u", counted(&Arc::default(), v1()))
        .await
        .unwrap();
    committed(&cache, 1).await;

    let new = TypedCache::<UserV2, _>::with_codec(cache, Json).schema("user");
    let got = new.get_cached("u").await.unwrap().expect("stored");
    assert_eq!(
        (got.id, got.name.as_str(), got.email.as_str()),
        (42, "dotori", "")
    );
}

#[tokio::test]
async fn a_codec_other_than_the_writers_is_a_miss() {
    let cache = mem_cache();
    let json = TypedCache::<UserV1, _>::with_codec(cache.clone(), Json).schema("user");
    json.get_or_fetch("u", counted(&Arc::default(), v1()))
        .await
        .unwrap();
    committed(&cache, 1).await;
    let postcard = TypedCache::<UserV1>::new(cache).schema("user");
    assert_eq!(postcard.get_cached("u").await.unwrap(), None);
    assert_eq!(
        postcard.decode_failures(),
        0,
        "told apart by the format tag, not decoded"
    );
}

#[tokio::test]
async fn a_disk_tier_keeps_values_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async { FileStore::builder(dir.path()).open().await.unwrap() };
    let first: TypedCache<UserV1> = TypedCache::new(Cache::builder().hot(open().await).build());
    first
        .get_or_fetch("u", counted(&Arc::default(), v1()))
        .await
        .unwrap();
    committed(first.cache(), 1).await;
    first.cache().close(Duration::from_secs(5)).await.unwrap();

    let restarted: TypedCache<UserV1> = TypedCache::new(Cache::builder().hot(open().await).build());
    let calls = Arc::new(AtomicUsize::new(0));
    let got = restarted.get_or_fetch("u", counted(&calls, v1())).await;
    assert_eq!(got.unwrap(), v1());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_stale_value_is_served_while_it_is_refreshed() {
    let users: TypedCache<UserV1> = TypedCache::new(mem_cache()).ttl(Duration::from_millis(20));
    let calls = Arc::new(AtomicUsize::new(0));
    users
        .get_or_fetch("u", counted(&calls, v1()))
        .await
        .unwrap();
    committed(users.cache(), 1).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(users.get_cached("u").await.unwrap(), Some(v1()));
    // A refresh, had one been scheduled, would have started by now.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refreshes = users.cache().stats().refreshes;
    assert_eq!(refreshes, 0, "get_cached schedules no refresh");

    let renamed = UserV1 {
        name: "daramjwee".into(),
        ..v1()
    };
    let stale = users.get_or_fetch("u", counted(&calls, renamed.clone()));
    assert_eq!(stale.await.unwrap(), v1(), "served stale at once");
    committed(users.cache(), 2).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(users.get_cached("u").await.unwrap(), Some(renamed));
}

#[tokio::test]
async fn a_failing_fetch_is_a_fetch_error_with_its_source() {
    let users: TypedCache<UserV1> = TypedCache::new(mem_cache());
    let fail = || async { Err::<UserV1, _>(std::io::Error::other("db down")) };
    let err = users.get_or_fetch("u", fail).await.unwrap_err();
    let TypedError::Fetch { key, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(key, "u");
    assert!(source.downcast_ref::<std::io::Error>().is_some());
}

#[tokio::test]
async fn a_value_the_codec_cannot_encode_is_an_encode_error() {
    // JSON object keys must be strings.
    let maps = TypedCache::<HashMap<(u8, u8), u8>, _>::with_codec(mem_cache(), Json);
    let value = HashMap::from([((1, 2), 3)]);
    let err = maps
        .get_or_fetch("m", counted(&Arc::default(), value))
        .await
        .unwrap_err();
    assert!(matches!(err, TypedError::Encode { .. }), "{err:?}");
}

/// A lookup that reads a stored "not found" right after another one fetched it (before the
/// fill committed) must not abandon the fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_entries_commit_when_looked_up_back_to_back() {
    let users: TypedCache<UserV1> = TypedCache::new(mem_cache());
    let calls = Arc::new(AtomicUsize::new(0));
    for n in 0..40 {
        let key = format!("gone:{}", n / 2);
        let calls = calls.clone();
        let slow_none = move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            // A fetch that yields lets the next lookup arrive while the fill is still open.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<Option<UserV1>, std::io::Error>(None)
        };
        let got = users.get_or_fetch_optional(&key, slow_none).await;
        assert_eq!(got.unwrap(), None);
    }
    committed(users.cache(), 20).await;
    assert_eq!(users.cache().stats().fills_failed, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 20);
}

/// A typed value in an S3 cold tier (the S3-compatible server of `scripts/s3-server.sh`) is
/// read by a process that starts with an empty hot tier. Skipped, saying so, without a server.
#[cfg(feature = "aws")]
#[tokio::test]
async fn an_s3_cold_tier_serves_typed_values_to_a_fresh_process() {
    use crate::store::BucketStore;
    use crate::ColdFill;

    let (Ok(_), Ok(bucket)) = (
        std::env::var("AWS_ENDPOINT"),
        std::env::var("DARAMJWEE_S3_BUCKET"),
    ) else {
        let required = std::env::var("DARAMJWEE_S3_REQUIRED").as_deref() == Ok("1");
        assert!(!required, "DARAMJWEE_S3_REQUIRED=1 but no S3 server is set");
        eprintln!("SKIPPED: no S3 server (eval \"$(bash scripts/s3-server.sh start)\")");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("s3://{bucket}/typed-{}-{nanos}", std::process::id());
    let process = |url: &str| {
        let cold = BucketStore::from_url(url).unwrap().build().unwrap();
        let cache = Cache::builder()
            .hot(MemStore::new(1 << 20))
            .cold(cold)
            .cold_fill(ColdFill::WriteThrough)
            .build();
        TypedCache::<UserV1>::new(cache).schema("user/v1")
    };

    let first = process(&url);
    first
        .get_or_fetch("u", counted(&Arc::default(), v1()))
        .await
        .unwrap();
    first.cache().close(Duration::from_secs(20)).await.unwrap();

    let second = process(&url);
    let calls = Arc::new(AtomicUsize::new(0));
    let got = second
        .get_or_fetch("u", counted(&calls, v1()))
        .await
        .unwrap();
    assert_eq!(got, v1());
    assert_eq!(calls.load(Ordering::SeqCst), 0, "read from S3, not fetched");
    assert_eq!(second.cache().stats().hits, vec![0, 1]);
}
