//! The HTTP face's header decisions (`Cache-Control`, `Vary`, `Range`, conditionals, freshness,
//! storability) on arbitrary request and response headers; invariants are checked inside
//! `daramjwee::__fuzz::http_decisions`.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;

/// Header names the decisions read; `Other` lets the fuzzer try any name.
const NAMES: &[&str] = &[
    "cache-control",
    "pragma",
    "expires",
    "date",
    "age",
    "last-modified",
    "etag",
    "vary",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "authorization",
    "set-cookie",
    "connection",
    "content-length",
    "accept-encoding",
    "accept-language",
    "transfer-encoding",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Other(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Field {
    name: Name,
    value: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    mode: u8,
    method: u8,
    status: u16,
    body_len: u32,
    now_secs: u32,
    req: Vec<Field>,
    res: Vec<Field>,
}

fn headers(fields: &[Field]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for f in fields {
        let name = match &f.name {
            Name::Known(i) => HeaderName::from_static(NAMES[*i as usize % NAMES.len()]),
            Name::Other(b) => match HeaderName::from_bytes(b) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(v) = HeaderValue::from_bytes(&f.value) {
            h.append(name, v);
        }
    }
    h
}

fuzz_target!(|input: Input| {
    let method = match input.method % 4 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        _ => Method::DELETE,
    };
    let Ok(status) = StatusCode::from_u16(input.status % 1000) else {
        return;
    };
    // Around 2001..2137, so HTTP dates in the input can fall on either side of "now".
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000 + u64::from(input.now_secs));
    let _: SystemTime = now;
    daramjwee::__fuzz::http_decisions(
        &daramjwee::__fuzz::mode(input.mode),
        &method,
        &headers(&input.req),
        status,
        &headers(&input.res),
        u64::from(input.body_len),
        now,
    );
});
