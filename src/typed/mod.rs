//! Typed values over the engine (feature `serde`): [`TypedCache<T>`] stores any
//! `Serialize + DeserializeOwned` value through a [`Codec`] and hands values back, with the
//! engine's coalescing, tiers, negative caching and background refresh.
//!
//! ```
//! use daramjwee::typed::TypedCache;
//! use daramjwee::Cache;
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct User { id: u64, name: String }
//!
//! async fn load_user(id: u64) -> Result<User, std::io::Error> {
//!     Ok(User { id, name: "dotori".into() }) // a database query, an API call
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), daramjwee::typed::TypedError> {
//! let users: TypedCache<User> = TypedCache::new(Cache::builder().build()).schema("user/v1");
//! let user = users.get_or_fetch("user:42", || load_user(42)).await?;
//! assert_eq!(user.name, "dotori");
//! assert_eq!(users.get_cached("user:42").await?, Some(user));
//! # Ok(()) }
//! ```
//!
//! A stored value that does not decode as `T` (written by an older `T`, or under another
//! schema or codec) is a miss: it is counted ([`TypedCache::decode_failures`]), logged with its
//! [`TypedError::Decode`], and fetched again. It is never served as a wrong value.

mod codec;
#[cfg(test)]
mod tests;

pub use codec::{Codec, Json, Postcard, PostcardError};

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cache::{Cache, Fetched, GetOptions, Lookup, Outcome, Verdict};
use crate::entry::{EntryBody, Metadata};
use crate::error::{BoxError, Error};

/// The metadata field that names the codec and schema a value was written with.
const FORMAT: HeaderName = HeaderName::from_static("daramjwee-typed");

/// Why a typed lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// The fetch function failed (and nothing usable was stored). The source is its error.
    #[error("fetching {key} failed")]
    Fetch {
        /// The key looked up.
        key: String,
        /// The fetch function's error.
        #[source]
        source: BoxError,
    },
    /// The fetched value could not be encoded.
    #[error("encoding the value for {key} failed")]
    Encode {
        /// The key looked up.
        key: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// Stored bytes do not decode as the cache's type: another type, schema or codec wrote
    /// them. Lookups treat this as a miss; it is returned only when a value just fetched does
    /// not decode (a codec that cannot read what it wrote).
    #[error("the value under {key} does not decode as {type_name}")]
    Decode {
        /// The key looked up.
        key: String,
        /// The type the bytes were read as.
        type_name: &'static str,
        /// The codec's error, or [`FormatMismatch`].
        #[source]
        source: BoxError,
    },
    /// [`get_or_fetch`](TypedCache::get_or_fetch) found a "not found" stored by
    /// [`get_or_fetch_optional`](TypedCache::get_or_fetch_optional) for the same key.
    #[error("{key} is stored as not found")]
    NotFound {
        /// The key looked up.
        key: String,
    },
    /// The engine failed (closed, a body cut short).
    #[error(transparent)]
    Cache(Error),
}

/// The source of a [`TypedError::Decode`] for a value written under another codec or schema.
#[derive(Debug, thiserror::Error)]
#[error("written under another codec or schema")]
#[non_exhaustive]
pub struct FormatMismatch;

/// A lookup's fetcher found no fetch function: a `get_cached` (which never fetches) scheduled
/// a refresh, or a background refresh already used it.
#[derive(Debug, thiserror::Error)]
#[error("no fetch function for this lookup")]
struct NoFetch;

/// A cache of `T` values under string keys, over a [`Cache`] and a [`Codec`].
///
/// Cheap to clone: clones share the engine, the codec and the counters.
pub struct TypedCache<T, C = Postcard> {
    cache: Cache,
    codec: Arc<C>,
    /// The digest of codec name and schema stored with each value.
    format: HeaderValue,
    schema: Arc<str>,
    ttl: Option<Duration>,
    negative_ttl: Option<Duration>,
    decode_failures: Arc<AtomicU64>,
    _values: PhantomData<fn() -> T>,
}

impl<T, C> Clone for TypedCache<T, C> {
    fn clone(&self) -> Self {
        TypedCache {
            cache: self.cache.clone(),
            codec: self.codec.clone(),
            format: self.format.clone(),
            schema: self.schema.clone(),
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
            decode_failures: self.decode_failures.clone(),
            _values: PhantomData,
        }
    }
}

impl<T, C: Codec> std::fmt::Debug for TypedCache<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedCache")
            .field("type", &std::any::type_name::<T>())
            .field("codec", &self.codec.name())
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl<T> TypedCache<T, Postcard> {
    /// A typed view of `cache` with the [`Postcard`] codec and the type's name as schema.
    pub fn new(cache: Cache) -> Self {
        TypedCache::with_codec(cache, Postcard)
    }
}

impl<T, C: Codec> TypedCache<T, C> {
    /// A typed view of `cache` with `codec`.
    pub fn with_codec(cache: Cache, codec: C) -> Self {
        let schema: Arc<str> = std::any::type_name::<T>().into();
        TypedCache {
            format: format_tag(codec.name(), &schema),
            cache,
            codec: Arc::new(codec),
            schema,
            ttl: None,
            negative_ttl: None,
            decode_failures: Arc::new(AtomicU64::new(0)),
            _values: PhantomData,
        }
    }

    /// Names the shape of `T` (default: its Rust type name). Change it whenever `T` changes
    /// shape: a value stored under another schema is refetched, never decoded.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<Arc<str>>) -> Self {
        self.schema = schema.into();
        self.format = format_tag(self.codec.name(), &self.schema);
        self
    }

    /// How long a stored value is fresh (default: the tier's TTL).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long a stored "not found" is fresh (default: the tier's negative TTL).
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// The engine underneath.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Stored values that did not decode as `T` (each was then fetched again).
    pub fn decode_failures(&self) -> u64 {
        self.decode_failures.load(Ordering::Relaxed)
    }

    /// Removes `key` from every tier.
    pub async fn invalidate(&self, key: &str) -> Result<(), TypedError> {
        self.cache.delete(key).await.map_err(TypedError::Cache)
    }
}

