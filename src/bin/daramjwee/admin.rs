//! The admin listener: `/healthz`, `/stats`, `/metrics` and `POST /purge`.
//!
//! It runs on its own address (loopback by default) so operators can reach it while the proxy
//! port is public. It reads cache counters and deletes keys; it must never proxy a request or
//! expose anything but counters and the keys it is given.
//!
//! `/metrics` renders the engine's metrics (the crate's `metrics` feature, recorded by
//! `metrics-exporter-prometheus`, labelled `cache="SITE"`), followed by a snapshot of
//! [`Cache::stats`](daramjwee::Cache::stats) per site under `daramjwee_stats_*`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::server::{Router, Site};

/// What the admin endpoints see.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The proxy's router (its sites and their caches).
    pub router: Router,
    /// Set once shutdown began: `/healthz` then answers 503 so balancers stop sending.
    pub draining: Arc<AtomicBool>,
    /// The installed Prometheus recorder, if installing it succeeded.
    pub prometheus: Option<PrometheusHandle>,
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn handle<B>(state: &AdminState, req: Request<B>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => {
            if state.draining.load(Ordering::Acquire) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ok\n")
            }
        }
        (&Method::GET, "/stats") => json_response(StatusCode::OK, &stats_json(&state.router)),
        (&Method::GET, "/metrics") => {
            // Stats first: taking them also samples the engine's stored-bytes gauges.
            let stats = metrics_text(&state.router);
            let mut body = String::new();
            if let Some(h) = &state.prometheus {
                h.run_upkeep();
                body = h.render();
            }
            body.push_str(&stats);
            let mut res = text(StatusCode::OK, body);
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            res
        }
        (&Method::POST, "/purge") => purge(state, req.uri().query().unwrap_or("")).await,
        (_, "/healthz" | "/stats" | "/metrics" | "/purge") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "endpoints: GET /healthz, GET /stats, GET /metrics, POST /purge?key=K[&site=S], ?prefix=P[&site=S] or ?path=P[&host=H]\n",
        ),
    }
}

/// `POST /purge?key=K[&site=S]` deletes key `K` from site `S` (or from every site);
/// `POST /purge?prefix=P[&site=S]` deletes every key starting with `P`: a prefix that starts
/// with `/` is a path prefix, as operators write it, turned into each site's key prefix (with
/// `&host=H` for sites routed by host); any other prefix is matched against whole keys;
/// `POST /purge?path=P[&host=H]` deletes the key of a GET for `P` (with `Host: H`) from the
/// site that request would be routed to.
async fn purge(state: &AdminState, query: &str) -> Response<Full<Bytes>> {
    let params = match parse_query(query) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(prefix) = get("prefix") {
        let sites = match pick_sites(state, get("site")) {
            Ok(s) => s,
            Err(refused) => return refused.response(),
        };
        return purge_prefix(sites, prefix, get("host")).await;
    }
    let targets = match purge_targets(state, get("key"), get("path"), get("site"), get("host")) {
        Ok(t) => t,
        Err(refused) => return refused.response(),
    };
    let mut purged = Vec::new();
    for (site, key) in targets {
        if let Err(e) = site.purger.key(&key).await {
            tracing::warn!(site = %site.settings.name, error = %e, "purge failed");
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "error": e.to_string(), "site": site.settings.name, "key": key }),
            );
        }
        tracing::info!(site = %site.settings.name, %key, shared = site.purger.is_shared(), "purged");
        purged.push(
            json!({ "site": site.settings.name, "key": key, "shared": site.purger.is_shared() }),
        );
    }
    json_response(StatusCode::OK, &json!({ "purged": purged }))
}

type SiteRef = Arc<crate::server::Site>;

/// A purge request the admin refuses: its status and a one-line reason.
struct Refused(StatusCode, String);

impl Refused {
    fn response(self) -> Response<Full<Bytes>> {
        text(self.0, self.1)
    }
}

