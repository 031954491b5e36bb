//! Configuration: command-line flags and a TOML file, merged and validated into [`Settings`].
//!
//! Everything the proxy runs with is checked here, before a socket is bound or a directory is
//! created, so a bad value is reported once, with the flag or key that carried it, and the
//! process exits with code 2. Nothing in this module touches the network or the disk beyond
//! reading the config file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use daramjwee::eviction::PolicyKind;
use daramjwee::http::PolicyMode;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::Uri;
use serde::Deserialize;

use crate::access_log::{AccessLogSettings, Destination, Format};
use crate::header_rules::{HeaderRules, RuleFile};

/// A caching reverse proxy built on the daramjwee tower layer.
///
/// Flags override the file's `[defaults]` (and its top-level keys); every `[[site]]` inherits
/// the defaults it does not set. With no `[[site]]` in the file, one site named `default`
/// serves every request.
#[derive(Parser, Debug, Default)]
#[command(name = "daramjwee", version, about, long_about = None)]
pub struct Cli {
    /// A TOML configuration file (see docs/proxy.md).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the proxy listener (HTTP/1.1 and h2c) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address of the admin listener, or `off` [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR|off")]
    pub admin: Option<String>,
    /// Directory under which default disk tiers live [default: ./daramjwee-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The origin every request is sent to, e.g. `http://127.0.0.1:3000`.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Hot tier: `memory:SIZE` or `file:DIR:SIZE` [default: memory:256MiB].
    #[arg(long, value_name = "SPEC")]
    pub hot: Option<String>,
    /// Cold tier: `file:DIR:SIZE` or `none` [default: file:DATA_DIR/SITE/cold:1GiB].
    #[arg(long, value_name = "SPEC")]
    pub cold: Option<String>,
    /// Eviction policy of the local tiers: `lru`, `s3fifo`, `sieve` or `tinylfu`
    /// [default: s3fifo].
    #[arg(long, value_name = "POLICY")]
    pub eviction: Option<String>,
    /// Caching rules: `shared` (RFC 9111 shared cache) or `origin-trusting` [default: shared].
    #[arg(long, value_name = "MODE")]
    pub policy: Option<String>,
    /// Freshness of stored responses under `origin-trusting` [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Freshness of stored 404/410 responses under `origin-trusting` [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub negative_ttl: Option<String>,
    /// Background refreshes and cold copies running at once, shared by all sites [default: 4].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Background tasks waiting, per site; more are dropped and counted [default: 1024].
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,
    /// Longest wait for a TCP connection to the upstream [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Longest wait for the upstream's response head [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
    /// Longest pause in an upstream body while filling the cache [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// On SIGINT/SIGTERM, how long in-flight responses may take to finish [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// After draining, how long background cache work may take to finish [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub close_timeout: Option<String>,
    /// Give every request an `x-request-id` (kept if the client sent one), forwarded upstream
    /// and returned on the response [default: true]. Off skips two tower-http layers and 6
    /// allocations per request (docs/bench-proxy.md).
    #[arg(long, value_name = "BOOL")]
    pub request_ids: Option<bool>,
    /// Send the client's host upstream as `Host` (it is then part of the cache key)
    /// [default: false].
    #[arg(long, value_name = "BOOL")]
    pub preserve_host: Option<bool>,
    /// The public host name the upstream is told in `X-Forwarded-Host` (and `Host` with
    /// `--preserve-host`), whatever host the client sent.
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,
    /// Forward the client's `Forwarded`, `X-Forwarded-*` and other target-rewriting headers,
    /// keyed, instead of dropping them (only behind a front that sets them) [default: false].
    #[arg(long, value_name = "BOOL")]
    pub forward_target_headers: Option<bool>,
    /// Honour `CDN-Cache-Control` (RFC 9213) over `Cache-Control` [default: true].
    #[arg(long, value_name = "BOOL")]
    pub cdn_cache_control: Option<bool>,
    /// A site-specific targeted field (e.g. `Daramjwee-Cache-Control`), honoured before
    /// `CDN-Cache-Control` and `Cache-Control`.
    #[arg(long, value_name = "NAME")]
    pub targeted_field: Option<String>,
    /// Remove the targeted fields from responses sent to clients [default: false].
    #[arg(long, value_name = "BOOL")]
    pub strip_targeted: Option<bool>,
    /// PEM file of the CA certificates an https upstream's certificate must chain to, instead of
    /// the platform's trust store.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// A request header never sent upstream (repeatable).
    #[arg(long = "drop-header", value_name = "NAME")]
    pub drop_headers: Vec<String>,
    /// Certificate chain (PEM) of the proxy listener: with `--tls-key`, it speaks HTTPS
    /// (ALPN h2 and http/1.1) instead of plain HTTP and h2c.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the proxy listener's certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Access log: `stdout`, a file to append to, or `off` [default: off].
    #[arg(long, value_name = "stdout|FILE|off")]
    pub access_log: Option<String>,
    /// Access log format: `combined` or `json` (JSON Lines) [default: combined].
    #[arg(long, value_name = "FORMAT")]
    pub access_log_format: Option<String>,
    /// Validate the configuration (FILE, or the one `--config` and the flags give), print it,
    /// and exit: 0 when valid, 2 otherwise. Nothing is started.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub check: Option<Option<PathBuf>>,
}

/// The TOML file, as written.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    admin: Option<String>,
    data_dir: Option<PathBuf>,
    drain_timeout: Option<String>,
    close_timeout: Option<String>,
    workers: Option<usize>,
    request_ids: Option<bool>,
    access_log: Option<String>,
    access_log_format: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    defaults: SiteOpts,
    #[serde(default)]
    site: Vec<SiteFile>,
}

