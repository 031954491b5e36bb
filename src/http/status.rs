//! The `Cache-Status` response header (RFC 9211).

use std::fmt::Write;

use http::HeaderValue;

/// The name this cache uses in `Cache-Status`.
pub const CACHE_NAME: &str = "daramjwee";

/// What the cache did for one response, rendered as a `Cache-Status` field value.
#[derive(Clone, Debug, Default)]
pub(crate) struct CacheStatus {
    pub hit: bool,
    pub fwd: Option<&'static str>,
    pub fwd_status: Option<u16>,
    pub ttl: Option<i64>,
    pub stored: bool,
    pub collapsed: bool,
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    pub(crate) fn to_header(&self) -> HeaderValue {
        let mut s = String::with_capacity(64);
        s.push_str(CACHE_NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={f}");
        }
        if let Some(st) = self.fwd_status {
            let _ = write!(s, "; fwd-status={st}");
        }
        if let Some(t) = self.ttl {
            let _ = write!(s, "; ttl={t}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            let _ = write!(s, "; detail={d}");
        }
        // Only ASCII tokens and digits are written above.
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}
