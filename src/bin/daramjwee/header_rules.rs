//! Per-site header rules: set, append or remove request headers sent upstream and response
//! headers sent to clients, like nginx's `proxy_set_header` and `add_header`.
//!
//! Request rules run on the request sent upstream, after the cache key is computed, so they
//! never change the key: a header they remove still splits the cache if it was keyed (through
//! `Vary` or `forward_target_headers`), and a header they set is the same for every client that
//! shares an entry unless its value names the client (`$client_addr`, `$request_id`), which is
//! then the proxy's own statement, like `X-Forwarded-For`. Response rules run on every
//! response the site sends, hits included, and never on what is stored. Rules may not touch
//! the fields that frame a message or route it (`Host`, `Content-Length`, hop-by-hop fields):
//! a rule must never make the proxy send a wrong or truncated body.

use std::net::SocketAddr;

use daramjwee::http::is_hop_by_hop;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

/// One rule as written in the configuration:
/// `{ set = "x-a", value = "v" }`, `{ append = "x-a", value = "v" }` or `{ remove = "x-a" }`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    set: Option<String>,
    append: Option<String>,
    remove: Option<String>,
    value: Option<String>,
}

/// A piece of a value template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    ClientAddr,
    RequestId,
    Site,
}

/// A header value, possibly naming the client address, the request id or the site.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// No variable: rendered once, at startup.
    Fixed(HeaderValue),
    /// Rendered per request.
    Template(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Set(Value),
    Append(Value),
    Remove,
}

/// What a rule's value may name about the exchange.
#[derive(Debug, Default)]
pub struct RuleContext<'a> {
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The request id, if requests get one.
    pub request_id: Option<&'a HeaderValue>,
    /// The site's name.
    pub site: &'a str,
}

/// A site's rules for one direction, applied in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    rules: Vec<(HeaderName, Action)>,
}

impl HeaderRules {
    /// Checks and compiles `rules`; the error names the rule (1-based) and what is wrong.
    pub fn parse(rules: &[RuleFile]) -> Result<HeaderRules, String> {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(i, r)| compile(r).map_err(|e| format!("rule {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(HeaderRules { rules: compiled })
    }

    /// Whether there are no rules (then nothing needs to be captured for them).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies the rules to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap, cx: &RuleContext<'_>) {
        for (name, action) in &self.rules {
            match action {
                Action::Remove => {
                    headers.remove(name);
                }
                Action::Set(v) => {
                    if let Some(v) = render(v, cx) {
                        headers.insert(name.clone(), v);
                    }
                }
                Action::Append(v) => {
                    if let Some(v) = render(v, cx) {
                        headers.append(name.clone(), v);
                    }
                }
            }
        }
    }
}

fn compile(r: &RuleFile) -> Result<(HeaderName, Action), String> {
    let (name, kind) = match (&r.set, &r.append, &r.remove) {
        (Some(n), None, None) => (n, "set"),
        (None, Some(n), None) => (n, "append"),
        (None, None, Some(n)) => (n, "remove"),
        _ => return Err("needs exactly one of `set`, `append`, `remove`".into()),
    };
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a header name"))?;
    if name == header::HOST || name == header::CONTENT_LENGTH || is_hop_by_hop(&name) {
        return Err(format!(
            "`{name}` frames or routes the message; rules may not change it"
        ));
    }
    let action = match (kind, &r.value) {
        ("remove", None) => Action::Remove,
        ("remove", Some(_)) => return Err("`remove` takes no `value`".into()),
        (_, None) => return Err(format!("`{kind}` needs a `value`")),
        ("set", Some(v)) => Action::Set(parse_value(v)?),
        (_, Some(v)) => Action::Append(parse_value(v)?),
    };
    Ok((name, action))
}

/// Splits `$client_addr`, `$request_id` and `$site` out of a value; `$$` is a literal `$`.
fn parse_value(s: &str) -> Result<Value, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let var = [
            ("client_addr", Part::ClientAddr),
            ("request_id", Part::RequestId),
            ("site", Part::Site),
            ("$", Part::Literal("$".into())),
        ]
        .into_iter()
        .find(|(name, _)| rest.starts_with(name));
        match var {
            Some((_, Part::Literal(l))) => lit.push_str(&l),
            Some((name, part)) => {
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                parts.push(part);
                rest = &rest[name.len()..];
                continue;
            }
            None => {
                return Err(format!(
                    "value `{s}`: unknown variable (use $client_addr, $request_id, $site, or $$)"
                ))
            }
        }
        rest = &rest[1..];
    }
    lit.push_str(rest);
    HeaderValue::from_str(&lit).map_err(|_| format!("value `{s}` is not a valid header value"))?;
    if parts.is_empty() {
        return Ok(Value::Fixed(
            HeaderValue::from_str(&lit).map_err(|e| e.to_string())?,
        ));
    }
    if !lit.is_empty() {
        parts.push(Part::Literal(lit));
    }
    Ok(Value::Template(parts))
}

