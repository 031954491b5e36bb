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
use daramjwee::ColdFill;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::Uri;
use serde::Deserialize;

use crate::access_log::{AccessLogSettings, Destination, Format};
use crate::header_rules::{HeaderRules, RuleFile};
use crate::tls::TlsError;

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
    /// Kernel send buffer of each client connection (`SO_SNDBUF`), or `auto` for the kernel's
    /// autotuning [default: 256KiB]. Bounded, one fast reader of a large object cannot take
    /// the writer's turn for long (docs/bench-proxy.md, "Tails of large hits").
    #[arg(long, value_name = "SIZE|auto")]
    pub send_buffer: Option<String>,
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
    /// Cold tier: `file:DIR:SIZE` or `none` [default: file:DATA_DIR/SITE/cold:10GiB].
    #[arg(long, value_name = "SPEC")]
    pub cold: Option<String>,
    /// How the cold tier is filled: `background` (a copy of each committed hot entry) or
    /// `write-through` (every fill writes both tiers as it streams) [default: background].
    #[arg(long, value_name = "MODE")]
    pub cold_fill: Option<String>,
    /// Largest object the hot tier keeps; larger ones go to the cold tier
    /// [default: memory SIZE/16, file SIZE/2].
    #[arg(long, value_name = "SIZE")]
    pub hot_max_object_size: Option<String>,
    /// Largest object the cold tier keeps; larger ones are streamed unstored
    /// [default: SIZE/2 for a file tier; an object store has no limit].
    #[arg(long, value_name = "SIZE")]
    pub cold_max_object_size: Option<String>,
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
    /// (ALPN h2 and http/1.1) instead of plain HTTP and h2c. Both files are re-read on SIGHUP.
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
    send_buffer: Option<String>,
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

/// Declares the per-site options once, for [`SiteOpts`] (what `[defaults]` and the flags give
/// every site), [`SiteFile`] (a `[[site]]` table: its route, then the same options) and
/// [`SiteFile::opts_over`] (a site's own value, else the default). One list, so an option
/// cannot be accepted in `[defaults]` and refused in `[[site]]`, or read and then dropped by
/// the merge. Two structs rather than one flattened into the other: `deny_unknown_fields`
/// (which turns a typo into an error) cannot be combined with `#[serde(flatten)]`.
macro_rules! site_options {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        /// Per-site settings that `[defaults]` and the flags provide for every site.
        #[derive(Deserialize, Debug, Default, Clone)]
        #[serde(deny_unknown_fields)]
        struct SiteOpts {
            $($(#[$doc])* $field: Option<$ty>,)*
        }

        /// One `[[site]]` table: where it routes, then the options of [`SiteOpts`].
        #[derive(Deserialize, Debug, Default)]
        #[serde(deny_unknown_fields)]
        struct SiteFile {
            name: Option<String>,
            host: Option<String>,
            prefix: Option<String>,
            $($(#[$doc])* $field: Option<$ty>,)*
        }

        impl SiteFile {
            /// The site's own options, each falling back to `defaults`.
            fn opts_over(&self, defaults: &SiteOpts) -> SiteOpts {
                SiteOpts {
                    $($field: self.$field.clone().or_else(|| defaults.$field.clone()),)*
                }
            }
        }
    };
}

site_options! {
    upstream: String,
    hot: String,
    cold: String,
    cold_fill: String,
    hot_max_object_size: String,
    cold_max_object_size: String,
    eviction: String,
    policy: String,
    ttl: String,
    negative_ttl: String,
    /// Refused with a pointer to the top-level `workers` and per-site `weight`.
    workers: toml::Value,
    weight: i64,
    queue: usize,
    connect_timeout: String,
    upstream_timeout: String,
    idle_timeout: String,
    lock_age: String,
    lock_wait: String,
    stream_window: String,
    follower_retain: String,
    preserve_host: bool,
    strip_prefix: bool,
    public_host: String,
    forward_target_headers: bool,
    cdn_cache_control: bool,
    targeted_field: String,
    strip_targeted: bool,
    drop_headers: Vec<String>,
    ca_file: PathBuf,
    request_headers: Vec<RuleFile>,
    response_headers: Vec<RuleFile>,
}

/// A configuration error: what was wrong, and where it was written. Errors that come from
/// reading a file (the configuration, a PEM file) keep theirs as their source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not TOML, or not the proxy's keys and types.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML reader said, with the line and column.
        #[source]
        source: toml::de::Error,
    },
    /// A value is missing, out of range or out of place: the message names the setting.
    #[error("{0}")]
    Invalid(String),
    /// Something wrong in one site's settings.
    #[error("site `{site}`: {source}")]
    Site {
        /// The site's name.
        site: String,
        /// What is wrong.
        #[source]
        source: Box<ConfigError>,
    },
    /// The listener's certificate or key, or a site's CA file, could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ConfigError {
    /// This error, said of site `site`.
    pub fn in_site(self, site: &str) -> ConfigError {
        ConfigError::Site {
            site: site.to_string(),
            source: Box::new(self),
        }
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(msg.into()))
}

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// The send buffer of client connections, in bytes (`None`: the kernel's autotuning).
    pub send_buffer: Option<u64>,
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
    /// How fills are placed in the tiers.
    pub placement: Placement,
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

/// How a site's fills are placed in its tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// How the cold tier is filled.
    pub cold_fill: ColdFill,
    /// The largest object the hot tier keeps (its store's default when unset).
    pub hot_max_object: Option<u64>,
    /// The largest object the cold tier keeps (its store's default when unset).
    pub cold_max_object: Option<u64>,
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
/// Twice what loopback and LAN connections need to keep a link busy, an eighth of the kernel's
/// autotuning ceiling: measured in docs/bench-proxy.md ("Tails of large hits").
const DEFAULT_SEND_BUFFER: u64 = 256 << 10;
/// Room for objects up to 5 GiB (half of it, the default per-object limit of a file tier),
/// like a small nginx `max_size`; nginx's default is no bound at all.
const DEFAULT_COLD_BYTES: u64 = 10 << 30;
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
        let (listen, admin) = listeners(cli, &file)?;
        let send_buffer =
            parse_send_buffer(cli.send_buffer.as_deref().or(file.send_buffer.as_deref()))?;
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
            cli.tls_cert.clone().or(file.tls_cert.clone()),
            cli.tls_key.clone().or(file.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return err("tls_cert and tls_key go together: set both, or neither"),
        };
        let workers = cli.workers.or(file.workers).unwrap_or(4);
        if workers == 0 || workers > 1024 {
            return err(format!("workers: {workers} is not in 1..=1024"));
        }
        let request_ids = cli.request_ids.or(file.request_ids).unwrap_or(true);
        let sites = sites(cli, file)?;
        Ok(Settings {
            listen,
            send_buffer,
            admin,
            drain_timeout,
            close_timeout,
            workers,
            request_ids,
            access_log,
            tls,
            sites,
        })
    }
}

