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
        // Rendered on the stack and copied once into the value (one allocation per response).
        let mut s = StackStr::default();
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
        // Only ASCII tokens and digits are written above; a detail too long for the buffer
        // (a custom store's name) leaves the bare name rather than a cut field.
        let value = if s.overflow {
            None
        } else {
            HeaderValue::from_bytes(s.as_bytes()).ok()
        };
        value.unwrap_or_else(|| HeaderValue::from_static(CACHE_NAME))
    }
}

/// An `Age` value: the decimal seconds, rendered on the stack and copied once (`From<u64>`
/// for `HeaderValue` allocates twice).
pub(crate) fn age_header(secs: u64) -> HeaderValue {
    let mut s = StackStr::default();
    // 20 digits at most: always fits.
    let _ = write!(s, "{secs}");
    HeaderValue::from_bytes(s.as_bytes()).unwrap_or_else(|_| HeaderValue::from(secs))
}

/// A small fixed buffer for [`CacheStatus::to_header`]: the built-in fields fit in 128 bytes; a
/// write past the end is refused and remembered (`overflow`) instead of growing the buffer.
struct StackStr {
    buf: [u8; 128],
    len: usize,
    overflow: bool,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr {
            buf: [0; 128],
            len: 0,
            overflow: false,
        }
    }
}

impl StackStr {
    fn push_str(&mut self, s: &str) {
        let _ = self.write_str(s);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let Some(dst) = self.buf.get_mut(self.len..end) else {
            self.overflow = true;
            return Err(std::fmt::Error);
        };
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_rendered_in_order() {
        let s = CacheStatus {
            hit: true,
            fwd: Some("stale"),
            fwd_status: Some(304),
            ttl: Some(-12),
            stored: true,
            collapsed: true,
            detail: Some("memory"),
        };
        assert_eq!(
            s.to_header(),
            "daramjwee; hit; fwd=stale; fwd-status=304; ttl=-12; stored; collapsed; detail=memory"
        );
        assert_eq!(CacheStatus::default().to_header(), "daramjwee");
    }

    #[test]
    fn age_is_rendered_in_decimal() {
        assert_eq!(age_header(0), "0");
        assert_eq!(age_header(3600), "3600");
        assert_eq!(age_header(u64::MAX), u64::MAX.to_string().as_str());
    }

    #[test]
    fn a_detail_too_long_for_the_buffer_leaves_the_bare_name() {
        let long: &'static str = Box::leak("x".repeat(200).into_boxed_str());
        let s = CacheStatus {
            hit: true,
            detail: Some(long),
            ..Default::default()
        };
        assert_eq!(s.to_header(), CACHE_NAME);
    }
}