/// The value for this exchange; `None` (the rule is skipped) when a variable it names has no
/// value here, e.g. `$request_id` with request ids off.
fn render(v: &Value, cx: &RuleContext<'_>) -> Option<HeaderValue> {
    let parts = match v {
        Value::Fixed(v) => return Some(v.clone()),
        Value::Template(parts) => parts,
    };
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Literal(l) => out.push_str(l),
            Part::ClientAddr => out.push_str(&cx.client?.ip().to_string()),
            Part::RequestId => out.push_str(cx.request_id?.to_str().ok()?),
            Part::Site => out.push_str(cx.site),
        }
    }
    HeaderValue::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml: &str) -> Result<HeaderRules, String> {
        #[derive(Deserialize)]
        struct F {
            r: Vec<RuleFile>,
        }
        HeaderRules::parse(&toml::from_str::<F>(toml).unwrap().r)
    }

    #[test]
    fn rules_set_append_and_remove_in_order_with_variables() {
        let r = rules(
            r#"r = [
                { set = "x-client", value = "ip=$client_addr" },
                { append = "via", value = "1.1 $site ($request_id) $$5" },
                { remove = "x-debug" },
                { set = "x-fixed", value = "1" },
            ]"#,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("via", HeaderValue::from_static("1.0 front"));
        h.insert("x-debug", HeaderValue::from_static("on"));
        let id = HeaderValue::from_static("r-7");
        let cx = RuleContext {
            client: Some("192.0.2.9:1234".parse().unwrap()),
            request_id: Some(&id),
            site: "web",
        };
        r.apply(&mut h, &cx);
        assert_eq!(h["x-client"], "ip=192.0.2.9");
        let via: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(via, ["1.0 front", "1.1 web (r-7) $5"]);
        assert!(!h.contains_key("x-debug"));
        assert_eq!(h["x-fixed"], "1");

        // A variable with no value here skips its rule rather than sending a half value.
        let mut h = HeaderMap::new();
        r.apply(
            &mut h,
            &RuleContext {
                site: "web",
                ..Default::default()
            },
        );
        assert!(!h.contains_key("x-client") && !h.contains_key("via"));
    }

    #[test]
    fn bad_rules_are_refused_with_their_position() {
        for (toml, why) in [
            (r#"r = [{ set = "x-a" }]"#, "rule 1: `set` needs a `value`"),
            (
                r#"r = [{ remove = "x-a", value = "v" }]"#,
                "rule 1: `remove` takes no `value`",
            ),
            (
                r#"r = [{ set = "x-a", append = "x-b", value = "v" }]"#,
                "exactly one",
            ),
            (
                r#"r = [{ remove = "x-a" }, { set = "host", value = "h" }]"#,
                "rule 2: `host`",
            ),
            (r#"r = [{ remove = "content-length" }]"#, "frames or routes"),
            (r#"r = [{ remove = "connection" }]"#, "frames or routes"),
            (
                r#"r = [{ set = "x-a", value = "$nope" }]"#,
                "unknown variable",
            ),
            (r#"r = [{ set = "x a", value = "v" }]"#, "not a header name"),
            (
                r#"r = [{ set = "x-a", value = "a\nb" }]"#,
                "not a valid header value",
            ),
        ] {
            let e = rules(toml).unwrap_err();
            assert!(e.contains(why), "{toml}: {e}");
        }
    }
}
