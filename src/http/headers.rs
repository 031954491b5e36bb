//! Header fields the cache treats specially: the hop-by-hop fields that never cross it, and the
//! request fields that can change what an origin answers without changing the URL.
//!
//! One list of each, used by the layer and by the `daramjwee` proxy binary alike, so the two
//! can never disagree on what crosses the cache.

use http::header::{self, HeaderMap, HeaderName};

/// The names of [`HOP_BY_HOP`], as text: the one list both are made from.
const HOP_BY_HOP_NAMES: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1), plus the proxy
/// credentials (`Proxy-Authorization`, `Proxy-Authenticate`, RFC 9110 §11.7), which are meant
/// for the next hop only: none of them is forwarded to an origin, stored, or sent to a client
/// from the cache. [`is_hop_by_hop`] checks a name against it.
pub const HOP_BY_HOP: [HeaderName; 9] = names(HOP_BY_HOP_NAMES);

/// The names of [`TARGET_REWRITING`], as text: the one list both are made from.
const TARGET_REWRITING_NAMES: [&str; 13] = [
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Request fields that ask an origin (or a framework in front of it) to answer for another
/// host, scheme, path prefix, target or method than the request line says.
///
/// Behind a proxy, most web frameworks build links and redirects from these (Rails, Django,
/// Express, Next.js, Spring). A shared cache that forwards one of them without keying it lets
/// any client store a response made for another target under the key everyone else reads
/// (cache poisoning). The layer therefore never forwards them unkeyed: see
/// [`TargetHeaders`](super::TargetHeaders). [`is_target_rewriting`] checks a name against it.
pub const TARGET_REWRITING: [HeaderName; 13] = names(TARGET_REWRITING_NAMES);

/// `HeaderName`s of lowercase names, at compile time (`from_static` panics there on a bad one).
const fn names<const N: usize>(text: [&'static str; N]) -> [HeaderName; N] {
    // `HeaderName` is not `Copy`: the array is filled from a `const` placeholder, then each
    // slot is swapped for its name. A placeholder (a standard name) owns nothing, so
    // forgetting it leaks nothing; a `const fn` cannot run a destructor.
    const PLACEHOLDER: HeaderName = header::ACCEPT;
    let mut out = [PLACEHOLDER; N];
    let mut i = 0;
    while i < N {
        std::mem::forget(std::mem::replace(
            &mut out[i],
            HeaderName::from_static(text[i]),
        ));
        i += 1;
    }
    out
}

/// Whether `name` is one of the [`HOP_BY_HOP`] fields.
///
/// Cheaper than `HOP_BY_HOP.contains(name)`, which builds and drops a copy of the list (a
/// `const`) at each call; this compares the name's text with the list's, mostly by length.
///
/// ```
/// use daramjwee::http::is_hop_by_hop;
/// assert!(is_hop_by_hop(&http::header::TRANSFER_ENCODING));
/// assert!(!is_hop_by_hop(&http::header::ACCEPT));
/// ```
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP_NAMES.contains(&name.as_str())
}

/// Whether `name` is one of the [`TARGET_REWRITING`] fields (as cheap as [`is_hop_by_hop`]).
///
/// ```
/// use daramjwee::http::is_target_rewriting;
/// assert!(is_target_rewriting(&http::HeaderName::from_static("x-forwarded-host")));
/// assert!(!is_target_rewriting(&http::header::HOST));
/// ```
pub fn is_target_rewriting(name: &HeaderName) -> bool {
    TARGET_REWRITING_NAMES.contains(&name.as_str())
}

/// Removes the hop-by-hop fields ([`HOP_BY_HOP`]) and every field the `Connection` header
/// names from `headers`.
///
/// ```
/// let mut h = http::HeaderMap::new();
/// h.insert("connection", "x-private-hop".parse().unwrap());
/// h.insert("x-private-hop", "1".parse().unwrap());
/// h.insert("proxy-authorization", "Basic Zm9vOmJhcg==".parse().unwrap());
/// h.insert("accept", "*/*".parse().unwrap());
/// daramjwee::http::strip_hop_by_hop(&mut h);
/// assert_eq!(h.len(), 1);
/// assert!(h.contains_key("accept"));
/// ```
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the layer does with the [`TARGET_REWRITING`] fields of a request it looks up.
///
/// The default, [`TargetHeaders::Key`], keeps every deployment safe and working: a request
/// without these fields (the usual case) keys as before, and one that carries them is stored
/// apart, under a key that names their values, so it can never poison what other clients read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetHeaders {
    /// Forward them to the origin and add their values to the key (the default).
    #[default]
    Key,
    /// Remove them from the request before it reaches the origin, and key as usual. For
    /// origins that must never see a client's claim about the target.
    Strip,
    /// Forward them unkeyed. Only safe when something in front of the cache already removes or
    /// sets these fields for every request (a trusted load balancer); otherwise any client can
    /// poison the cache.
    Forward,
}

/// Whether `headers` carries any of the [`TARGET_REWRITING`] fields. On the hit path: one
/// pass over the request's (few) names, each compared with the list, rather than a hashed
/// lookup per listed field.
pub(crate) fn has_target_rewriting(headers: &HeaderMap) -> bool {
    headers.keys().any(is_target_rewriting)
}

/// Appends `name=value` for every value of every field in `names` that `headers` holds, after a
/// space (which no URI holds, so the suffix cannot collide with another URL's key).
pub(crate) fn append_to_key<'a>(
    key: &mut String,
    headers: &HeaderMap,
    names: impl IntoIterator<Item = &'a HeaderName>,
) {
    for name in names {
        for value in headers.get_all(name) {
            key.push(' ');
            key.push_str(name.as_str());
            key.push('=');
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name checks agree with the lists, and the lists hold the names as `http` parses
    /// them (a standard name as the standard one).
    #[test]
    fn name_checks_match_the_lists() {
        for name in HOP_BY_HOP.iter() {
            assert!(is_hop_by_hop(name), "{name}");
            assert_eq!(
                *name,
                HeaderName::from_bytes(name.as_str().as_bytes()).unwrap()
            );
        }
        for name in TARGET_REWRITING.iter() {
            assert!(is_target_rewriting(name), "{name}");
            assert_eq!(
                *name,
                HeaderName::from_bytes(name.as_str().as_bytes()).unwrap()
            );
        }
        assert_eq!(HOP_BY_HOP[0], header::CONNECTION);
        assert_eq!(TARGET_REWRITING[0], header::FORWARDED);
        for other in [
            header::ACCEPT,
            header::HOST,
            HeaderName::from_static("x-forwarded-for"),
        ] {
            assert!(
                !is_hop_by_hop(&other) && !is_target_rewriting(&other),
                "{other}"
            );
        }
    }

    #[test]
    fn proxy_credentials_and_connection_listed_fields_are_stripped() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "close, x-a"),
            ("x-a", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(n), v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn target_rewriting_fields_are_detected() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        assert!(!has_target_rewriting(&h));
        h.insert("x-original-url", "/admin".parse().unwrap());
        assert!(has_target_rewriting(&h));
    }
}
