//! [`Route`]: where a site's requests go upstream, and the URL each is sent to (also the
//! cache key when the client's `Host` is not kept).

use http::uri::PathAndQuery;
use http::HeaderValue;

use crate::config::SiteSettings;

/// Where a site's requests go and how they are rewritten.
#[derive(Debug)]
pub struct Route {
    /// `http://authority`, without a path.
    origin: String,
    /// Upstream authority, also the default `Host`.
    authority: HeaderValue,
    /// Path prepended to the request path (no trailing `/`).
    base_path: String,
    /// Prefix removed from the request path first, if the site strips it.
    strip: Option<String>,
}

impl Route {
    /// The rewrite rules of a site.
    pub fn new(site: &SiteSettings) -> Route {
        let up = &site.upstream;
        Route {
            origin: format!("{}://{}", up.scheme, up.authority),
            authority: HeaderValue::from_str(up.authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            base_path: up.base_path.clone(),
            strip: (site.strip_prefix && site.prefix != "/").then(|| site.prefix.clone()),
        }
    }

    /// `http://authority` (or `https://`), without a path.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The upstream's authority, also the `Host` sent when the client's is not kept.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// The full upstream URL of a request: also the cache key when the `Host` is not kept.
    /// The origin, the base path, and the request's path and query less the stripped prefix,
    /// in one allocation (the URL of every request sent upstream).
    pub fn upstream_url(&self, pq: Option<&PathAndQuery>) -> String {
        let mut out = String::new();
        self.write_upstream_url(pq, &mut out);
        out
    }

    /// [`upstream_url`](Self::upstream_url), appended to `out`.
    pub fn write_upstream_url(&self, pq: Option<&PathAndQuery>, out: &mut String) {
        let pq = pq.map_or("/", PathAndQuery::as_str);
        let rest = match &self.strip {
            // The router only sends paths under the prefix, at a `/` boundary.
            Some(p) => pq.strip_prefix(p.as_str()).unwrap_or(pq),
            None => pq,
        };
        out.reserve(self.origin.len() + self.base_path.len() + rest.len() + 1);
        out.push_str(&self.origin);
        out.push_str(&self.base_path);
        if !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Settings};
    use clap::Parser;

    fn route(args: &[&str]) -> Route {
        let mut v = vec!["daramjwee"];
        v.extend_from_slice(args);
        let s = Settings::load(&Cli::parse_from(v)).unwrap();
        Route::new(&s.sites[0])
    }

    #[test]
    fn upstream_url_joins_base_path_and_request_path() {
        let r = route(&["--upstream", "http://h:1"]);
        assert_eq!(r.upstream_url(None), "http://h:1/");
        assert_eq!(
            r.upstream_url(Some(&PathAndQuery::from_static("/x?y"))),
            "http://h:1/x?y"
        );
    }
}