impl<T, C> TypedCache<T, C>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// The value under `key`, calling `fetch` on a miss (once per key however many callers
    /// wait: they share its result) or to refresh a stale value in the background.
    pub async fn get_or_fetch<F, Fut, E>(&self, key: &str, fetch: F) -> Result<T, TypedError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.get_or_fetch_optional(key, move || async move { fetch().await.map(Some) })
            .await?
            .ok_or_else(|| TypedError::NotFound {
                key: key.to_owned(),
            })
    }

    /// Like [`get_or_fetch`](TypedCache::get_or_fetch) for a fetch that may find nothing: a
    /// `None` is stored as a negative entry (kept for the negative TTL), so repeated lookups of
    /// a missing key do not reach the origin.
    pub async fn get_or_fetch_optional<F, Fut, E>(
        &self,
        key: &str,
        fetch: F,
    ) -> Result<Option<T>, TypedError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        // The engine consumes a fetcher per lookup; a value that fails to decode needs a second
        // lookup with the same fetch, so both share it.
        let slot = Arc::new(Mutex::new(Some(fetch)));
        let lookup = self.lookup(key, &slot).await?;
        let stored = !matches!(lookup.outcome, Outcome::Miss | Outcome::Pass);
        match self.decode(key, lookup).await {
            Err(TypedError::Decode { source, .. }) if stored => {
                self.decode_failed(key, source);
                self.cache.delete(key).await.map_err(TypedError::Cache)?;
                let lookup = self.lookup(key, &slot).await?;
                self.decode(key, lookup).await
            }
            other => other,
        }
    }

    /// The value under `key` if it is stored and decodes, fresh or stale; it never calls an
    /// origin, in the foreground or as a background refresh.
    pub async fn get_cached(&self, key: &str) -> Result<Option<T>, TypedError> {
        // `no_stale` keeps the engine from scheduling a refresh (there is no fetch to run);
        // with `only_cached` a stale entry is still answered.
        let opts = self.options().only_cached(true).no_stale(true);
        let none = |_prev| async { Err::<Fetched, BoxError>(Box::new(NoFetch)) };
        let lookup = match self.cache.get_with(key, opts, none).await {
            Ok(lookup) => lookup,
            Err(Error::NotCached) => return Ok(None),
            Err(e) => return Err(TypedError::Cache(e)),
        };
        match self.decode(key, lookup).await {
            Err(TypedError::Decode { source, .. }) => {
                self.decode_failed(key, source);
                Ok(None)
            }
            other => other,
        }
    }

    /// One engine lookup whose fetcher takes `fetch` from `slot`.
    async fn lookup<F, Fut, E>(
        &self,
        key: &str,
        slot: &Arc<Mutex<Option<F>>>,
    ) -> Result<Lookup, TypedError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        // The engine hands a fill's error to its callers as text (one error, many readers),
        // so this caller's own fetch or encoding error is kept here and returned as itself;
        // a caller that followed another's fill gets that text.
        let own_error = Arc::new(Mutex::new(None));
        let (slot, this, errors) = (slot.clone(), self.clone(), own_error.clone());
        let owned_key = key.to_owned();
        let fetcher = move |_previous| async move {
            let fetch = slot.lock().take().ok_or(NoFetch)?;
            let err = match fetch().await {
                Ok(value) => match this.entry(value) {
                    Ok(fetched) => return Ok(fetched),
                    Err(source) => TypedError::Encode {
                        key: owned_key,
                        source: Box::new(source),
                    },
                },
                Err(source) => TypedError::Fetch {
                    key: owned_key,
                    source: source.into(),
                },
            };
            let text = error_chain(&err);
            *errors.lock() = Some(err);
            Err(BoxError::from(text))
        };
        let res = self.cache.get_with(key, self.options(), fetcher).await;
        res.map_err(|e| match own_error.lock().take() {
            Some(own) => own,
            None => lookup_error(key, e),
        })
    }

    /// Lookup options: a value written under another codec or schema is never served; it is
    /// fetched again (the engine's usual freshness decides the rest).
    fn options(&self) -> GetOptions {
        let format = self.format.clone();
        GetOptions::default().judge(move |meta, _now| {
            if meta.headers.get(&FORMAT) == Some(&format) {
                Verdict::Default
            } else {
                Verdict::Validate
            }
        })
    }

    /// The stored form of a fetched value.
    fn entry(&self, value: Option<T>) -> Result<Fetched, C::Error> {
        let mut headers = http::HeaderMap::new();
        headers.insert(FORMAT, self.format.clone());
        let (meta, bytes, ttl) = match value {
            None => (
                Metadata::negative(StatusCode::NOT_FOUND),
                Vec::new(),
                self.negative_ttl,
            ),
            Some(v) => {
                let bytes = self.codec.encode(&v)?;
                (Metadata::new(StatusCode::OK), bytes, self.ttl)
            }
        };
        let mut meta = meta
            .with_headers(headers)
            .with_content_length(bytes.len() as u64);
        if let Some(ttl) = ttl {
            meta = meta.with_ttl(ttl);
        }
        Ok(Fetched::Entry {
            meta,
            body: EntryBody::from_bytes(bytes),
        })
    }

    /// Reads a lookup's value: `None` for a stored "not found".
    async fn decode(&self, key: &str, lookup: Lookup) -> Result<Option<T>, TypedError> {
        let failed = |source: BoxError| TypedError::Decode {
            key: key.to_owned(),
            type_name: std::any::type_name::<T>(),
            source,
        };
        if lookup.meta.headers.get(&FORMAT) != Some(&self.format) {
            return Err(failed(Box::new(FormatMismatch)));
        }
        // Read the body even for a "not found": a fill whose every reader dropped its body
        // unread is abandoned, and the entry would never be stored.
        let bytes = lookup.body.collect().await.map_err(TypedError::Cache)?;
        if lookup.meta.is_negative() {
            return Ok(None);
        }
        match self.codec.decode(&bytes) {
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(failed(Box::new(e))),
        }
    }

    fn decode_failed(&self, key: &str, source: BoxError) {
        self.decode_failures.fetch_add(1, Ordering::Relaxed);
        let error = TypedError::Decode {
            key: key.to_owned(),
            type_name: std::any::type_name::<T>(),
            source,
        };
        tracing::warn!(error = %error_chain(&error), "stored value is a miss");
    }
}

/// A typed error for an engine error: a fill's failure, or the engine's own.
fn lookup_error(key: &str, e: Error) -> TypedError {
    match e {
        Error::Fetch(source) => TypedError::Fetch {
            key: key.to_owned(),
            source,
        },
        e => TypedError::Cache(e),
    }
}

/// `e` and its sources, joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// A stable digest of codec and schema: the same across processes and restarts (a disk or
/// object-store tier outlives the process), and always a valid header value.
fn format_tag(codec: &str, schema: &str) -> HeaderValue {
    let digest = Sha256::new()
        .chain_update(codec.as_bytes())
        .chain_update([0])
        .chain_update(schema.as_bytes())
        .finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&hex).expect("hex digits are a valid header value")
}
