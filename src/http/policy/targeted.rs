//! Targeted cache control (RFC 9213): response fields such as `CDN-Cache-Control` whose
//! directives replace `Cache-Control` and `Expires` for the caches they target.
//!
//! A layer keeps an ordered target list (most specific first). For each response, the first
//! field of the list that is present and parses as a non-empty Structured Field Dictionary
//! (RFC 9651) decides storability and freshness, and `Cache-Control` and `Expires` are then
//! ignored for those decisions (they are still stored and sent to clients). A field that does
//! not parse is ignored as if it were absent (RFC 9213 §2.2), so the next one, and in the end
//! `Cache-Control`, applies. Only [`PolicyMode::Shared`] has a target list: a private cache is
//! not what CDN-style fields target, and the origin-trusting mode does not read freshness from
//! the response at all.
//!
//! The fields are parsed with the `sfv` crate rather than the `Cache-Control` parser: RFC 9213
//! §2.2 warns that the two grammars differ in error handling (`Max-Age=60`, unbalanced quotes,
//! decimals), and a targeted field must be rejected, not guessed at, when it is not a valid
//! Dictionary.

use http::header::{HeaderMap, HeaderName};
use sfv::{BareItem, Dictionary, ListEntry, Parser};

use super::directives::CacheControl;
use super::PolicyMode;

/// The targeted fields a layer honours and whether it removes them from its responses.
#[derive(Clone, Debug, Default)]
pub(crate) struct Targeted {
    /// The target list, most specific first (lowercase field names).
    pub names: Vec<HeaderName>,
    /// Remove the listed fields from every response the layer answers (they stay stored).
    pub strip: bool,
}

/// What a response decision follows: the layer's mode and, in shared mode, its target list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules<'a> {
    /// The layer's caching rules.
    pub mode: &'a PolicyMode,
    targeted: Option<&'a Targeted>,
}

impl<'a> From<&'a PolicyMode> for Rules<'a> {
    /// Rules without targeted fields.
    fn from(mode: &'a PolicyMode) -> Self {
        Rules {
            mode,
            targeted: None,
        }
    }
}

/// The directives that govern a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    /// From the first valid targeted field, or else from `Cache-Control`.
    pub cc: CacheControl,
    /// They came from a targeted field: `Expires` is ignored too (RFC 9213 §2.1).
    pub targeted: bool,
}

impl<'a> Rules<'a> {
    /// The mode with the layer's targeted fields.
    pub fn new(mode: &'a PolicyMode, targeted: &'a Targeted) -> Self {
        Rules {
            mode,
            targeted: Some(targeted),
        }
    }

    /// The target list in force: empty unless the mode is [`PolicyMode::Shared`].
    fn target_list(&self) -> &'a [HeaderName] {
        match (self.mode, self.targeted) {
            (PolicyMode::Shared, Some(t)) => &t.names,
            _ => &[],
        }
    }

    /// The directives of `headers` under these rules (RFC 9213 §2.1).
    pub fn response_directives(&self, headers: &HeaderMap) -> ResponseDirectives {
        for name in self.target_list() {
            if let Some(cc) = parse_targeted(headers, name) {
                return ResponseDirectives { cc, targeted: true };
            }
        }
        ResponseDirectives {
            cc: CacheControl::parse(headers),
            targeted: false,
        }
    }

    /// Removes the target list's fields from a response on its way to a client, when the
    /// layer was told to. Stored entries keep them, so a stored entry's freshness and
    /// revalidation are judged by the same field that decided its storing.
    pub fn strip_targeted(&self, headers: &mut HeaderMap) {
        if self.targeted.is_some_and(|t| t.strip) {
            for name in self.target_list() {
                headers.remove(name);
            }
        }
    }
}

/// One targeted field's directives, or `None` when it is absent, empty or not a valid
/// Dictionary (RFC 9213 §2.2: then it is ignored).
fn parse_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut joined = Vec::new();
    // RFC 9651 §4.2: the lines of a field are one value joined with commas.
    for (i, line) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(line.as_bytes());
    }
    if joined.is_empty() {
        return None;
    }
    let dict: Dictionary = Parser::new(&joined).parse().ok()?;
    if dict.is_empty() {
        return None;
    }
    let mut cc = CacheControl::default();
    for (key, member) in &dict {
        match directive_arg(member) {
            Arg::Absent => {}
            Arg::Flag => cc.apply(key.as_str(), None),
            Arg::Value(v) => cc.apply(key.as_str(), Some(&v)),
        }
    }
    Some(cc)
}