/// The site named `name`, or every site.
fn pick_sites(state: &AdminState, name: Option<&str>) -> Result<Vec<SiteRef>, Refused> {
    let sites = state.router.sites();
    match name {
        Some(name) => sites
            .iter()
            .find(|s| s.settings.name == name)
            .map(|s| vec![s.clone()])
            .ok_or_else(|| Refused(StatusCode::NOT_FOUND, format!("no site named `{name}`\n"))),
        None => Ok(sites.to_vec()),
    }
}

/// The (site, key) pairs a `key=` or `path=` purge names.
fn purge_targets(
    state: &AdminState,
    key: Option<&str>,
    path: Option<&str>,
    site: Option<&str>,
    host: Option<&str>,
) -> Result<Vec<(SiteRef, String)>, Refused> {
    if let Some(key) = key {
        let sites = pick_sites(state, site)?;
        return Ok(sites.into_iter().map(|s| (s, key.to_string())).collect());
    }
    let Some(path) = path else {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "purge needs ?key=KEY[&site=NAME], ?prefix=KEY_OR_PATH_PREFIX[&site=NAME][&host=HOST] or ?path=/PATH[&host=HOST] (percent-encoded)\n".into(),
        ));
    };
    let mut parts = request_parts(path, host)?;
    match state.router.pick(&parts) {
        Some(site) => {
            let key = site.key_for(&mut parts);
            Ok(vec![(site.clone(), key)])
        }
        None => Err(Refused(
            StatusCode::NOT_FOUND,
            "no site takes this host and path\n".into(),
        )),
    }
}

/// The head of a GET for `path` (with `Host: host`).
fn request_parts(path: &str, host: Option<&str>) -> Result<http::request::Parts, Refused> {
    let mut b = Request::get(path);
    if let Some(h) = host {
        b = b.header(header::HOST, h);
    }
    match b.body(()) {
        Ok(req) => Ok(req.into_parts().0),
        Err(_) => Err(Refused(
            StatusCode::BAD_REQUEST,
            format!("`{path}` is not a request path\n"),
        )),
    }
}

/// Purges by prefix from each of `sites`; a path prefix becomes the site's key prefix.
async fn purge_prefix(
    sites: Vec<SiteRef>,
    prefix: &str,
    host: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut purged = Vec::new();
    for site in sites {
        let key_prefix = if prefix.starts_with('/') {
            let Ok(mut parts) = request_parts(prefix, host) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("`{prefix}` is not a path\n"),
                );
            };
            site.key_for(&mut parts)
        } else {
            prefix.to_owned()
        };
        match site.purger.prefix(&key_prefix).await {
            Ok(n) => {
                let shared = site.purger.is_shared();
                tracing::info!(site = %site.settings.name, prefix = %key_prefix, removed = ?n, shared, "purged by prefix");
                // A shared purge is applied by every instance on its own: no count (null) here.
                purged.push(
                    json!({ "site": site.settings.name, "prefix": key_prefix, "removed": n, "shared": shared }),
                );
            }
            Err(e) => {
                tracing::warn!(site = %site.settings.name, error = %e, "purge by prefix failed");
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({ "error": e.to_string(), "site": site.settings.name, "prefix": key_prefix }),
                );
            }
        }
    }
    json_response(StatusCode::OK, &json!({ "purged": purged }))
}

fn stats_json(router: &Router) -> Value {
    let mut sites = serde_json::Map::new();
    for site in router.sites().iter() {
        let s = site.cache.stats();
        let tiers: Vec<Value> = s
            .hits
            .iter()
            .enumerate()
            .map(|(i, hits)| {
                let fills = s.fills_by_tier.get(i).copied().unwrap_or(0);
                json!({ "store": site.cache.tier_name(i), "hits": hits, "fills": fills })
            })
            .collect();
        sites.insert(
            site.settings.name.clone(),
            json!({
                "upstream": site.settings.upstream.to_string(),
                "tiers": tiers,
                "hits": s.hits.iter().sum::<u64>(),
                "stale_hits": s.stale_hits,
                "misses": s.misses,
                "coalesced": s.coalesced,
                "revalidated": s.revalidated,
                "fills_committed": s.fills_committed,
                "too_large": s.too_large,
                "fills_failed": s.fills_failed,
                "promotions": s.promotions,
                "refreshes": s.refreshes,
                "store_errors": s.store_errors,
                "dropped_tasks": s.dropped_tasks,
            }),
        );
    }
    json!({ "sites": sites })
}

