//! # daramjwee
//!
//! A hybrid, streaming HTTP cache built as a [tower] middleware.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod cache;
pub mod entry;
pub mod error;
pub mod eviction;
pub mod http;
pub mod store;
pub mod worker;

pub use cache::{
    Cache, CacheBuilder, CacheStats, CacheWriter, ColdFill, Fetched, Fetcher, Freshness,
    GetOptions, Lookup, Outcome, Promotion,
};
pub use entry::{EntryBody, EntryKind, Metadata, StoredEntry};
pub use error::{BoxError, CloseError, Error, StoreError};
pub use worker::{WorkerPool, WorkerStats};