/// Per-site settings that `[defaults]` and the flags provide for every site.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct SiteOpts {
    upstream: Option<String>,
    hot: Option<String>,
    cold: Option<String>,
    eviction: Option<String>,
    policy: Option<String>,
    ttl: Option<String>,
    negative_ttl: Option<String>,
    /// Refused with a pointer to the top-level `workers` and per-site `weight`.
    workers: Option<toml::Value>,
    weight: Option<i64>,
    queue: Option<usize>,
    connect_timeout: Option<String>,
    upstream_timeout: Option<String>,
    idle_timeout: Option<String>,
    lock_age: Option<String>,
    lock_wait: Option<String>,
    stream_window: Option<String>,
    follower_retain: Option<String>,
    preserve_host: Option<bool>,
    strip_prefix: Option<bool>,
    public_host: Option<String>,
    forward_target_headers: Option<bool>,
    cdn_cache_control: Option<bool>,
    targeted_field: Option<String>,
    strip_targeted: Option<bool>,
    drop_headers: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    request_headers: Option<Vec<RuleFile>>,
    response_headers: Option<Vec<RuleFile>>,
}

/// One `[[site]]` table. The option fields repeat [`SiteOpts`] because `deny_unknown_fields`
/// (which turns a typo into an error) cannot be combined with `#[serde(flatten)]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    name: Option<String>,
    host: Option<String>,
    prefix: Option<String>,
    upstream: Option<String>,
    hot: Option<String>,
    cold: Option<String>,
    eviction: Option<String>,
    policy: Option<String>,
    ttl: Option<String>,
    negative_ttl: Option<String>,
    /// Refused with a pointer to the top-level `workers` and per-site `weight`.
    workers: Option<toml::Value>,
    weight: Option<i64>,
    queue: Option<usize>,
    connect_timeout: Option<String>,
    upstream_timeout: Option<String>,
    idle_timeout: Option<String>,
    lock_age: Option<String>,
    lock_wait: Option<String>,
    stream_window: Option<String>,
    follower_retain: Option<String>,
    preserve_host: Option<bool>,
    strip_prefix: Option<bool>,
    public_host: Option<String>,
    forward_target_headers: Option<bool>,
    cdn_cache_control: Option<bool>,
    targeted_field: Option<String>,
    strip_targeted: Option<bool>,
    drop_headers: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    request_headers: Option<Vec<RuleFile>>,
    response_headers: Option<Vec<RuleFile>>,
}

impl SiteFile {
    /// The site's own options, each falling back to `defaults`.
    fn opts_over(&self, d: &SiteOpts) -> SiteOpts {
        fn or<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        SiteOpts {
            upstream: or(&self.upstream, &d.upstream),
            hot: or(&self.hot, &d.hot),
            cold: or(&self.cold, &d.cold),
            eviction: or(&self.eviction, &d.eviction),
            policy: or(&self.policy, &d.policy),
            ttl: or(&self.ttl, &d.ttl),
            negative_ttl: or(&self.negative_ttl, &d.negative_ttl),
            workers: or(&self.workers, &d.workers),
            weight: or(&self.weight, &d.weight),
            queue: or(&self.queue, &d.queue),
            connect_timeout: or(&self.connect_timeout, &d.connect_timeout),
            upstream_timeout: or(&self.upstream_timeout, &d.upstream_timeout),
            idle_timeout: or(&self.idle_timeout, &d.idle_timeout),
            lock_age: or(&self.lock_age, &d.lock_age),
            lock_wait: or(&self.lock_wait, &d.lock_wait),
            stream_window: or(&self.stream_window, &d.stream_window),
            follower_retain: or(&self.follower_retain, &d.follower_retain),
            preserve_host: or(&self.preserve_host, &d.preserve_host),
            strip_prefix: or(&self.strip_prefix, &d.strip_prefix),
            public_host: or(&self.public_host, &d.public_host),
            forward_target_headers: or(&self.forward_target_headers, &d.forward_target_headers),
            cdn_cache_control: or(&self.cdn_cache_control, &d.cdn_cache_control),
            targeted_field: or(&self.targeted_field, &d.targeted_field),
            strip_targeted: or(&self.strip_targeted, &d.strip_targeted),
            drop_headers: or(&self.drop_headers, &d.drop_headers),
            ca_file: or(&self.ca_file, &d.ca_file),
            request_headers: or(&self.request_headers, &d.request_headers),
            response_headers: or(&self.response_headers, &d.response_headers),
        }
    }
}

/// A configuration error: what was wrong, and where it was written.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener, if on.
    pub admin: Option<SocketAddr>,
    /// Bound on waiting for in-flight responses at shutdown.
    pub drain_timeout: Duration,
    /// Bound on waiting for background cache work at shutdown.
    pub close_timeout: Duration,
    /// Background tasks running at once, shared by all sites.
    pub workers: usize,
    /// Whether requests get an `x-request-id`.
    pub request_ids: bool,
    /// The access log, if on.
    pub access_log: Option<AccessLogSettings>,
    /// The listener's certificate chain and key files, when it speaks TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Sites, in the order written.
    pub sites: Vec<SiteSettings>,
}