/// `/metrics`: the engine's counters of every site, in the Prometheus text format.
fn metrics_text(router: &Router) -> String {
    let mut out = String::new();
    let sites = router.sites();
    let stats: Vec<_> = sites.iter().map(|s| (s, s.cache.stats())).collect();
    per_tier_counters(&mut out, &stats);
    site_counters(&mut out, &stats);
    out
}

type SiteStats<'a> = [(&'a Arc<Site>, daramjwee::CacheStats)];

/// Counters with a value per tier: hits and committed fills.
fn per_tier_counters(out: &mut String, stats: &SiteStats<'_>) {
    type PerTier = fn(&daramjwee::CacheStats) -> &[u64];
    let per_tier: [(&str, &str, PerTier); 2] = [
        ("hits", "Lookups answered from a tier.", |s| &s.hits),
        ("fills", "Entries committed to a tier.", |s| {
            &s.fills_by_tier
        }),
    ];
    for (name, help, get) in per_tier {
        let _ = writeln!(
            out,
            "# HELP daramjwee_stats_{name}_total {help}\n# TYPE daramjwee_stats_{name}_total counter"
        );
        for (site, s) in stats {
            for (i, n) in get(s).iter().enumerate() {
                let _ = writeln!(
                    out,
                    "daramjwee_stats_{name}_total{{site=\"{}\",tier=\"{i}\",store=\"{}\"}} {n}",
                    site.settings.name,
                    site.cache.tier_name(i)
                );
            }
        }
    }
}

/// Counters with a value per site.
fn site_counters(out: &mut String, stats: &SiteStats<'_>) {
    type Getter = fn(&daramjwee::CacheStats) -> u64;
    let counters: [(&str, &str, Getter); 11] = [
        (
            "stale_hits",
            "Stale entries served while refreshing.",
            |s| s.stale_hits,
        ),
        ("misses", "Origin fills led by lookups.", |s| s.misses),
        ("coalesced", "Lookups that followed another fill.", |s| {
            s.coalesced
        }),
        ("revalidated", "Origin answers of not-modified.", |s| {
            s.revalidated
        }),
        ("fills_committed", "Entries committed to a tier.", |s| {
            s.fills_committed
        }),
        (
            "fills_failed",
            "Fills that failed and stored nothing.",
            |s| s.fills_failed,
        ),
        ("promotions", "Promotions from lower tiers.", |s| {
            s.promotions
        }),
        ("refreshes", "Background refreshes started.", |s| {
            s.refreshes
        }),
        ("store_errors", "Store operations that failed.", |s| {
            s.store_errors
        }),
        (
            "too_large",
            "Fills stored nowhere: no tier keeps an object of their size.",
            |s| s.too_large,
        ),
        (
            "dropped_tasks",
            "Background tasks dropped on a full queue.",
            |s| s.dropped_tasks,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(
            out,
            "# HELP daramjwee_stats_{name}_total {help}\n# TYPE daramjwee_stats_{name}_total counter"
        );
        for (site, s) in stats {
            let _ = writeln!(
                out,
                "daramjwee_stats_{name}_total{{site=\"{}\"}} {}",
                site.settings.name,
                get(s)
            );
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut res = text(status, format!("{v}\n"));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// `a=b&c=d`, percent-decoded. `+` is kept as is: keys are URLs, where `+` is a literal.
fn parse_query(q: &str) -> Result<Vec<(String, String)>, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_percent_decoded_and_plus_is_literal() {
        let q = parse_query("key=http%3A%2F%2Fh%2Fa%3Fb%3D1&site=a+b").unwrap();
        assert_eq!(q[0], ("key".into(), "http://h/a?b=1".into()));
        assert_eq!(q[1], ("site".into(), "a+b".into()));
        assert!(parse_query("key=%zz").is_err());
    }
}
