//! What of a client's request the upstream may see, and how that shapes the cache key.
//!
//! The rule this module enforces (issue 14): every request field the upstream sees is either
//! part of the cache key or set by the proxy itself. A field a client controls that reaches the
//! upstream unkeyed lets that client store a response made for it under the key everyone else
//! reads (cache poisoning): an origin that builds links from `X-Forwarded-Host` would serve
//! `evil.example` links to every later client.
//!
//! The work is split in two, around the cache layer:
//! - [`Forwarding::sanitize`] runs before the layer sees the request, so the layer keys, stores
//!   and forwards only what is left: it drops hop-by-hop fields (the library's one list,
//!   proxy credentials included), every `Forwarded` / `X-Forwarded-*` field and the other
//!   target-rewriting fields ([`TARGET_REWRITING`]) unless the site opts in, and the site's own
//!   `drop_headers`.
//! - [`Forwarding::set_upstream_headers`] runs after the layer, on the request sent upstream: it
//!   sets the fields whose values the proxy decides (`Host`, `X-Forwarded-For`,
//!   `X-Forwarded-Proto`, `X-Forwarded-Host`).
//!
//! [`Forwarding::key`] builds the key from what [`Forwarding::sanitize`] left, so the two can
//! never disagree. It must never read a field that `sanitize` may have left unkeyed.

use std::net::SocketAddr;

use daramjwee::http::{is_hop_by_hop, is_target_rewriting, strip_hop_by_hop, TARGET_REWRITING};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use crate::config::SiteSettings;
use crate::route::Route;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// One site's rules for the fields that describe the request's target and its client.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The public host name the upstream is told (`Host` with `preserve_host`, and
    /// `X-Forwarded-Host`), instead of the client's.
    public_host: Option<HeaderValue>,
    /// Whether the client's host is sent upstream (then it is in the key).
    preserve_host: bool,
    /// Whether the client's target-rewriting fields are forwarded (then they are in the key).
    forward_target_headers: bool,
    /// Extra request fields the site never forwards.
    drop: Vec<HeaderName>,
}

impl Forwarding {
    /// The rules of `site`.
    pub fn new(site: &SiteSettings) -> Forwarding {
        Forwarding {
            public_host: site.public_host.clone(),
            preserve_host: site.preserve_host,
            forward_target_headers: site.forward_target_headers,
            drop: site.drop_headers.clone(),
        }
    }

    /// Removes what the upstream must not see from a client request, before the cache layer
    /// keys it. Allocates nothing for a request that carries none of these fields.
    pub fn sanitize(&self, headers: &mut HeaderMap) {
        // Most requests carry none of them: one pass over the request's (few) names decides,
        // rather than a hashed removal per listed field.
        if !headers.keys().any(|name| self.drops(name)) {
            return;
        }
        strip_hop_by_hop(headers);
        for name in &self.drop {
            headers.remove(name);
        }
        if self.forward_target_headers {
            return;
        }
        for name in &TARGET_REWRITING {
            headers.remove(name);
        }
        // The list names the fields frameworks are known to read; any other `X-Forwarded-*`
        // is a claim about the request's path through proxies that only the proxy may make.
        if headers.keys().any(is_forwarding_field) {
            let names: Vec<HeaderName> = headers
                .keys()
                .filter(|n| is_forwarding_field(n))
                .cloned()
                .collect();
            for name in names {
                headers.remove(name);
            }
        }
    }

    /// Whether [`sanitize`](Self::sanitize) removes a field of this name. (A field that
    /// `Connection` lists is removed only with `Connection`, which is hop-by-hop itself.)
    fn drops(&self, name: &HeaderName) -> bool {
        is_hop_by_hop(name)
            || self.drop.contains(name)
            || (!self.forward_target_headers
                && (is_target_rewriting(name) || is_forwarding_field(name)))
    }