/// One site: which requests it takes, where it sends them, and its cache.
#[derive(Debug, Clone)]
pub struct SiteSettings {
    /// Unique name: used in logs, stats, metric labels and default directory names.
    pub name: String,
    /// Only requests for this host (compared without port, case-insensitively), if set.
    pub host: Option<String>,
    /// Only requests whose path starts with this prefix (at a `/` boundary).
    pub prefix: String,
    /// Whether the prefix is removed before the path is appended to the upstream's.
    pub strip_prefix: bool,
    /// Where requests go.
    pub upstream: UpstreamUrl,
    /// Whether the client's `Host` is sent upstream (otherwise the upstream's authority is).
    pub preserve_host: bool,
    /// The public host name sent upstream instead of the client's, if pinned (lower-case).
    pub public_host: Option<HeaderValue>,
    /// Whether the client's target-rewriting fields are forwarded (and keyed).
    pub forward_target_headers: bool,
    /// Targeted cache-control fields (RFC 9213), most specific first.
    pub targeted: Vec<HeaderName>,
    /// Whether the targeted fields are removed from what clients receive.
    pub strip_targeted: bool,
    /// Request fields never sent upstream.
    pub drop_headers: Vec<HeaderName>,
    /// CA certificates (PEM) an https upstream must chain to; the platform's when unset.
    pub ca_file: Option<PathBuf>,
    /// Rules for the request sent upstream (after the key is computed).
    pub request_rules: HeaderRules,
    /// Rules for every response sent to clients (not what is stored).
    pub response_rules: HeaderRules,
    /// The first tier.
    pub hot: TierSpec,
    /// The second tier, if any.
    pub cold: Option<TierSpec>,
    /// Eviction policy of both tiers.
    pub eviction: PolicyKind,
    /// Caching rules.
    pub mode: PolicyMode,
    /// The site's share of the shared background runtime when several sites wait for it.
    pub weight: u32,
    /// Background tasks of this site waiting beyond the runtime's slots; more are dropped.
    pub queue: usize,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream response-head timeout.
    pub upstream_timeout: Duration,
    /// Longest pause in an upstream body during a fill.
    pub idle_timeout: Duration,
    /// Coalescing: age after which a fill is no longer joined (engine default if unset).
    pub lock_age: Option<Duration>,
    /// Coalescing: how long a follower waits for the fill's head (engine default if unset).
    pub lock_wait: Option<Duration>,
    /// Bytes a fill may run ahead of its slowest reader (engine default if unset).
    pub stream_window: Option<u64>,
    /// Bytes of a fill kept so late followers can join it (engine default if unset).
    pub follower_retain: Option<u64>,
}

/// An upstream origin: `http[s]://authority[/base-path]`.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// Path prepended to every request path, without a trailing `/` (may be empty).
    pub base_path: String,
}

impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// A local tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierSpec {
    /// In memory, bounded in bytes.
    Memory(u64),
    /// A directory on disk, bounded in bytes.
    File(PathBuf, u64),
    /// An object store URL (`s3://bucket/prefix`, `file:///dir`, ...): cold tier only, and only
    /// in builds with the `object-store` feature.
    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    Object(String),
}

impl std::fmt::Display for TierSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TierSpec::Memory(n) => write!(f, "memory:{}", fmt_size(*n)),
            TierSpec::File(p, n) => write!(f, "file:{}:{}", p.display(), fmt_size(*n)),
            TierSpec::Object(url) => f.write_str(url),
        }
    }
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
const DEFAULT_DATA_DIR: &str = "./daramjwee-data";
const DEFAULT_HOT: &str = "memory:256MiB";
const DEFAULT_COLD_BYTES: u64 = 1 << 30;
/// Largest `weight`: beyond a thousand to one a share is indistinguishable from none.
const MAX_WEIGHT: u32 = 1000;
const PER_SITE_WORKERS: &str = "workers: background slots are shared by all sites now; set \
     `workers = N` at the top level of the file (or --workers) and give this site a `weight` \
     (its share when sites compete) and a `queue`";

