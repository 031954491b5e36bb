//! The `Cache-Status` response header (RFC 9211), and the other values rendered per response
//! (`Age`, `Content-Length`).

use std::cell::RefCell;
use std::fmt::Write;

use bytes::Bytes;
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
            s.push_str("; fwd=");
            s.push_str(f);
        }
        if let Some(st) = self.fwd_status {
            s.push_str("; fwd-status=");
            s.push_u64(st.into());
        }
        if let Some(t) = self.ttl {
            s.push_str("; ttl=");
            if t < 0 {
                s.push_str("-");
            }
            s.push_u64(t.unsigned_abs());
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            s.push_str("; detail=");
            s.push_str(d);
        }
        // Only ASCII tokens and digits are written above; a detail too long for the buffer
        // (a custom store's name) leaves the bare name rather than a cut field.
        let value = if s.overflow { None } else { s.into_value() };
        value.unwrap_or_else(|| HeaderValue::from_static(CACHE_NAME))
    }
}

/// A decimal header value (`Age`, `Content-Length`), rendered on the stack and shared through
/// [`StackStr::into_value`] (`From<u64>` for `HeaderValue` allocates twice, every time).
pub(crate) fn decimal_header(n: u64) -> HeaderValue {
    let mut s = StackStr::default();
    // 20 digits at most: always fits.
    s.push_u64(n);
    s.into_value().unwrap_or_else(|| HeaderValue::from(n))
}

/// Sets of the per-thread table of recent header values (see [`StackStr::into_value`]). A
/// power of two: [`recent_set`] takes a hash's top bits.
const RECENT_SETS: usize = 8;
const _: () = assert!(RECENT_SETS.is_power_of_two());
/// Values per set: a value is looked for among the few of its set, so several values that
/// hash alike (a hot entry's `Age`, `Cache-Status` and `Content-Length`) never evict each
/// other on every request, as they would in a direct-mapped table.
const RECENT_WAYS: usize = 4;

/// Header values one thread made lately: a hot entry's hits send the same `Content-Length`,
/// and the same `Age` and `Cache-Status` within a second.
struct Recent {
    values: [[Option<HeaderValue>; RECENT_WAYS]; RECENT_SETS],
    /// Per set, the way the next new value replaces (round robin).
    next: [u8; RECENT_SETS],
}

/// The set of the recent values where a value of these bytes is kept. Eight bytes at a time:
/// a byte loop over a whole `Cache-Status` cost about as much as the rest of the lookup.
fn recent_set(bytes: &[u8]) -> usize {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunks = bytes.chunks_exact(8);
    let mut hash = bytes.len() as u64;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        hash = (hash ^ word).wrapping_mul(K);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    hash = (hash ^ u64::from_le_bytes(last)).wrapping_mul(K);
    // The top bits: the last multiply mixes every input bit into them.
    (hash >> (64 - RECENT_SETS.trailing_zeros())) as usize
}

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            values: [const { [const { None }; RECENT_WAYS] }; RECENT_SETS],
            next: [0; RECENT_SETS],
        })
    };
}

/// A small fixed buffer for header values ([`CacheStatus::to_header`], [`decimal_header`]): the
/// built-in `Cache-Status` fields fit in 128 bytes; a write past the end is refused and
/// remembered (`overflow`) instead of growing the buffer.
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

    /// `n` in decimal, with `itoa` (already in the tree through `http`): `write!` costs several
    /// times more.
    fn push_u64(&mut self, n: u64) {
        let _ = self.write_str(itoa::Buffer::new().format(n));
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The rendered bytes as a header value (`None` if they are not a valid one). A value this
    /// thread made lately with the same bytes is shared (a reference count, no allocation);
    /// otherwise the buffer itself becomes the value's storage, in one allocation.
    fn into_value(self) -> Option<HeaderValue> {
        let bytes = self.as_bytes();
        let set = recent_set(bytes);
        let recent = RECENT.try_with(|r| {
            let r = r.borrow();
            let mut ways = r.values[set].iter().flatten();
            ways.find(|v| v.as_bytes() == bytes).cloned()
        });
        if let Ok(Some(v)) = recent {
            return Some(v);
        }
        let value = HeaderValue::from_maybe_shared(Bytes::from_owner(self)).ok()?;
        let _ = RECENT.try_with(|r| {
            let r = &mut *r.borrow_mut();
            let way = usize::from(r.next[set]) % RECENT_WAYS;
            r.next[set] = r.next[set].wrapping_add(1);
            r.values[set][way] = Some(value.clone());
        });
        Some(value)
    }
}

impl AsRef<[u8]> for StackStr {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
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
        for (ttl, text) in [(0, "0"), (i64::MAX, "9223372036854775807")] {
            let s = CacheStatus {
                ttl: Some(ttl),
                ..Default::default()
            };
            assert_eq!(s.to_header(), format!("daramjwee; ttl={text}").as_str());
        }
        let s = CacheStatus {
            ttl: Some(i64::MIN),
            ..Default::default()
        };
        assert_eq!(
            s.to_header(),
            format!("daramjwee; ttl={}", i64::MIN).as_str()
        );
    }

    #[test]
    fn decimals_are_rendered_and_shared() {
        assert_eq!(decimal_header(0), "0");
        assert_eq!(decimal_header(3600), "3600");
        assert_eq!(decimal_header(u64::MAX), u64::MAX.to_string().as_str());
        // The second value with the same bytes shares the first one's storage.
        let (a, b) = (decimal_header(1024), decimal_header(1024));
        assert_eq!(a, b);
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
    }

    #[test]
    fn values_that_share_a_set_are_all_kept() {
        let set = recent_set(b"0");
        let same: Vec<u64> = (0..10_000u64)
            .filter(|n| recent_set(n.to_string().as_bytes()) == set)
            .take(RECENT_WAYS)
            .collect();
        let first: Vec<HeaderValue> = same.iter().map(|&n| decimal_header(n)).collect();
        for (n, v) in same.iter().zip(&first) {
            let again = decimal_header(*n);
            assert_eq!(&again, v);
            assert_eq!(
                again.as_bytes().as_ptr(),
                v.as_bytes().as_ptr(),
                "{n} was evicted"
            );
        }
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
