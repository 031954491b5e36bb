//! # daramjwee
//!
//! A hybrid, streaming HTTP cache built as a [tower](https://docs.rs/tower) middleware.
//!
//! - [`http::CacheLayer`] puts a cache in front of any `Service<http::Request<B>>`: an axum
//!   `Router`, a hyper client, a reverse proxy.
//! - [`Cache`] is the HTTP-agnostic engine behind it: ordered tiers ([`store::MemStore`],
//!   [`store::FileStore`], your own [`store::Store`]), one fill per key with every waiter
//!   streaming it, background refresh on a bounded [`WorkerPool`], byte-bounded eviction
//!   ([`eviction`]).
//!
//! Bodies always stream: a miss streams the origin to the client while it fills the hot tier,
//! a lower-tier hit streams while it is promoted. An entry becomes visible only once its whole
//! body arrived intact. Cache faults fail open: the origin's response is served.
//!
//! ```
//! use axum::{routing::get, Router};
//! use daramjwee::{http::CacheLayer, store::MemStore, Cache};
//!
//! let cache = Cache::builder().hot(MemStore::new(256 << 20)).build();
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "expensive" }))
//!     .layer(CacheLayer::new(cache));
//! # let _ = app;
//! ```
//!
//! | feature | what it adds |
//! |---|---|
//! | `object-store` | a cold tier over the `object_store` crate (local, in-memory) |
//! | `aws`, `gcp`, `azure` | S3, GCS and Azure backends for it |
//! | `metrics` | counters and histograms through the `metrics` facade |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod cache;
pub mod entry;
pub mod error;
pub mod eviction;
pub mod http;
pub mod metrics;
pub mod store;
#[cfg(feature = "serde")]
pub mod typed;
pub mod worker;

/// Entry points for the cargo-fuzz targets in `fuzz/`: not a public API, may change at any time.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;

pub use cache::{
    Cache, CacheBuilder, CacheStats, CacheWriter, ColdFill, Fetched, Fetcher, Freshness,
    GetOptions, Judge, Lookup, Origin, Outcome, Passthrough, Promotion, Storing, Verdict,
};
pub use entry::{EntryBody, EntryKind, Metadata, StoredEntry};
pub use error::{BoxError, CloseError, Error, FillError, SharedError, StoreError};
pub use worker::{RuntimeStats, WorkerPool, WorkerRuntime, WorkerStats};