impl Settings {
    /// Reads the file named by `--config` (if any), merges the flags over it and validates.
    pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Settings::merge(cli, file)
    }

    fn merge(cli: &Cli, file: FileConfig) -> Result<Settings, ConfigError> {
        let listen = cli
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = parse_addr(&listen).map_err(|e| ConfigError(format!("listen: {e}")))?;
        let admin = cli
            .admin
            .clone()
            .or(file.admin)
            .unwrap_or_else(|| DEFAULT_ADMIN.into());
        let admin = match admin.as_str() {
            "off" | "none" | "" => None,
            a => Some(parse_addr(a).map_err(|e| ConfigError(format!("admin: {e}")))?),
        };
        if admin.is_some() && admin == Some(listen) && listen.port() != 0 {
            return err(format!(
                "admin: {listen} is also the proxy listener; give the admin listener its own port or `off`"
            ));
        }
        let drain_timeout = dur_or(
            "drain_timeout",
            cli.drain_timeout.as_ref().or(file.drain_timeout.as_ref()),
            Duration::from_secs(30),
        )?;
        let close_timeout = dur_or(
            "close_timeout",
            cli.close_timeout.as_ref().or(file.close_timeout.as_ref()),
            Duration::from_secs(5),
        )?;
        let access_log = parse_access_log(
            cli.access_log.as_deref().or(file.access_log.as_deref()),
            cli.access_log_format
                .as_deref()
                .or(file.access_log_format.as_deref()),
        )?;
        let tls = match (
            cli.tls_cert.clone().or(file.tls_cert),
            cli.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return err("tls_cert and tls_key go together: set both, or neither"),
        };
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        // Flags override [defaults], which every site falls back to.
        let flags = SiteFile {
            upstream: cli.upstream.clone(),
            hot: cli.hot.clone(),
            cold: cli.cold.clone(),
            eviction: cli.eviction.clone(),
            policy: cli.policy.clone(),
            ttl: cli.ttl.clone(),
            negative_ttl: cli.negative_ttl.clone(),
            queue: cli.queue,
            connect_timeout: cli.connect_timeout.clone(),
            upstream_timeout: cli.upstream_timeout.clone(),
            idle_timeout: cli.idle_timeout.clone(),
            preserve_host: cli.preserve_host,
            public_host: cli.public_host.clone(),
            forward_target_headers: cli.forward_target_headers,
            cdn_cache_control: cli.cdn_cache_control,
            targeted_field: cli.targeted_field.clone(),
            strip_targeted: cli.strip_targeted,
            drop_headers: (!cli.drop_headers.is_empty()).then(|| cli.drop_headers.clone()),
            ca_file: cli.ca_file.clone(),
            ..Default::default()
        };
        if file.defaults.workers.is_some() {
            return err(format!("[defaults] {PER_SITE_WORKERS}"));
        }
        let defaults = flags.opts_over(&file.defaults);
        let workers = cli.workers.or(file.workers).unwrap_or(4);
        if workers == 0 || workers > 1024 {
            return err(format!("workers: {workers} is not in 1..=1024"));
        }

        let site_files = if file.site.is_empty() {
            vec![SiteFile {
                name: Some("default".into()),
                ..Default::default()
            }]
        } else {
            file.site
        };
        let mut sites = Vec::with_capacity(site_files.len());
        for (i, sf) in site_files.iter().enumerate() {
            let name = match &sf.name {
                Some(n) => n.clone(),
                None => return err(format!("site #{}: `name` is required", i + 1)),
            };
            let site = validate_site(&name, sf, &sf.opts_over(&defaults), &data_dir)
                .map_err(|e| ConfigError(format!("site `{name}`: {e}")))?;
            sites.push(site);
        }
        check_sites(&sites)?;
        Ok(Settings {
            listen,
            admin,
            drain_timeout,
            close_timeout,
            workers,
            request_ids: cli.request_ids.or(file.request_ids).unwrap_or(true),
            access_log,
            tls,
            sites,
        })
    }
}

/// `access_log` (`stdout`, a path, or `off`) and its format; a format without a log is refused,
/// since it would silently do nothing.
fn parse_access_log(
    dest: Option<&str>,
    format: Option<&str>,
) -> Result<Option<AccessLogSettings>, ConfigError> {
    let format = match format {
        None | Some("combined") => Format::Combined,
        Some("json") => Format::Json,
        Some(other) => {
            return err(format!(
                "access_log_format: `{other}` is not one of combined, json"
            ))
        }
    };
    let destination = match dest {
        None | Some("off" | "none" | "") => {
            if format != Format::Combined {
                return err("access_log_format is set but access_log is off");
            }
            return Ok(None);
        }
        Some("stdout" | "-") => Destination::Stdout,
        Some(path) => Destination::File(PathBuf::from(path)),
    };
    Ok(Some(AccessLogSettings {
        destination,
        format,
    }))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

fn validate_site(
    name: &str,
    sf: &SiteFile,
    o: &SiteOpts,
    data_dir: &Path,
) -> Result<SiteSettings, ConfigError> {
    check_name(name)?;
    let upstream = match &o.upstream {
        Some(u) => parse_upstream(u)?,
        None => {
            return err(
                "no upstream: pass --upstream URL, or set `upstream` in [defaults] or the site",
            )
        }
    };
    let (host, prefix) = parse_route(sf)?;
    let (hot, cold) = parse_tiers(name, o, data_dir)?;
    if o.workers.is_some() {
        return err(PER_SITE_WORKERS);
    }
    let weight = o.weight.unwrap_or(1);
    let weight = match u32::try_from(weight) {
        Ok(w @ 1..=MAX_WEIGHT) => w,
        _ => return err(format!("weight: {weight} is not in 1..={MAX_WEIGHT}")),
    };
    if o.ca_file.is_some() && upstream.scheme != Scheme::HTTPS {
        return err("ca_file applies only to an https:// upstream");
    }
    let rules = |what: &str, r: &Option<Vec<RuleFile>>| {
        HeaderRules::parse(r.as_deref().unwrap_or_default())
            .map_err(|e| ConfigError(format!("{what}: {e}")))
    };
    Ok(SiteSettings {
        name: name.to_string(),
        host,
        prefix,
        strip_prefix: o.strip_prefix.unwrap_or(false),
        upstream,
        preserve_host: o.preserve_host.unwrap_or(false),
        public_host: o
            .public_host
            .as_deref()
            .map(parse_public_host)
            .transpose()?,
        forward_target_headers: o.forward_target_headers.unwrap_or(false),
        targeted: targeted_fields(o)?,
        strip_targeted: o.strip_targeted.unwrap_or(false),
        drop_headers: parse_header_names("drop_headers", o.drop_headers.as_deref())?,
        ca_file: o.ca_file.clone(),
        request_rules: rules("request_headers", &o.request_headers)?,
        response_rules: rules("response_headers", &o.response_headers)?,
        hot,
        cold,
        eviction: parse_eviction(o.eviction.as_deref())?,
        mode: parse_policy(o)?,
        weight,
        queue: o.queue.unwrap_or(1024),
        connect_timeout: dur_or(
            "connect_timeout",
            o.connect_timeout.as_ref(),
            Duration::from_secs(5),
        )?,
        upstream_timeout: dur_or(
            "upstream_timeout",
            o.upstream_timeout.as_ref(),
            Duration::from_secs(30),
        )?,
        idle_timeout: dur_or(
            "idle_timeout",
            o.idle_timeout.as_ref(),
            Duration::from_secs(30),
        )?,
        lock_age: opt_dur("lock_age", o.lock_age.as_deref())?,
        lock_wait: opt_dur("lock_wait", o.lock_wait.as_deref())?,
        stream_window: opt_size("stream_window", o.stream_window.as_deref())?,
        follower_retain: opt_size("follower_retain", o.follower_retain.as_deref())?,
    })
}

/// Site names name directories and metric labels.
fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return err(
            "`name` must be letters, digits, `-` or `_` (it names directories and metric labels)",
        );
    }
    Ok(())
}

