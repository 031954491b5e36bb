//! Bad input never panics: random bytes through the metadata decoder, random header values
//! through the `Cache-Control` parser and the layer's request handling.

use daramjwee::http::CacheControl;
use daramjwee::store::codec;
use daramjwee::Metadata;
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn metadata_decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode(&bytes);
        let _ = codec::record_len(&bytes);
    }

    #[test]
    fn metadata_decoder_never_panics_on_mutated_records(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/html"));
        let mut buf = codec::encode("http://x/y", &Metadata::new(StatusCode::OK).with_headers(headers));
        for (at, byte) in flips {
            let i = at % buf.len();
            buf[i] = byte;
        }
        let cut = cut % (buf.len() + 1);
        let _ = codec::decode(&buf[..cut]);
        let _ = codec::decode(&buf);
    }

    #[test]
    fn cache_control_parser_never_panics(value in "[ -~]{0,200}") {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append("cache-control", v);
        }
        let cc = CacheControl::parse(&h);
        // Numbers are clamped, never overflowed.
        prop_assert!(cc.max_age.unwrap_or(0) <= i32::MAX as u64);
    }

    #[test]
    fn cache_control_parser_handles_non_utf8(bytes in proptest::collection::vec(0x80u8..=0xff, 0..64)) {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            h.append("cache-control", v);
        }
        let _ = CacheControl::parse(&h);
    }
}
