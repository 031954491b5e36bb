//! Typed values over the engine: `TypedCache<T>` (feature `serde`).
//!
//! ```text
//! cargo run --example typed --features serde
//! ```
//!
//! A "database" that takes 20 ms per query sits behind a `TypedCache<Profile>` with a memory
//! hot tier and a disk cold tier. The example shows a miss, a hit, eight concurrent lookups
//! sharing one query, a stored "not found", and a deploy that changed `Profile`'s shape: with a
//! new schema the old values are fetched again, never decoded into the wrong fields.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daramjwee::store::{FileStore, MemStore};
use daramjwee::typed::{TypedCache, TypedError};
use daramjwee::Cache;
use serde::{Deserialize, Serialize};

/// What version 1 of the application stores.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Profile {
    id: u64,
    name: String,
}

/// Version 2 added a field.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct ProfileV2 {
    id: u64,
    name: String,
    acorns: u32,
}

/// Counts the queries the "database" answered.
#[derive(Clone, Default)]
struct Db(Arc<AtomicU64>);

impl Db {
    async fn profile(&self, id: u64) -> Result<Option<Profile>, std::io::Error> {
        self.0.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok((id < 100).then(|| Profile {
            id,
            name: format!("squirrel #{id}"),
        }))
    }

    fn queries(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

async fn timed<T>(label: &str, db: &Db, f: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = f.await;
    println!(
        "{label:<36} {:>8.1?}  queries so far: {}",
        start.elapsed(),
        db.queries()
    );
    out
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::builder()
        .hot(MemStore::new(16 << 20))
        .cold(FileStore::builder(dir.path()).open().await?)
        .build();
    let db = Db::default();
    let profiles: TypedCache<Profile> = TypedCache::new(cache.clone())
        .schema("profile/v1")
        .ttl(Duration::from_secs(300));

    let load = |id| {
        let db = db.clone();
        move || async move { db.profile(id).await }
    };
    let p = timed(
        "miss: user 7",
        &db,
        profiles.get_or_fetch_optional("user:7", load(7)),
    )
    .await?;
    println!("  -> {p:?}");
    timed(
        "hit: user 7",
        &db,
        profiles.get_or_fetch_optional("user:7", load(7)),
    )
    .await?;

    let many = (0..8).map(|_| profiles.get_or_fetch_optional("user:8", load(8)));
    timed(
        "8 concurrent lookups of user 8",
        &db,
        futures_util::future::join_all(many),
    )
    .await;

    let none = timed(
        "not found: user 500",
        &db,
        profiles.get_or_fetch_optional("user:500", load(500)),
    )
    .await?;
    timed(
        "not found again (negative entry)",
        &db,
        profiles.get_or_fetch_optional("user:500", load(500)),
    )
    .await?;
    println!("  -> {none:?}");

    // The deploy: a new shape, a new schema. Version 1's bytes are never decoded as version 2.
    let v2: TypedCache<ProfileV2> = TypedCache::new(cache).schema("profile/v2");
    let upgrade = {
        let db = db.clone();
        move || async move {
            let old = db.profile(7).await?.ok_or(std::io::ErrorKind::NotFound)?;
            Ok::<_, std::io::Error>(ProfileV2 {
                id: old.id,
                name: old.name,
                acorns: 3,
            })
        }
    };
    let p2 = timed(
        "v2 reads user 7 (refetched)",
        &db,
        v2.get_or_fetch("user:7", upgrade),
    )
    .await?;
    println!("  -> {p2:?}; decode failures: {}", v2.decode_failures());

    let failing = || async { Err::<ProfileV2, _>(std::io::Error::other("database down")) };
    match v2.get_or_fetch("user:9", failing).await {
        Err(TypedError::Fetch { key, source }) => println!("fetch of {key} failed: {source}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
