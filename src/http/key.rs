//! Cache keys: how a request maps to the string the engine stores it under.

use std::sync::Arc;

use http::request::Parts;

/// A function from a request's head to its cache key.
pub type KeyFn = Arc<dyn Fn(&Parts) -> String + Send + Sync>;

/// A function that writes a request's cache key into a buffer it is given, empty (see
/// [`CacheLayerBuilder::key_writer`](super::CacheLayerBuilder::key_writer)).
pub type KeyWriter = Arc<dyn Fn(&Parts, &mut String) + Send + Sync>;

/// How a layer makes its keys.
pub(crate) enum KeyMaker {
    /// [`default_key`], built on the stack on the hit path.
    Default,
    /// A key function of the user's, returning a new string per request.
    Returns(KeyFn),
    /// A key function of the user's writing into a buffer the service reuses.
    Writes(KeyWriter),
}

impl KeyMaker {
    /// The key of `parts`, as a new string.
    pub(crate) fn make(&self, parts: &Parts) -> String {
        match self {
            KeyMaker::Default => default_key(parts),
            KeyMaker::Returns(f) => f(parts),
            KeyMaker::Writes(f) => {
                let mut key = String::new();
                f(parts, &mut key);
                key
            }
        }
    }
}

/// The default key: `scheme://authority/path?query`, independent of the method (so HEAD is
/// served from a stored GET).
///
/// What it covers: the scheme, the host (from the URI or `Host`), the path and the query. What
/// it does not: every other request field. The layer adds the fields that rewrite the target
/// ([`TARGET_REWRITING`](super::TARGET_REWRITING)) by itself (see
/// [`TargetHeaders`](super::TargetHeaders)), and a response that names request fields in `Vary`
/// is stored per value of those fields. Any other field your origin answers differently for
/// must be in the key: use [`key_with_headers`] for that.
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
    let (scheme, authority, pq) = key_parts(parts);
    let mut key = String::with_capacity(scheme.len() + 3 + authority.len() + pq.len());
    key.push_str(scheme);
    key.push_str("://");
    // Lower-cased in place: no second string for the host.
    let host = key.len()..key.len() + authority.len();
    key.push_str(authority);
    key[host].make_ascii_lowercase();
    key.push_str(pq);
    key
}

/// What [`default_key`] is made of: the scheme, the authority as sent, the path and query.
fn key_parts(parts: &Parts) -> (&str, &str, &str) {
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
    (scheme, authority, pq)
}

/// Room on the stack for [`default_key_in`]; a longer key is built as a `String`.
pub(crate) const KEY_BUF: usize = 256;

/// [`default_key`] written into `buf` when it fits: the hit path's key, without a string.
pub(crate) fn default_key_in<'b>(parts: &Parts, buf: &'b mut [u8; KEY_BUF]) -> Option<&'b str> {
    let (scheme, authority, pq) = key_parts(parts);
    let mut len = 0;
    for piece in [scheme, "://", authority, pq] {
        buf.get_mut(len..len + piece.len())?
            .copy_from_slice(piece.as_bytes());
        len += piece.len();
    }
    let host = scheme.len() + 3..scheme.len() + 3 + authority.len();
    buf[host].make_ascii_lowercase();
    // Pieces of `str`s, ASCII lower-casing: always UTF-8.
    std::str::from_utf8(&buf[..len]).ok()
}

/// A key function: the [`default_key`] plus the values of the request fields `names`, for an
/// origin whose answer depends on fields it does not name in `Vary` (a tenant header, a
/// language picked from a cookie-free field, ...).
///
/// ```
/// use daramjwee::http::{key_with_headers, CacheLayer};
/// use daramjwee::Cache;
///
/// let key = key_with_headers(["x-tenant"]);
/// let req = http::Request::get("/a").header("host", "example.com").header("x-tenant", "blue");
/// let (parts, _) = req.body(()).unwrap().into_parts();
/// assert_eq!(key(&parts), "http://example.com/a x-tenant=blue");
///
/// let layer = CacheLayer::builder(Cache::builder().build()).key_fn(key).build();
/// # let _ = layer;
/// ```
///
/// # Panics
///
/// If a name is not a valid header field name (a programming error, found when the key
/// function is built, not per request).
pub fn key_with_headers<I, N>(names: I) -> impl Fn(&Parts) -> String + Send + Sync + 'static
where
    I: IntoIterator<Item = N>,
    N: AsRef<str>,
{
    let names: Vec<http::HeaderName> = names
        .into_iter()
        .map(|n| {
            http::HeaderName::from_bytes(n.as_ref().as_bytes())
                .unwrap_or_else(|_| panic!("not a header field name: {:?}", n.as_ref()))
        })
        .collect();
    move |parts: &Parts| {
        let mut key = default_key(parts);
        super::headers::append_to_key(&mut key, &parts.headers, &names);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_on_the_stack_is_the_default_key() {
        let long = format!("/{}", "a".repeat(KEY_BUF));
        let heads = [
            http::Request::get("/a?b=1").header("host", "Example.COM:8080"),
            http::Request::get("https://Example.com/x"),
            http::Request::get("/"),
            http::Request::get(long.as_str()).header("host", "h"),
        ];
        for head in heads {
            let (parts, ()) = head.body(()).unwrap().into_parts();
            let mut buf = [0u8; KEY_BUF];
            let key = default_key(&parts);
            match default_key_in(&parts, &mut buf) {
                Some(on_stack) => assert_eq!(on_stack, key),
                None => assert!(key.len() > KEY_BUF, "{key} should fit"),
            }
        }
    }
}
