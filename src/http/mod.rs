//! The tower face of the cache: [`CacheLayer`], [`CacheService`], [`ResponseFuture`],
//! [`CacheBody`].
//!
//! The layer turns a request into a key and a decision (bypass or lookup), adapts the inner
//! service into the engine's [`Origin`](crate::Origin), decides with HTTP's caching rules what
//! may be stored and for how long ([`PolicyMode`]), and turns entries back into responses with
//! `Age` and `Cache-Status` (RFC 9211) headers.
//!
//! ```
//! use axum::{routing::get, Router};
//! use daramjwee::{http::{CacheLayer, PolicyMode}, store::MemStore, Cache};
//! use std::time::Duration;
//!
//! let cache = Cache::builder().hot(MemStore::new(256 << 20)).build();
//! let layer = CacheLayer::builder(cache)
//!     .policy(PolicyMode::OriginTrusting {
//!         ttl: Duration::from_secs(60),
//!         negative_ttl: Duration::from_secs(5),
//!     })
//!     .build();
//! let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(layer);
//! # let _ = app;
//! ```

mod answer;
mod body;
mod config;
mod future;
mod handle;
mod headers;
mod invalidate;
mod key;
mod layer;
mod lookup;
mod origin;
pub mod policy;
pub(crate) mod range;
mod request;
mod service;
mod status;
pub(crate) mod vary;

pub use body::CacheBody;
pub use future::ResponseFuture;
pub use handle::CacheHandle;
pub use headers::{
    is_hop_by_hop, is_target_rewriting, strip_hop_by_hop, TargetHeaders, HOP_BY_HOP,
    TARGET_REWRITING,
};
pub use key::{default_key, key_with_headers, KeyFn, KeyWriter};
pub use layer::{CacheLayer, CacheLayerBuilder};
pub use origin::OriginService;
pub use policy::{CacheControl, PolicyMode};
pub use service::CacheService;
pub use status::CACHE_NAME;

/// The `Cache-Status` header name (RFC 9211).
pub const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");