/// The site's `host` (lower-cased) and `prefix` (without a trailing `/`).
fn parse_route(sf: &SiteFile) -> Result<(Option<String>, String), ConfigError> {
    let prefix = sf.prefix.clone().unwrap_or_else(|| "/".into());
    if !prefix.starts_with('/') {
        return err(format!("prefix `{prefix}` must start with `/`"));
    }
    let prefix = if prefix.len() > 1 {
        prefix.trim_end_matches('/').to_string()
    } else {
        prefix
    };
    let host = match &sf.host {
        Some(h) if h.is_empty() || h.contains('/') => {
            return err(format!("host `{h}` must be a host name"))
        }
        Some(h) => Some(h.to_ascii_lowercase()),
        None => None,
    };
    Ok((host, prefix))
}

/// The hot tier (never an object store) and the cold one (persistent, or none).
fn parse_tiers(
    name: &str,
    o: &SiteOpts,
    data_dir: &Path,
) -> Result<(TierSpec, Option<TierSpec>), ConfigError> {
    let hot_spec = o.hot.as_deref().unwrap_or(DEFAULT_HOT);
    let hot = match parse_tier("hot", hot_spec)? {
        TierSpec::Object(_) => {
            return err(format!(
                "hot: `{hot_spec}`: an object store can only be the cold tier; use memory:SIZE or file:DIR:SIZE"
            ))
        }
        t => t,
    };
    let cold = match o.cold.as_deref() {
        None => Some(TierSpec::File(
            data_dir.join(name).join("cold"),
            DEFAULT_COLD_BYTES,
        )),
        Some("none" | "off") => None,
        Some(spec) => match parse_tier("cold", spec)? {
            TierSpec::Memory(_) => {
                return err(format!(
                    "cold: `{spec}`: a cold tier must be persistent (file:DIR:SIZE); use `hot` for memory"
                ))
            }
            t => Some(t),
        },
    };
    Ok((hot, cold))
}

fn parse_eviction(v: Option<&str>) -> Result<PolicyKind, ConfigError> {
    Ok(match v.unwrap_or("s3fifo") {
        "lru" => PolicyKind::Lru,
        "s3fifo" | "s3-fifo" => PolicyKind::S3Fifo,
        "sieve" => PolicyKind::Sieve,
        "tinylfu" | "w-tinylfu" => PolicyKind::TinyLfu,
        other => {
            return err(format!(
                "eviction: `{other}` is not one of lru, s3fifo, sieve, tinylfu"
            ))
        }
    })
}

/// `policy`, with `ttl` and `negative_ttl` only under `origin-trusting`.
fn parse_policy(o: &SiteOpts) -> Result<PolicyMode, ConfigError> {
    let ttl = opt_dur("ttl", o.ttl.as_deref())?;
    let negative_ttl = opt_dur("negative_ttl", o.negative_ttl.as_deref())?;
    match o.policy.as_deref().unwrap_or("shared") {
        "shared" => {
            if ttl.is_some() || negative_ttl.is_some() {
                return err("ttl and negative_ttl apply only to policy `origin-trusting`; under `shared` the origin's Cache-Control decides");
            }
            Ok(PolicyMode::Shared)
        }
        "origin-trusting" => Ok(PolicyMode::OriginTrusting {
            ttl: ttl.unwrap_or(Duration::from_secs(60)),
            negative_ttl: negative_ttl.unwrap_or(Duration::from_secs(5)),
        }),
        other => err(format!(
            "policy: `{other}` is not one of shared, origin-trusting"
        )),
    }
}

/// `host[:port]`, lower-cased: what the upstream is told the public host is.
fn parse_public_host(s: &str) -> Result<HeaderValue, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "public_host `{s}`: expected a host name, e.g. www.example.com"
        ))
    };
    let authority: Authority = s.parse().map_err(|_| bad())?;
    if s.is_empty() || s.contains('@') || authority.as_str() != s {
        return Err(bad());
    }
    HeaderValue::from_str(&s.to_ascii_lowercase()).map_err(|_| bad())
}

/// The site's targeted cache-control fields (RFC 9213), most specific first: its own field,
/// then `CDN-Cache-Control` unless turned off.
fn targeted_fields(o: &SiteOpts) -> Result<Vec<HeaderName>, ConfigError> {
    let mut names = Vec::new();
    if let Some(own) = &o.targeted_field {
        let name = HeaderName::from_bytes(own.trim().as_bytes())
            .map_err(|_| ConfigError(format!("targeted_field: `{own}` is not a header name")))?;
        if name == header::CACHE_CONTROL {
            return err("targeted_field: `cache-control` is not a targeted field");
        }
        names.push(name);
    }
    if o.cdn_cache_control.unwrap_or(true) {
        names.push(HeaderName::from_static("cdn-cache-control"));
    }
    Ok(names)
}

/// A list of request header names, lower-cased by `HeaderName`.
fn parse_header_names(what: &str, v: Option<&[String]>) -> Result<Vec<HeaderName>, ConfigError> {
    v.unwrap_or_default()
        .iter()
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| ConfigError(format!("{what}: `{n}` is not a header name")))
        })
        .collect()
}

