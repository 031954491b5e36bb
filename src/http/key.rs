//! Cache keys: how a request maps to the string the engine stores it under.

use std::sync::Arc;

use http::request::Parts;

/// A function from a request's head to its cache key.
pub type KeyFn = Arc<dyn Fn(&Parts) -> String + Send + Sync>;

/// The default key: `scheme://authority/path?query`, independent of the method (so HEAD is
/// served from a stored GET).
///
/// The authority comes from the URI (absolute-form, as clients and proxies send it) or else
/// from the `Host` header, so two virtual hosts never share entries; the scheme defaults to
/// `http`. Keys are data: stores hash them and never use them as paths.
///
/// ```
/// let req = http::Request::get("/a?b=1").header("host", "example.com").body(()).unwrap();
/// let (parts, _) = req.into_parts();
/// assert_eq!(daramjwee::http::default_key(&parts), "http://example.com/a?b=1");
/// ```
pub fn default_key(parts: &Parts) -> String {
    let uri = &parts.uri;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut key = String::with_capacity(scheme.len() + 3 + authority.len() + pq.len());
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(&authority.to_ascii_lowercase());
    key.push_str(pq);
    key
}