/// The proxy's and the admin's listening addresses (the admin may be `off`).
fn listeners(
    cli: &Cli,
    file: &FileConfig,
) -> Result<(SocketAddr, Option<SocketAddr>), ConfigError> {
    let listen = cli
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = parse_addr(&listen).map_err(|e| ConfigError::Invalid(format!("listen: {e}")))?;
    let admin = cli
        .admin
        .clone()
        .or(file.admin.clone())
        .unwrap_or_else(|| DEFAULT_ADMIN.into());
    let admin = match admin.as_str() {
        "off" | "none" | "" => None,
        a => Some(parse_addr(a).map_err(|e| ConfigError::Invalid(format!("admin: {e}")))?),
    };
    if admin.is_some() && admin == Some(listen) && listen.port() != 0 {
        return err(format!(
                "admin: {listen} is also the proxy listener; give the admin listener its own port or `off`"
            ));
    }
    Ok((listen, admin))
}

/// Every site, each over `[defaults]` over the flags.
fn sites(cli: &Cli, file: FileConfig) -> Result<Vec<SiteSettings>, ConfigError> {
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
        cold_fill: cli.cold_fill.clone(),
        hot_max_object_size: cli.hot_max_object_size.clone(),
        cold_max_object_size: cli.cold_max_object_size.clone(),
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
            .map_err(|e| e.in_site(&name))?;
        sites.push(site);
    }
    check_sites(&sites)?;
    Ok(sites)
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
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

fn validate_site(
    name: &str,
    sf: &SiteFile,
    o: &SiteOpts,
    data_dir: &Path,
) -> Result<SiteSettings, ConfigError> {
    check_name(name)?;
    let Some(upstream) = o.upstream.as_deref() else {
        return err(
            "no upstream: pass --upstream URL, or set `upstream` in [defaults] or the site",
        );
    };
    let upstream = parse_upstream(upstream)?;
    let (host, prefix) = parse_route(sf)?;
    let (hot, cold) = parse_tiers(name, o, data_dir)?;
    let placement = parse_placement(o, &hot, cold.as_ref())?;
    let weight = parse_weight(o)?;
    if o.ca_file.is_some() && upstream.scheme != Scheme::HTTPS {
        return err("ca_file applies only to an https:// upstream");
    }
    let rules = |what: &str, r: &Option<Vec<RuleFile>>| {
        HeaderRules::parse(r.as_deref().unwrap_or_default())
            .map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))
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
        placement,
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

mod parse;
use parse::*;

#[cfg(test)]
mod tests;