fn opt_dur(what: &str, v: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    v.map(|s| parse_duration(s).map_err(|e| ConfigError(format!("{what}: {e}"))))
        .transpose()
}

fn opt_size(what: &str, v: Option<&str>) -> Result<Option<u64>, ConfigError> {
    v.map(|s| parse_size(s).map_err(|e| ConfigError(format!("{what}: {e}"))))
        .transpose()
}

/// Checks between sites: unique names, unique routes, no directory used twice.
fn check_sites(sites: &[SiteSettings]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut routes = HashSet::new();
    let mut dirs: Vec<(PathBuf, &str)> = Vec::new();
    for s in sites {
        if !names.insert(s.name.as_str()) {
            return err(format!("site `{}` is defined twice", s.name));
        }
        if !routes.insert((s.host.clone(), s.prefix.clone())) {
            return err(format!(
                "site `{}`: another site already takes host {} and prefix `{}`",
                s.name,
                s.host.as_deref().unwrap_or("(any)"),
                s.prefix
            ));
        }
        for t in [Some(&s.hot), s.cold.as_ref()].into_iter().flatten() {
            if let TierSpec::Object(url) = t {
                if let Some((_, other)) = dirs.iter().find(|(d, _)| d.as_os_str() == url.as_str()) {
                    return err(format!(
                        "site `{}`: object store {url} is already used by site `{other}`",
                        s.name
                    ));
                }
                dirs.push((PathBuf::from(url), &s.name));
            }
            if let TierSpec::File(dir, _) = t {
                if let Some((_, other)) = dirs.iter().find(|(d, _)| d == dir) {
                    return err(format!(
                        "site `{}`: directory {} is already used by a tier of site `{other}`",
                        s.name,
                        dir.display()
                    ));
                }
                dirs.push((dir.clone(), &s.name));
            }
        }
    }
    Ok(())
}

fn dur_or(what: &str, v: Option<&String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|e| ConfigError(format!("{what}: {e}"))),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IP:port address (e.g. 127.0.0.1:8080)"))
}

fn parse_upstream(s: &str) -> Result<UpstreamUrl, ConfigError> {
    let uri: Uri = s
        .parse()
        .map_err(|e| ConfigError(format!("upstream `{s}`: {e}")))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => {
            return err(format!(
                "upstream `{s}`: expected http[s]://host[:port][/path]"
            ))
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        return err(format!("upstream `{s}`: no host"));
    };
    if uri.query().is_some() {
        return err(format!("upstream `{s}`: must not have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(UpstreamUrl {
        scheme,
        authority,
        base_path,
    })
}

/// `memory:SIZE` or `file:DIR:SIZE`; object-store URLs are recognised and refused clearly.
fn parse_tier(which: &str, spec: &str) -> Result<TierSpec, ConfigError> {
    let bad = |why: String| ConfigError(format!("{which}: `{spec}`: {why}"));
    if spec.contains("://") {
        return parse_object_url(spec).map_err(bad);
    }
    if let Some(size) = spec.strip_prefix("memory:") {
        let n = parse_size(size).map_err(bad)?;
        return Ok(TierSpec::Memory(n));
    }
    if let Some(rest) = spec.strip_prefix("file:") {
        let Some((dir, size)) = rest.rsplit_once(':') else {
            return Err(bad(
                "expected file:DIR:SIZE, e.g. file:/var/cache/daramjwee:10GiB".into(),
            ));
        };
        if dir.is_empty() {
            return Err(bad("empty directory".into()));
        }
        let n = parse_size(size).map_err(bad)?;
        return Ok(TierSpec::File(PathBuf::from(dir), n));
    }
    Err(bad(
        "expected memory:SIZE or file:DIR:SIZE (e.g. memory:256MiB)".into(),
    ))
}

/// Checks an object store URL now, so a typo is a configuration error, not a runtime failure.
#[cfg(feature = "object-store")]
fn parse_object_url(spec: &str) -> Result<TierSpec, String> {
    let _checked = daramjwee::store::BucketStore::from_url(spec).map_err(|e| e.to_string())?;
    Ok(TierSpec::Object(spec.to_string()))
}

#[cfg(not(feature = "object-store"))]
fn parse_object_url(_spec: &str) -> Result<TierSpec, String> {
    Err(
        "object-store tiers are not compiled into this build; rebuild with \
         `--features proxy,object-store` (add aws, gcp or azure for those backends), or use \
         file:DIR:SIZE"
            .into(),
    )
}

/// Sizes: a number with an optional unit (B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB in powers
/// of ten). Zero is refused: a tier of nothing is a configuration mistake.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        u => return Err(format!("unknown size unit `{u}` (use KiB, MiB, GiB, TiB)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 256MiB)"))?;
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is not a positive size"));
    }
    Ok(bytes as u64)
}

/// Durations: a number with a unit (`ms`, `s`, `m`, `h`), e.g. `500ms`, `30s`, `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let secs: f64 = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "" => return Err(format!("`{s}` has no unit (e.g. 30s, 500ms, 5m)")),
        u => return Err(format!("unknown duration unit `{u}` (use ms, s, m, h)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 30s)"))?;
    let d = n * secs;
    if !(d.is_finite() && (0.0..1e9).contains(&d)) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(d))
}

