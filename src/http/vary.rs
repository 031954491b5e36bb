//! `Vary` (RFC 9111 §4.1): variants stored under secondary keys.
//!
//! A response that varies on request fields is stored under a *variant key*: the primary key
//! (the URL) plus the normalised values of the nominated request fields. The primary key then
//! holds a small *marker* entry (empty body) that records the field names and a random
//! generation nonce; the nonce is part of every variant key. Deleting or replacing the marker
//! (an unsafe request, a purge, a change of `Vary`) therefore makes every variant of the URL
//! unreachable at once, without enumerating them; their bytes are reclaimed by eviction.
//!
//! This module only computes keys and markers: it must never touch the cache.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::entry::Metadata;

/// The header a marker entry carries its nonce in; never sent to clients.
pub(crate) const MARKER: HeaderName = HeaderName::from_static("x-daramjwee-vary-marker");

/// How long a marker stays valid. It carries no response, only the field names, so its
/// freshness is not HTTP freshness; a long life just saves an origin round trip.
const MARKER_LIFE: Duration = Duration::from_secs(365 * 86_400);

/// What a response's `Vary` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Vary {
    /// No `Vary`, or an empty one.
    None,
    /// `Vary: *`: the response can never be selected by a later request (§4.1).
    Star,
    /// These request fields select the response (lowercase, sorted, deduplicated).
    Fields(Vec<String>),
}

/// Parses every `Vary` field of `headers`.
pub(crate) fn parse(headers: &HeaderMap) -> Vary {
    let mut names = Vec::new();
    for v in headers.get_all(http::header::VARY) {
        let Ok(s) = v.to_str() else {
            // An unreadable Vary cannot be matched: treat it as `*`, the safe side.
            return Vary::Star;
        };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Vary::Star;
            }
            names.push(name.to_ascii_lowercase());
        }
    }
    names.sort();
    names.dedup();
    if names.is_empty() {
        Vary::None
    } else {
        Vary::Fields(names)
    }
}

/// A fresh marker for `names`, with a new nonce.
pub(crate) fn marker(names: &[String]) -> Metadata {
    let nonce = RandomState::new().hash_one(SystemTime::now());
    let mut headers = HeaderMap::new();
    headers.insert(MARKER, HeaderValue::from(nonce));
    if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
        headers.insert(http::header::VARY, v);
    }
    let mut meta = Metadata::new(StatusCode::OK)
        .with_headers(headers)
        .with_content_length(0);
    meta.fresh_until = Some(meta.stored_at + MARKER_LIFE);
    meta
}

/// Whether an entry is a marker (cheap: no parsing). Asked on every hit: a scan of a few
/// names compares them without hashing [`MARKER`], which as a name outside the standard set
/// is hashed byte by byte; past a few fields the hashed lookup is cheaper.
pub(crate) fn is_marker(meta: &Metadata) -> bool {
    if meta.headers.keys_len() <= 16 {
        meta.headers.keys().any(|name| name == MARKER)
    } else {
        meta.headers.contains_key(MARKER)
    }
}

/// The nonce and field names of a marker entry, or `None` for a real response.
pub(crate) fn read_marker(meta: &Metadata) -> Option<(String, Vec<String>)> {
    let nonce = meta.headers.get(MARKER)?.to_str().ok()?.to_owned();
    match parse(&meta.headers) {
        Vary::Fields(names) => Some((nonce, names)),
        _ => None,
    }
}

/// The variant key: the primary key, the marker's nonce, and each nominated field's
/// normalised value (absent fields are distinct from empty ones).
pub(crate) fn variant_key(primary: &str, nonce: &str, names: &[String], req: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 32 * (names.len() + 1));
    key.push_str(primary);
    key.push_str("\n#vary=");
    key.push_str(nonce);
    for name in names {
        key.push('\n');
        key.push_str(name);
        key.push(':');
        match normalized(name, req) {
            Some(v) => key.push_str(&v),
            None => key.push('\u{0}'),
        }
    }
    key
}

/// A request field's value in a form where equivalent spellings compare equal (§4.1):
/// duplicate fields combined, list members trimmed, runs of whitespace collapsed, and
/// case folded for the fields whose values are case-insensitive tokens.
fn normalized(name: &str, req: &HeaderMap) -> Option<String> {
    let mut values = req.get_all(name).iter().peekable();
    values.peek()?;
    let fold = matches!(
        name,
        "accept-encoding" | "accept-charset" | "accept-language" | "te"
    );
    let mut members = Vec::new();
    for v in values {
        let s = String::from_utf8_lossy(v.as_bytes());
        for m in s.split(',') {
            let m: Vec<&str> = m.split_whitespace().collect();
            let m = m.join(" ").replace(" ;", ";").replace("; ", ";");
            if m.is_empty() {
                continue;
            }
            members.push(if fold { m.to_ascii_lowercase() } else { m });
        }
    }
    Some(members.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn equivalent_accept_encoding_spellings_share_a_variant() {
        let names = vec!["accept-encoding".to_owned()];
        let a = variant_key("k", "1", &names, &req(&[("accept-encoding", "gzip, br")]));
        let b = variant_key("k", "1", &names, &req(&[("accept-encoding", "GZIP,br")]));
        let c = variant_key(
            "k",
            "1",
            &names,
            &req(&[("accept-encoding", "gzip"), ("accept-encoding", " br")]),
        );
        assert_eq!(a, b);
        assert_eq!(a, c);
        let d = variant_key("k", "1", &names, &req(&[("accept-encoding", "br, gzip")]));
        assert_ne!(a, d);
    }

    #[test]
    fn absent_field_differs_from_empty_field_and_nonce_separates_generations() {
        let names = vec!["x-a".to_owned()];
        let absent = variant_key("k", "1", &names, &req(&[]));
        let empty = variant_key("k", "1", &names, &req(&[("x-a", "")]));
        assert_ne!(absent, empty);
        assert_ne!(absent, variant_key("k", "2", &names, &req(&[])));
    }

    #[test]
    fn vary_parsing_lowercases_sorts_and_spots_star() {
        assert_eq!(
            parse(&req(&[
                ("vary", "Accept-Language, accept-encoding"),
                ("vary", "")
            ])),
            Vary::Fields(vec!["accept-encoding".into(), "accept-language".into()])
        );
        assert_eq!(parse(&req(&[("vary", "a, *")])), Vary::Star);
        assert_eq!(parse(&req(&[])), Vary::None);
    }
}