    /// The cache key of a sanitized request: the upstream URL it is sent to (or, when the
    /// client's host is forwarded, the client-facing URL with that host), then the values of
    /// the target-rewriting fields the site forwards, in the format of
    /// [`daramjwee::http::key_with_headers`].
    pub fn key(&self, route: &Route, parts: &Parts) -> String {
        let mut key = String::new();
        self.write_key(route, parts, &mut key);
        key
    }

    /// [`key`](Self::key), appended to `key` (the cache layer's
    /// [`key_writer`](daramjwee::http::CacheLayerBuilder::key_writer), so a hit's key costs
    /// no allocation).
    pub fn write_key(&self, route: &Route, parts: &Parts, key: &mut String) {
        if self.public_host.is_some() || !self.preserve_host {
            route.write_upstream_url(parts.uri.path_and_query(), key);
        } else {
            // The client's host is sent upstream, so it is keyed: the client-facing URL, with
            // that host lower-cased.
            let host = client_authority(&parts.uri, &parts.headers).unwrap_or("");
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            key.reserve(7 + host.len() + pq.len());
            key.push_str("http://");
            let at = key.len();
            key.push_str(host);
            key[at..].make_ascii_lowercase();
            key.push_str(pq);
        }
        if self.forward_target_headers {
            // Sorted by name, values in the order sent: two clients sending the same fields in
            // another order share one entry.
            let mut fields: Vec<(&HeaderName, &HeaderValue)> = parts
                .headers
                .iter()
                .filter(|(n, _)| is_target_field(n))
                .collect();
            fields.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            for (name, value) in fields {
                key.push(' ');
                key.push_str(name.as_str());
                key.push('=');
                key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
        }
    }

    /// Sets the fields the proxy decides on the request sent upstream: `Host`
    /// (`upstream_authority` unless the host is preserved), `X-Forwarded-For` (the client's
    /// address), `X-Forwarded-Proto` (whether the client spoke TLS to this listener) and
    /// `X-Forwarded-Host`.
    pub fn set_upstream_headers(
        &self,
        headers: &mut HeaderMap,
        client_host: Option<HeaderValue>,
        upstream_authority: &HeaderValue,
        (client, tls): (Option<SocketAddr>, bool),
    ) {
        let forwarded_host = match &self.public_host {
            Some(public) => Some(public.clone()),
            None if self.preserve_host => client_host.map(|h| lowercase(&h)),
            None => None,
        };
        let host = match (&forwarded_host, self.preserve_host) {
            (Some(h), true) => h.clone(),
            _ => upstream_authority.clone(),
        };
        headers.insert(header::HOST, host);
        if let Some(addr) = client {
            self.set_forwarded_for(headers, addr);
        }
        // A front the site trusts (`forward_target_headers`) may have said `https`; otherwise
        // the client's own claim was removed and the scheme is this listener's.
        if !headers.contains_key(X_FORWARDED_PROTO) {
            let proto = if tls { "https" } else { "http" };
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        match forwarded_host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h);
            }
            // Sent only when the site trusts its front to have set it (then it is keyed).
            None if self.forward_target_headers => {}
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }

    /// `X-Forwarded-For`: the client's address, after the chain a trusted front sent (kept
    /// only with `forward_target_headers`; `sanitize` removed it otherwise).
    fn set_forwarded_for(&self, headers: &mut HeaderMap, addr: SocketAddr) {
        let ip = addr.ip().to_string();
        let chain: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let value = if chain.is_empty() {
            ip
        } else {
            format!("{}, {ip}", chain.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
}

/// The authority the client addressed: the request target's, when it has one (absolute-form
/// HTTP/1.1, or HTTP/2's `:authority`; RFC 9112 §3.2.2 says it overrides `Host`), else `Host`.
/// Routing, keying and forwarding all read the host through here, so they cannot disagree.
pub fn client_authority<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST)?.to_str().ok())
}

/// The value of [`client_authority`] as a header value.
pub fn client_host_value(parts: &Parts) -> Option<HeaderValue> {
    client_authority(&parts.uri, &parts.headers).and_then(|h| HeaderValue::from_str(h).ok())
}