fn fmt_size(n: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= m && n % m == 0 {
            return format!("{}{unit}", n / m);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["daramjwee"];
        v.extend_from_slice(args);
        Cli::parse_from(v)
    }

    #[test]
    fn sizes_and_durations_parse_with_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12XB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("30").is_err());
    }

    #[test]
    fn defaults_give_memory_hot_and_disk_cold_under_data_dir() {
        let s = Settings::load(&cli(&["--upstream", "http://127.0.0.1:3000"])).unwrap();
        let site = &s.sites[0];
        assert_eq!(site.name, "default");
        assert_eq!(site.hot, TierSpec::Memory(256 << 20));
        assert_eq!(
            site.cold,
            Some(TierSpec::File(
                PathBuf::from("./daramjwee-data/default/cold"),
                1 << 30
            ))
        );
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.admin, Some("127.0.0.1:9090".parse().unwrap()));
    }

    #[test]
    fn file_path_with_colons_keeps_the_last_colon_for_the_size() {
        assert_eq!(
            parse_tier("hot", "file:/tmp/a:b:10GiB").unwrap(),
            TierSpec::File(PathBuf::from("/tmp/a:b"), 10 << 30)
        );
    }

    #[cfg(not(feature = "object-store"))]
    #[test]
    fn object_store_cold_tier_says_not_compiled_in() {
        let e = Settings::load(&cli(&[
            "--upstream",
            "http://127.0.0.1:3000",
            "--cold",
            "s3://bucket/prefix",
        ]))
        .unwrap_err();
        assert!(e.0.contains("not compiled into this build"), "{e}");
    }

    #[cfg(feature = "object-store")]
    #[test]
    fn object_store_url_is_a_cold_tier_and_never_a_hot_one() {
        let s = Settings::load(&cli(&[
            "--upstream",
            "http://127.0.0.1:3000",
            "--cold",
            "memory:///",
        ]))
        .unwrap();
        assert_eq!(s.sites[0].cold, Some(TierSpec::Object("memory:///".into())));
        let e =
            Settings::load(&cli(&["--upstream", "http://h", "--hot", "memory:///"])).unwrap_err();
        assert!(e.0.contains("only be the cold tier"), "{e}");
        let e = Settings::load(&cli(&["--upstream", "http://h", "--cold", "nosuch://b/p"]))
            .unwrap_err();
        assert!(e.0.contains("cold: `nosuch://b/p`"), "{e}");
    }

    #[test]
    fn missing_upstream_and_bad_values_are_named() {
        let e = Settings::load(&cli(&[])).unwrap_err();
        assert!(e.0.contains("no upstream"), "{e}");
        let e =
            Settings::load(&cli(&["--upstream", "http://h", "--eviction", "fifo"])).unwrap_err();
        assert!(e.0.contains("eviction: `fifo`"), "{e}");
        let e =
            Settings::load(&cli(&["--upstream", "http://h", "--ca-file", "/ca.pem"])).unwrap_err();
        assert!(e.0.contains("ca_file applies only to an https"), "{e}");
        let s =
            Settings::load(&cli(&["--upstream", "https://h/b", "--ca-file", "/ca.pem"])).unwrap();
        assert_eq!(s.sites[0].upstream.to_string(), "https://h/b");
        let e = Settings::load(&cli(&["--upstream", "http://h", "--ttl", "5s"])).unwrap_err();
        assert!(e.0.contains("origin-trusting"), "{e}");
    }

    #[test]
    fn sites_inherit_defaults_and_flags_override_them() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:0"
            [defaults]
            upstream = "http://127.0.0.1:1/"
            hot = "memory:1MiB"
            cold = "none"
            [[site]]
            name = "a"
            prefix = "/a/"
            [[site]]
            name = "b"
            host = "B.example"
            upstream = "http://127.0.0.1:2/base/"
            "#,
        )
        .unwrap();
        let s = Settings::merge(&cli(&["--hot", "memory:2MiB"]), file).unwrap();
        assert_eq!(s.sites.len(), 2);
        assert_eq!(s.sites[0].prefix, "/a");
        assert_eq!(s.sites[0].hot, TierSpec::Memory(2 << 20));
        assert_eq!(s.sites[0].cold, None);
        assert_eq!(s.sites[1].host.as_deref(), Some("b.example"));
        assert_eq!(s.sites[1].upstream.to_string(), "http://127.0.0.1:2/base");
    }

    #[test]
    fn every_eviction_policy_is_accepted_and_request_ids_default_on() {
        for (name, kind) in [
            ("lru", PolicyKind::Lru),
            ("s3fifo", PolicyKind::S3Fifo),
            ("sieve", PolicyKind::Sieve),
            ("tinylfu", PolicyKind::TinyLfu),
        ] {
            let s = Settings::load(&cli(&["--upstream", "http://h", "--eviction", name])).unwrap();
            assert_eq!(s.sites[0].eviction.name(), kind.name());
            assert!(s.request_ids);
        }
        let file: FileConfig = toml::from_str("request_ids = false\n").unwrap();
        let s = Settings::merge(&cli(&["--upstream", "http://h"]), file).unwrap();
        assert!(!s.request_ids);
        let file: FileConfig = toml::from_str("request_ids = false\n").unwrap();
        let s = Settings::merge(
            &cli(&["--upstream", "http://h", "--request-ids", "true"]),
            file,
        )
        .unwrap();
        assert!(s.request_ids, "the flag overrides the file");
    }

    #[test]
    fn forwarding_options_are_validated() {
        let s = Settings::load(&cli(&[
            "--upstream",
            "http://h",
            "--public-host",
            "WWW.Example.com:8443",
            "--drop-header",
            "X-Debug",
        ]))
        .unwrap();
        assert_eq!(
            s.sites[0].public_host.as_ref().unwrap(),
            "www.example.com:8443"
        );
        assert_eq!(s.sites[0].drop_headers, ["x-debug"]);
        assert!(!s.sites[0].forward_target_headers);
        for bad in ["evil.example/x", "user@h", "", "a b"] {
            let e = Settings::load(&cli(&["--upstream", "http://h", "--public-host", bad]))
                .unwrap_err();
            assert!(e.0.contains("public_host"), "{bad}: {e}");
        }
        let e =
            Settings::load(&cli(&["--upstream", "http://h", "--drop-header", "a b"])).unwrap_err();
        assert!(e.0.contains("drop_headers: `a b`"), "{e}");
        let file: FileConfig = toml::from_str(
            "[defaults]\nupstream = \"http://h\"\nforward_target_headers = true\n\
             [[site]]\nname = \"a\"\ndrop_headers = [\"x-a\"]\n",
        )
        .unwrap();
        let s = Settings::merge(&cli(&[]), file).unwrap();
        assert!(s.sites[0].forward_target_headers);
        assert_eq!(s.sites[0].drop_headers, ["x-a"]);
    }

    #[test]
    fn access_log_is_off_unless_named_and_its_format_is_checked() {
        let s = Settings::load(&cli(&["--upstream", "http://h"])).unwrap();
        assert_eq!(s.access_log, None);
        let s =
            Settings::load(&cli(&["--upstream", "http://h", "--access-log", "stdout"])).unwrap();
        assert_eq!(
            s.access_log,
            Some(AccessLogSettings {
                destination: Destination::Stdout,
                format: Format::Combined
            })
        );
        let file: FileConfig =
            toml::from_str("access_log = \"/var/log/d.jsonl\"\naccess_log_format = \"json\"\n")
                .unwrap();
        let s = Settings::merge(&cli(&["--upstream", "http://h"]), file).unwrap();
        let a = s.access_log.unwrap();
        assert_eq!(a.destination, Destination::File("/var/log/d.jsonl".into()));
        assert_eq!(a.format, Format::Json);
        let e = Settings::load(&cli(&[
            "--upstream",
            "http://h",
            "--access-log-format",
            "json",
        ]))
        .unwrap_err();
        assert!(e.0.contains("access_log is off"), "{e}");
        let e = Settings::load(&cli(&[
            "--upstream",
            "http://h",
            "--access-log",
            "stdout",
            "--access-log-format",
            "clf",
        ]))
        .unwrap_err();
        assert!(e.0.contains("`clf` is not one of combined, json"), "{e}");
    }

    #[test]
    fn typo_in_a_site_key_is_an_error() {
        let e = toml::from_str::<FileConfig>("[[site]]\nname = \"a\"\nhott = \"memory:1MiB\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("hott"), "{e}");
    }

    #[test]
    fn two_sites_on_one_directory_are_refused() {
        let file: FileConfig = toml::from_str(
            r#"
            [defaults]
            upstream = "http://127.0.0.1:1"
            cold = "file:/tmp/x:1GiB"
            [[site]]
            name = "a"
            prefix = "/a"
            [[site]]
            name = "b"
            prefix = "/b"
            "#,
        )
        .unwrap();
        let e = Settings::merge(&cli(&[]), file).unwrap_err();
        assert!(e.0.contains("already used"), "{e}");
    }

    #[test]
    fn shared_workers_and_site_weights_resolve_with_defaults() {
        let toml = r#"
            workers = 6
            [defaults]
            upstream = "http://127.0.0.1:1"
            cold = "none"
            queue = 100
            [[site]]
            name = "a"
            prefix = "/a"
            weight = 3
            queue = 10
            [[site]]
            name = "b"
            "#;
        let s = Settings::merge(&cli(&[]), toml::from_str(toml).unwrap()).unwrap();
        assert_eq!(s.workers, 6);
        assert_eq!((s.sites[0].weight, s.sites[0].queue), (3, 10));
        assert_eq!((s.sites[1].weight, s.sites[1].queue), (1, 100));
        let s = Settings::merge(&cli(&["--workers", "9"]), toml::from_str(toml).unwrap()).unwrap();
        assert_eq!(s.workers, 9, "the flag overrides the file");
        let s = Settings::load(&cli(&["--upstream", "http://h"])).unwrap();
        assert_eq!(
            (s.workers, s.sites[0].weight, s.sites[0].queue),
            (4, 1, 1024)
        );
    }

    #[test]
    fn per_site_workers_and_out_of_range_weights_are_refused() {
        let load = |toml: &str| {
            let file: FileConfig = toml::from_str(toml).unwrap();
            Settings::merge(&cli(&[]), file).unwrap_err().0
        };
        let e = load("[[site]]\nname = \"a\"\nupstream = \"http://h\"\nworkers = 8\n");
        assert!(e.starts_with("site `a`: workers:"), "{e}");
        assert!(e.contains("top level") && e.contains("`weight`"), "{e}");
        let e = load("[defaults]\nupstream = \"http://h\"\nworkers = 8\n");
        assert!(e.starts_with("[defaults] workers:"), "{e}");
        for (w, shown) in [("0", "0"), ("1001", "1001"), ("-2", "-2")] {
            let e = load(&format!(
                "[[site]]\nname = \"a\"\nupstream = \"http://h\"\nweight = {w}\n"
            ));
            assert_eq!(e, format!("site `a`: weight: {shown} is not in 1..=1000"));
        }
        let e = load("workers = 0\n[defaults]\nupstream = \"http://h\"\n");
        assert_eq!(e, "workers: 0 is not in 1..=1024");
        let e = Settings::load(&cli(&["--upstream", "http://h", "--workers", "2000"])).unwrap_err();
        assert_eq!(e.0, "workers: 2000 is not in 1..=1024");
    }
}
