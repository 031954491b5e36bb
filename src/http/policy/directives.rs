//! `Cache-Control` directives: the parsed form every rule reads, and the parser for the
//! `Cache-Control` field itself (RFC 9111 §5.2). Targeted fields (RFC 9213) parse into the same
//! form in `targeted.rs`.

use http::header::{self, HeaderMap};

/// Parsed `Cache-Control` directives (request or response).
///
/// Tolerates case, spaces, quoted values, duplicates (the first value wins, except that any
/// occurrence of a boolean directive sets it) and unknown directives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheControl {
    /// `no-store`
    pub no_store: bool,
    /// `no-cache` without a field list.
    pub no_cache: bool,
    /// The fields named by `no-cache="..."` (lowercase): stored responses omit them.
    pub no_cache_fields: Vec<String>,
    /// `private` without a field list.
    pub private: bool,
    /// The fields named by `private="..."` (lowercase): a shared cache omits them.
    pub private_fields: Vec<String>,
    /// `public`
    pub public: bool,
    /// `must-revalidate`
    pub must_revalidate: bool,
    /// `proxy-revalidate`
    pub proxy_revalidate: bool,
    /// `must-understand`
    pub must_understand: bool,
    /// `only-if-cached`
    pub only_if_cached: bool,
    /// `max-age`
    pub max_age: Option<u64>,
    /// `s-maxage`
    pub s_maxage: Option<u64>,
    /// `max-stale` (`Some(u64::MAX)` when given without a value)
    pub max_stale: Option<u64>,
    /// `min-fresh`
    pub min_fresh: Option<u64>,
    /// `stale-while-revalidate` (RFC 5861)
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861)
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` field of `headers`.
    ///
    /// ```
    /// let mut h = http::HeaderMap::new();
    /// h.insert("cache-control", "Public, max-age=\"60\"".parse().unwrap());
    /// let cc = daramjwee::http::CacheControl::parse(&h);
    /// assert!(cc.public);
    /// assert_eq!(cc.max_age, Some(60));
    /// ```
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(s) = value.to_str() else { continue };
            for directive in split_directives(s) {
                let directive = directive.trim();
                match directive.split_once('=') {
                    // `max-age =5` and `max-age= 5` are not the directive (§5.2: no
                    // whitespace around `=`): ignore them rather than guess.
                    Some((n, a)) if n.ends_with([' ', '\t']) || a.starts_with([' ', '\t']) => {}
                    Some((n, a)) => cc.apply(n, Some(unquote(a))),
                    None => cc.apply(directive, None),
                }
            }
        }
        cc
    }

    /// Records one directive, `arg` being its value without quotes. Shared by the
    /// `Cache-Control` parser and the targeted fields' (RFC 9213 gives both the same meaning).
    pub(super) fn apply(&mut self, name: &str, arg: Option<&str>) {
        let seconds = || arg.and_then(parse_delta_seconds);
        let fields = || {
            arg.into_iter()
                .flat_map(|a| a.split(','))
                .map(|f| f.trim().to_ascii_lowercase())
                .filter(|f| !f.is_empty())
        };
        let had_arg = arg.is_some();
        match name.to_ascii_lowercase().as_str() {
            "no-store" => self.no_store = true,
            "no-cache" if had_arg => self.no_cache_fields.extend(fields()),
            "no-cache" => self.no_cache = true,
            "private" if had_arg => self.private_fields.extend(fields()),
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "only-if-cached" => self.only_if_cached = true,
            "max-age" => set_first(&mut self.max_age, seconds(), had_arg),
            "s-maxage" => set_first(&mut self.s_maxage, seconds(), had_arg),
            "max-stale" if self.max_stale.is_none() => {
                self.max_stale = Some(seconds().unwrap_or(u64::MAX));
            }
            "min-fresh" => set_first(&mut self.min_fresh, seconds(), had_arg),
            "stale-while-revalidate" => {
                set_first(&mut self.stale_while_revalidate, seconds(), had_arg)
            }
            "stale-if-error" => set_first(&mut self.stale_if_error, seconds(), had_arg),
            _ => {}
        }
    }
}

/// A directive argument: a quoted-string loses its quotes (a token is taken as is).
fn unquote(a: &str) -> &str {
    a.strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(a)
}

/// Keeps the first valid value; an invalid `max-age` value counts as 0 (stale), the safe
/// reading of RFC 9111 §4.2.1.
fn set_first(slot: &mut Option<u64>, value: Option<u64>, had_arg: bool) {
    if slot.is_none() && had_arg {
        *slot = Some(value.unwrap_or(0));
    }
}

/// Splits on commas outside quoted strings.
fn split_directives(s: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// delta-seconds: digits only; values too large saturate (RFC 9111 §1.2.2).
pub(super) fn parse_delta_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX).min(i32::MAX as u64))
}