/// A Dictionary member as a cache directive's argument.
enum Arg {
    /// `?0`: the directive is not given.
    Absent,
    /// A bare name (Boolean true): the directive without an argument.
    Flag,
    /// An argument, in the textual form the directive parser reads. A type no directive
    /// takes (decimal, byte sequence, inner list...) becomes an empty value, which every
    /// delta-seconds directive reads as invalid (`max-age` then means stale).
    Value(String),
}

fn directive_arg(member: &ListEntry) -> Arg {
    let ListEntry::Item(item) = member else {
        return Arg::Value(String::new());
    };
    match &item.bare_item {
        BareItem::Boolean(false) => Arg::Absent,
        BareItem::Boolean(true) => Arg::Flag,
        BareItem::Integer(i) => Arg::Value(i.to_string()),
        BareItem::String(s) => Arg::Value(s.as_str().to_owned()),
        BareItem::Token(t) => Arg::Value(t.as_str().to_owned()),
        _ => Arg::Value(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn targeted(names: &[&str]) -> Targeted {
        Targeted {
            names: names
                .iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
                .collect(),
            strip: true,
        }
    }

    #[test]
    fn first_valid_field_of_the_target_list_wins() {
        let t = targeted(&["daramjwee-cache-control", "cdn-cache-control"]);
        let rules = Rules::new(&PolicyMode::Shared, &t);
        let h = headers(&[
            ("cache-control", "max-age=1"),
            ("cdn-cache-control", "max-age=20"),
            ("daramjwee-cache-control", "max-age=300, must-revalidate"),
        ]);
        let d = rules.response_directives(&h);
        assert!(d.targeted);
        assert_eq!(d.cc.max_age, Some(300));
        assert!(d.cc.must_revalidate);
        let h = headers(&[
            ("cache-control", "max-age=1"),
            ("cdn-cache-control", "max-age=20"),
        ]);
        assert_eq!(rules.response_directives(&h).cc.max_age, Some(20));
    }

    #[test]
    fn an_invalid_or_empty_field_is_skipped() {
        let t = targeted(&["daramjwee-cache-control", "cdn-cache-control"]);
        let rules = Rules::new(&PolicyMode::Shared, &t);
        for bad in ["Max-Age=60", "max-age=\"6", "max-age=60,", "", "  "] {
            let h = headers(&[
                ("cache-control", "max-age=1"),
                ("daramjwee-cache-control", bad),
                ("cdn-cache-control", "max-age=20"),
            ]);
            assert_eq!(
                rules.response_directives(&h).cc.max_age,
                Some(20),
                "{bad:?}"
            );
        }
        let h = headers(&[
            ("cache-control", "max-age=1"),
            ("cdn-cache-control", "max-age=;"),
        ]);
        let d = rules.response_directives(&h);
        assert!(!d.targeted);
        assert_eq!(d.cc.max_age, Some(1));
    }

    #[test]
    fn dictionary_members_map_to_directives() {
        let t = targeted(&["cdn-cache-control"]);
        let rules = Rules::new(&PolicyMode::Shared, &t);
        let h = headers(&[
            ("cdn-cache-control", "no-store=?0, private=\"set-cookie\""),
            (
                "cdn-cache-control",
                "s-maxage=-5, stale-while-revalidate=1.5, public",
            ),
        ]);
        let cc = rules.response_directives(&h).cc;
        assert!(!cc.no_store && !cc.private && cc.public);
        assert_eq!(cc.private_fields, vec!["set-cookie".to_owned()]);
        // Values of the wrong type or sign are invalid: a lifetime of 0.
        assert_eq!((cc.s_maxage, cc.stale_while_revalidate), (Some(0), Some(0)));
    }

    #[test]
    fn only_shared_mode_has_a_target_list_and_strips() {
        let t = targeted(&["cdn-cache-control"]);
        let h = headers(&[
            ("cache-control", "max-age=1"),
            ("cdn-cache-control", "max-age=20"),
        ]);
        for mode in [PolicyMode::Private, PolicyMode::default()] {
            let rules = Rules::new(&mode, &t);
            let shared = mode == PolicyMode::Shared;
            assert_eq!(rules.response_directives(&h).targeted, shared);
            let mut out = h.clone();
            rules.strip_targeted(&mut out);
            assert_eq!(out.contains_key("cdn-cache-control"), !shared);
            assert!(out.contains_key("cache-control"));
        }
        let plain = Rules::from(&PolicyMode::Shared);
        assert!(!plain.response_directives(&h).targeted);
    }
}
