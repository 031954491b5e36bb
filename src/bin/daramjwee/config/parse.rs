//! Parsing one value of the configuration: names, routes, tiers, policies, durations, sizes,
//! header names and addresses. Each function turns a string (or an option group) into a
//! checked value, or a message that names the setting.

use super::*;

/// Site names name directories and metric labels.
pub(super) fn check_name(name: &str) -> Result<(), ConfigError> {
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
pub(super) fn parse_route(sf: &SiteFile) -> Result<(Option<String>, String), ConfigError> {
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
pub(super) fn parse_tiers(
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

/// `send_buffer`: a size from 4 KiB to 64 MiB, or `auto` (`None`: the kernel's autotuning).
pub(super) fn parse_send_buffer(v: Option<&str>) -> Result<Option<u64>, ConfigError> {
    match v.map(str::trim) {
        None => Ok(Some(DEFAULT_SEND_BUFFER)),
        Some("auto") => Ok(None),
        Some(s) => {
            let n = parse_size(s).map_err(|e| ConfigError::Invalid(format!("send_buffer: {e}")))?;
            if !(4 << 10..=64 << 20).contains(&n) {
                return err(format!(
                    "send_buffer: {} is not between 4KiB and 64MiB (or `auto`)",
                    fmt_size(n)
                ));
            }
            Ok(Some(n))
        }
    }
}

/// `cold_fill` and the per-tier object size limits. A limit above its tier's size, or one for
/// a tier that has none (an object store, or no cold tier), is refused: it could never apply.
pub(super) fn parse_placement(
    o: &SiteOpts,
    hot: &TierSpec,
    cold: Option<&TierSpec>,
) -> Result<Placement, ConfigError> {
    let cold_fill = match o.cold_fill.as_deref().unwrap_or("background") {
        "background" => ColdFill::Background,
        "write-through" | "write_through" => ColdFill::WriteThrough,
        other => {
            return err(format!(
                "cold_fill: `{other}` is not one of background, write-through"
            ))
        }
    };
    let hot_max_object = opt_size("hot_max_object_size", o.hot_max_object_size.as_deref())?;
    let cold_max_object = opt_size("cold_max_object_size", o.cold_max_object_size.as_deref())?;
    check_limit("hot_max_object_size", hot_max_object, Some(hot))?;
    check_limit("cold_max_object_size", cold_max_object, cold)?;
    Ok(Placement {
        cold_fill,
        hot_max_object,
        cold_max_object,
    })
}

fn check_limit(what: &str, limit: Option<u64>, tier: Option<&TierSpec>) -> Result<(), ConfigError> {
    let Some(limit) = limit else { return Ok(()) };
    match tier {
        None => err(format!("{what}: the site has no such tier")),
        Some(TierSpec::Object(_)) => err(format!(
            "{what}: an object store keeps objects of any size; remove the setting"
        )),
        Some(TierSpec::Memory(n) | TierSpec::File(_, n)) if limit > *n => err(format!(
            "{what}: {} is larger than the tier ({})",
            fmt_size(limit),
            fmt_size(*n)
        )),
        Some(_) => Ok(()),
    }
}

/// The site's share of the background slots (`weight`, default 1); the old per-site
/// `workers` is refused with a pointer to it.
pub(super) fn parse_weight(o: &SiteOpts) -> Result<u32, ConfigError> {
    if o.workers.is_some() {
        return err(PER_SITE_WORKERS);
    }
    let weight = o.weight.unwrap_or(1);
    match u32::try_from(weight) {
        Ok(w @ 1..=MAX_WEIGHT) => Ok(w),
        _ => err(format!("weight: {weight} is not in 1..={MAX_WEIGHT}")),
    }
}

pub(super) fn parse_eviction(v: Option<&str>) -> Result<PolicyKind, ConfigError> {
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
pub(super) fn parse_policy(o: &SiteOpts) -> Result<PolicyMode, ConfigError> {
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
pub(super) fn parse_public_host(s: &str) -> Result<HeaderValue, ConfigError> {
    let bad = || {
        ConfigError::Invalid(format!(
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
pub(super) fn targeted_fields(o: &SiteOpts) -> Result<Vec<HeaderName>, ConfigError> {
    let mut names = Vec::new();
    if let Some(own) = &o.targeted_field {
        let name = HeaderName::from_bytes(own.trim().as_bytes()).map_err(|_| {
            ConfigError::Invalid(format!("targeted_field: `{own}` is not a header name"))
        })?;
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
pub(super) fn parse_header_names(
    what: &str,
    v: Option<&[String]>,
) -> Result<Vec<HeaderName>, ConfigError> {
    v.unwrap_or_default()
        .iter()
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| ConfigError::Invalid(format!("{what}: `{n}` is not a header name")))
        })
        .collect()
}

pub(super) fn opt_dur(what: &str, v: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    v.map(|s| parse_duration(s).map_err(|e| ConfigError::Invalid(format!("{what}: {e}"))))
        .transpose()
}

pub(super) fn opt_size(what: &str, v: Option<&str>) -> Result<Option<u64>, ConfigError> {
    v.map(|s| parse_size(s).map_err(|e| ConfigError::Invalid(format!("{what}: {e}"))))
        .transpose()
}

/// Checks between sites: unique names, unique routes, no directory used twice.
pub(super) fn check_sites(sites: &[SiteSettings]) -> Result<(), ConfigError> {
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

pub(super) fn dur_or(
    what: &str,
    v: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|e| ConfigError::Invalid(format!("{what}: {e}"))),
    }
}

pub(super) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IP:port address (e.g. 127.0.0.1:8080)"))
}

pub(super) fn parse_upstream(s: &str) -> Result<UpstreamUrl, ConfigError> {
    let uri: Uri = s
        .parse()
        .map_err(|e| ConfigError::Invalid(format!("upstream `{s}`: {e}")))?;
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
pub(super) fn parse_tier(which: &str, spec: &str) -> Result<TierSpec, ConfigError> {
    let bad = |why: String| ConfigError::Invalid(format!("{which}: `{spec}`: {why}"));
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
pub(super) fn parse_object_url(spec: &str) -> Result<TierSpec, String> {
    let _checked = daramjwee::store::BucketStore::from_url(spec).map_err(|e| e.to_string())?;
    Ok(TierSpec::Object(spec.to_string()))
}

#[cfg(not(feature = "object-store"))]
pub(super) fn parse_object_url(_spec: &str) -> Result<TierSpec, String> {
    Err(
        "object-store tiers are not compiled into this build; rebuild with \
         `--features proxy,object-store` (add aws, gcp or azure for those backends), or use \
         file:DIR:SIZE"
            .into(),
    )
}

/// Sizes: a number with an optional unit (B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB in powers
/// of ten). Zero is refused: a tier of nothing is a configuration mistake.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
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

pub(super) fn fmt_size(n: u64) -> String {
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
