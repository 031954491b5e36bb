//! A compact, checksummed binary encoding of an entry's key and [`Metadata`], shared by the stores
//! that persist entries (the file tier, the object-store tier).
//!
//! Decoding never panics and never trusts a length it has not bounds-checked: a corrupt or hostile
//! record yields [`DecodeError`], which stores report as [`StoreError::Corrupt`](crate::StoreError).
//!
//! Layout (all integers little-endian):
//! `magic "DJM1" | u32 len | payload (len bytes) | u32 crc32(payload)`; the payload holds the key,
//! the status, the kind, timestamps, validators, the body length and the headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::entry::{EntryKind, Metadata};

const MAGIC: &[u8; 4] = b"DJM1";
/// Upper bound on an encoded metadata payload; anything larger is treated as corrupt.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Why a metadata record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid metadata record: {0}")]
pub struct DecodeError(pub &'static str);

/// Length of the fixed frame around the payload (magic, length, checksum).
pub const FRAME_OVERHEAD: usize = 12;

/// Encodes `key` and `meta` into a self-delimiting, checksummed record.
pub fn encode(key: &str, meta: &Metadata) -> Vec<u8> {
    let mut p = Vec::with_capacity(128 + key.len() + meta.headers.len() * 48);
    put_bytes(&mut p, key.as_bytes());
    p.extend_from_slice(&meta.status.as_u16().to_le_bytes());
    p.push(match meta.kind {
        EntryKind::Positive => 0,
        EntryKind::Negative => 1,
    });
    p.extend_from_slice(&micros(meta.stored_at).to_le_bytes());
    put_opt_u64(&mut p, meta.fresh_until.map(micros));
    put_opt_u64(&mut p, meta.stale_for.map(|d| d.as_micros() as u64));
    put_opt_u64(&mut p, meta.last_modified.map(micros));
    put_opt_u64(&mut p, meta.content_length);
    match &meta.etag {
        Some(e) => {
            p.push(1);
            put_bytes(&mut p, e.as_bytes());
        }
        None => p.push(0),
    }
    p.extend_from_slice(&(meta.headers.len() as u32).to_le_bytes());
    for (name, value) in meta.headers.iter() {
        put_bytes(&mut p, name.as_str().as_bytes());
        put_bytes(&mut p, value.as_bytes());
    }

    let mut out = Vec::with_capacity(p.len() + FRAME_OVERHEAD);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&p);
    out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
    out
}

/// Reads the total record length (frame included) from the first 8 bytes of a record.
pub fn record_len(prefix: &[u8]) -> Result<usize, DecodeError> {
    if prefix.len() < 8 {
        return Err(DecodeError("short record header"));
    }
    if &prefix[..4] != MAGIC {
        return Err(DecodeError("bad magic"));
    }
    let len = u32::from_le_bytes(prefix[4..8].try_into().unwrap()) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError("payload too large"));
    }
    Ok(len + FRAME_OVERHEAD)
}

/// Decodes a record produced by [`encode`]; `buf` must hold exactly one record.
pub fn decode(buf: &[u8]) -> Result<(String, Metadata), DecodeError> {
    let total = record_len(buf)?;
    if buf.len() != total {
        return Err(DecodeError("record length mismatch"));
    }
    let payload = &buf[8..total - 4];
    let crc = u32::from_le_bytes(buf[total - 4..].try_into().unwrap());
    if crc32fast::hash(payload) != crc {
        return Err(DecodeError("checksum mismatch"));
    }
    let mut r = Reader { buf: payload };
    let key = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("key not UTF-8"))?;
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError("invalid status code"))?;
    let kind = match r.u8()? {
        0 => EntryKind::Positive,
        1 => EntryKind::Negative,
        _ => return Err(DecodeError("invalid entry kind")),
    };
    let stored_at = from_micros(r.u64()?);
    let fresh_until = r.opt_u64()?.map(from_micros);
    let stale_for = r.opt_u64()?.map(Duration::from_micros);
    let last_modified = r.opt_u64()?.map(from_micros);
    let content_length = r.opt_u64()?;
    let etag = match r.u8()? {
        0 => None,
        1 => Some(
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("etag not UTF-8"))?,
        ),
        _ => return Err(DecodeError("invalid etag flag")),
    };
    let count = r.u32()? as usize;
    // Each header needs at least 8 bytes of lengths: reject counts the payload cannot hold.
    if count > r.buf.len() / 8 {
        return Err(DecodeError("header count exceeds record"));
    }
    let mut headers = HeaderMap::with_capacity(count);
    for _ in 0..count {
        let name =
            HeaderName::from_bytes(r.bytes()?).map_err(|_| DecodeError("invalid header name"))?;
        let value =
            HeaderValue::from_bytes(r.bytes()?).map_err(|_| DecodeError("invalid header value"))?;
        headers.append(name, value);
    }
    if !r.buf.is_empty() {
        return Err(DecodeError("trailing bytes in record"));
    }
    let meta = Metadata {
        status,
        headers,
        etag,
        last_modified,
        stored_at,
        fresh_until,
        stale_for,
        kind,
        content_length,
    };
    Ok((key, meta))
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

fn from_micros(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("truncated record"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(DecodeError("invalid option flag")),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("set-thing", HeaderValue::from_static("a"));
        headers.append("set-thing", HeaderValue::from_static("b"));
        Metadata::new(StatusCode::NOT_FOUND)
            .with_headers(headers)
            .with_etag("W/\"x\"")
            .with_ttl(Duration::from_secs(5))
            .with_content_length(42)
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let meta = sample();
        let buf = encode("https://ex.test/a?b=c#ü", &meta);
        let (key, back) = decode(&buf).unwrap();
        assert_eq!(key, "https://ex.test/a?b=c#ü");
        // Timestamps are kept to the microsecond.
        assert_eq!(micros(back.stored_at), micros(meta.stored_at));
        assert_eq!(back.status, meta.status);
        assert_eq!(back.headers, meta.headers);
        assert_eq!(back.etag, meta.etag);
        assert_eq!(back.content_length, Some(42));
        assert_eq!(record_len(&buf).unwrap(), buf.len());
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let buf = encode("k", &sample());
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x41;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn truncated_and_garbage_records_are_errors_not_panics() {
        let buf = encode("k", &sample());
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err());
        }
        assert!(decode(&[0xff; 64]).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(record_len(&huge).is_err());
    }
}