/// `Forwarded` and any `X-Forwarded-*` field.
fn is_forwarding_field(name: &HeaderName) -> bool {
    name == header::FORWARDED || name.as_str().starts_with("x-forwarded-")
}

/// A field that is keyed when the site forwards target-rewriting fields.
fn is_target_field(name: &HeaderName) -> bool {
    is_forwarding_field(name) || is_target_rewriting(name)
}

fn lowercase(v: &HeaderValue) -> HeaderValue {
    if v.as_bytes().iter().any(u8::is_ascii_uppercase) {
        HeaderValue::from_bytes(&v.as_bytes().to_ascii_lowercase()).unwrap_or_else(|_| v.clone())
    } else {
        v.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Settings};
    use clap::Parser;

    fn site(args: &[&str]) -> (Forwarding, Route) {
        let mut v = vec!["daramjwee", "--upstream", "http://10.0.0.1:3000"];
        v.extend_from_slice(args);
        let s = Settings::load(&Cli::parse_from(v)).unwrap();
        (Forwarding::new(&s.sites[0]), Route::new(&s.sites[0]))
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get("/p?q=1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn target_and_forwarding_fields_are_dropped_and_the_key_is_the_upstream_url() {
        let (f, route) = site(&[]);
        let mut p = parts(&[
            ("host", "evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-anything", "1"),
            ("forwarded", "host=evil.example"),
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("proxy-authorization", "Basic eA=="),
            ("accept", "*/*"),
        ]);
        f.sanitize(&mut p.headers);
        let left: Vec<&str> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "accept"]);
        assert_eq!(f.key(&route, &p), "http://10.0.0.1:3000/p?q=1");
    }

    #[test]
    fn a_request_without_such_fields_is_left_as_it_is() {
        let (f, _) = site(&["--drop-header", "x-secret"]);
        let fields = [("host", "a.example"), ("accept", "*/*"), ("x-other", "1")];
        let mut p = parts(&fields);
        f.sanitize(&mut p.headers);
        assert_eq!(p.headers, parts(&fields).headers);
        // Each kind of field alone is still found and removed.
        for name in [
            "connection",
            "x-secret",
            "x-original-url",
            "x-forwarded-anything",
        ] {
            let mut p = parts(&[("accept", "*/*"), (name, "1")]);
            f.sanitize(&mut p.headers);
            assert!(!p.headers.contains_key(name), "{name} was kept");
            assert!(p.headers.contains_key("accept"));
        }
    }

    #[test]
    fn a_preserved_host_is_keyed_and_a_pinned_one_replaces_the_clients() {
        let (f, route) = site(&["--preserve-host", "true"]);
        let p = parts(&[("host", "Evil.Example")]);
        assert_eq!(f.key(&route, &p), "http://evil.example/p?q=1");
        let mut h = HeaderMap::new();
        let up = HeaderValue::from_static("10.0.0.1:3000");
        f.set_upstream_headers(&mut h, client_host_value(&p), &up, (None, false));
        assert_eq!(
            (&h["host"], &h["x-forwarded-host"]),
            (
                &"evil.example".parse::<HeaderValue>().unwrap(),
                &"evil.example".parse::<HeaderValue>().unwrap()
            )
        );

        let (f, route) = site(&["--preserve-host", "true", "--public-host", "www.example"]);
        assert_eq!(f.key(&route, &p), "http://10.0.0.1:3000/p?q=1");
        let mut h = HeaderMap::new();
        f.set_upstream_headers(&mut h, client_host_value(&p), &up, (None, false));
        assert_eq!(h["host"], "www.example");
        assert_eq!(h["x-forwarded-host"], "www.example");
    }

    #[test]
    fn forwarded_target_fields_are_keyed() {
        let (f, route) = site(&["--forward-target-headers", "true"]);
        let mut p = parts(&[("x-forwarded-prefix", "/a"), ("x-rewrite-url", "/b")]);
        f.sanitize(&mut p.headers);
        assert_eq!(
            f.key(&route, &p),
            "http://10.0.0.1:3000/p?q=1 x-forwarded-prefix=/a x-rewrite-url=/b"
        );
    }
}
