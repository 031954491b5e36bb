//! The cache engine on its own, with a hand-written fetcher: no HTTP involved.
//!
//! ```text
//! cargo run --example engine
//! ```
//!
//! Like the Go daramjwee's `Get(key, fetcher)`: the fetcher is called only on a miss (or a
//! refresh), gets the stored entry's metadata so it can answer not-modified, and hands back a
//! stream of body chunks that is served and stored at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use daramjwee::store::{FileStore, MemStore};
use daramjwee::{BoxError, Cache, EntryBody, Fetched, Metadata, Outcome};
use futures_util::stream;
use http::StatusCode;

/// What the pretend origin's fetchers return.
type OriginFuture = Pin<Box<dyn Future<Output = Result<Fetched, BoxError>> + Send>>;

/// A pretend origin: an object storage bucket or a slow service. Counts its fetches.
#[derive(Clone, Default)]
struct Origin {
    fetches: Arc<AtomicU64>,
}

impl Origin {
    /// A fetcher for `key`. Any `FnOnce(Option<Arc<Metadata>>) -> Future<Output =
    /// Result<Fetched, BoxError>>` closure is a fetcher.
    fn fetcher(
        &self,
        key: &str,
    ) -> impl FnOnce(Option<Arc<Metadata>>) -> OriginFuture + Send + 'static {
        let fetches = self.fetches.clone();
        let key = key.to_owned();
        move |previous| {
            Box::pin(async move {
                let n = fetches.fetch_add(1, Ordering::Relaxed) + 1;
                let etag = "\"v1\"";
                // The engine passes the stored entry's metadata: answer not-modified when
                // the validator still matches, and the stored body is kept.
                if previous.as_ref().and_then(|m| m.etag.as_deref()) == Some(etag) {
                    return Ok(Fetched::NotModified { meta: None });
                }
                let chunks: Vec<Result<Bytes, daramjwee::Error>> = vec![
                    Ok(Bytes::from(format!("contents of {key} "))),
                    Ok(Bytes::from(format!("(fetch #{n})"))),
                ];
                let len = chunks
                    .iter()
                    .map(|c| c.as_ref().map_or(0, |b| b.len() as u64))
                    .sum();
                Ok(Fetched::Entry {
                    meta: Metadata::new(StatusCode::OK)
                        .with_etag(etag)
                        .with_content_length(len),
                    // Any stream of chunks; it is never collected whole by the engine.
                    body: EntryBody::from_stream(stream::iter(chunks)),
                })
            })
        }
    }
}

fn describe(outcome: Outcome) -> String {
    match outcome {
        Outcome::Hit { tier: 0, stale } => {
            format!("hot hit{}", if stale { " (stale)" } else { "" })
        }
        Outcome::Hit { tier, stale } => {
            format!("tier-{tier} hit{}", if stale { " (stale)" } else { "" })
        }
        other => format!("{other:?}").to_lowercase(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // Hot tier: 16 MiB of memory. Cold tier: 256 MiB on disk, in a temp dir for this example
    // (a real deployment points it at a persistent directory: the index is rebuilt on open,
    // so entries survive restarts). An object-store tier (feature `object-store`) fits here too.
    let dir = tempfile::tempdir()?;
    let cold = FileStore::builder(dir.path())
        .capacity(256 << 20)
        .open()
        .await?;
    let cache = Cache::builder()
        .hot(MemStore::new(16 << 20))
        .cold(cold)
        .default_ttl(Duration::from_secs(60))
        .workers(2, 64)
        .build();
    let origin = Origin::default();

    // 1. A miss calls the fetcher; its stream goes to us while it fills the hot tier.
    let first = cache.get("user:42", origin.fetcher("user:42")).await?;
    println!(
        "get user:42 -> {:<10} {:?}",
        describe(first.outcome),
        first.body.collect().await?
    );

    // 2. A hit: no fetch, the stored chunks are shared, not copied.
    let second = cache.get("user:42", origin.fetcher("user:42")).await?;
    println!(
        "get user:42 -> {:<10} {:?}",
        describe(second.outcome),
        second.body.collect().await?
    );

    // 3. The cold tier is filled in the background from the committed hot entry. Once it is on
    //    disk, drop the hot copy to see a cold hit, promoted back into hot while it streams.
    for _ in 0..100 {
        if cache
            .tier_store(1)
            .expect("cold tier")
            .head("user:42")
            .await?
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(hot) = cache.tier_store(0) {
        hot.delete("user:42").await?;
    }
    let cold_hit = cache.get("user:42", origin.fetcher("user:42")).await?;
    println!(
        "get user:42 -> {:<10} {:?}",
        describe(cold_hit.outcome),
        cold_hit.body.collect().await?
    );

    // 4. set: a streaming writer; nothing is visible until commit.
    let body = Bytes::from_static(b"written by the application");
    let mut w = cache
        .set(
            "greeting",
            Metadata::new(StatusCode::OK).with_content_length(body.len() as u64),
        )
        .await?;
    w.write(body).await?;
    w.commit().await?;
    let set_hit = cache.get("greeting", origin.fetcher("greeting")).await?;
    println!(
        "get greeting -> {:<9} {:?}",
        describe(set_hit.outcome),
        set_hit.body.collect().await?
    );

    // 5. schedule_refresh: revalidates in the background; the fetcher sees the stored ETag and
    //    answers not-modified, so the body is not moved. It returns false (and does nothing)
    //    while a fill of the key is still in flight or when the worker pool is full.
    let mut queued = false;
    for _ in 0..100 {
        queued = cache.schedule_refresh("user:42", origin.fetcher("user:42"));
        if queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..100 {
        if cache.stats().revalidated > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "schedule_refresh user:42 -> queued: {queued}, revalidated: {}",
        cache.stats().revalidated
    );

    // 6. delete: every tier; the next get goes to the origin.
    cache.delete("user:42").await?;
    let after = cache.get("user:42", origin.fetcher("user:42")).await?;
    println!(
        "get user:42 -> {:<10} {:?}   (after delete)",
        describe(after.outcome),
        after.body.collect().await?
    );

    // 7. close: stop taking work and drain background refreshes and cold copies.
    cache.close(Duration::from_secs(5)).await?;
    let stats = cache.stats();
    println!(
        "\norigin fetches: {}; hits per tier: {:?}; misses: {}; revalidated: {}; promotions: {}",
        origin.fetches.load(Ordering::Relaxed),
        stats.hits,
        stats.misses,
        stats.revalidated,
        stats.promotions,
    );
    Ok(())
}
