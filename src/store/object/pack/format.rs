//! The bytes of a pack: a data object holding many small entries back to back, and its index
//! object, which says where each entry starts and how to check it.
//!
//! ```text
//! <name>.pack   entry*            entry = u32 record length | codec record (key + Metadata) | body
//! <name>.idx    "DJX1" | crc32 | (sha256(key) 32 B | offset u64 | length u32 | crc32 u32 | stored_at µs u64)*
//! ```
//!
//! An entry is read with one ranged GET of `offset..offset + length` and checked against its
//! crc32 and its key before a byte is served.

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::entry::Metadata;
use crate::store::codec;

const INDEX_MAGIC: &[u8; 4] = b"DJX1";
const INDEX_ENTRY: usize = 32 + 8 + 4 + 4 + 8;

/// The SHA-256 of a key: what the index is keyed by.
pub(super) type KeyDigest = [u8; 32];

pub(super) fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// Where one entry lives in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) crc: u32,
    pub(super) stored_at: SystemTime,
}

/// A pack being assembled.
#[derive(Debug, Default)]
pub(super) struct PackBuilder {
    data: BytesMut,
    index: Vec<(KeyDigest, Slot)>,
}

/// An index or entry that is not ours, or damaged.
#[derive(Debug, thiserror::Error)]
#[error("malformed pack: {0}")]
pub(super) struct MalformedPack(pub(super) &'static str);

fn micros(t: SystemTime) -> u64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl PackBuilder {
    /// Appends an entry; returns where it went.
    pub(super) fn push(&mut self, key: &str, meta: &Metadata, body: &[u8]) -> (KeyDigest, Slot) {
        let record = codec::encode(key, meta);
        let start = self.data.len();
        self.data
            .put_u32_le(u32::try_from(record.len()).unwrap_or(u32::MAX));
        self.data.put_slice(&record);
        self.data.put_slice(body);
        let bytes = &self.data[start..];
        let slot = Slot {
            offset: start as u64,
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            crc: crc32fast::hash(bytes),
            stored_at: meta.stored_at,
        };
        let d = digest(key);
        self.index.push((d, slot));
        (d, slot)
    }

    pub(super) fn len(&self) -> usize {
        self.data.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The data object and the index object.
    pub(super) fn finish(self) -> (Bytes, Bytes) {
        (self.data.freeze(), encode_index(&self.index))
    }
}

fn encode_index(index: &[(KeyDigest, Slot)]) -> Bytes {
    let mut rest = BytesMut::with_capacity(index.len() * INDEX_ENTRY);
    for (d, s) in index {
        rest.put_slice(d);
        rest.put_u64_le(s.offset);
        rest.put_u32_le(s.len);
        rest.put_u32_le(s.crc);
        rest.put_u64_le(micros(s.stored_at));
    }
    let mut out = BytesMut::with_capacity(8 + rest.len());
    out.put_slice(INDEX_MAGIC);
    out.put_u32_le(crc32fast::hash(&rest));
    out.put_slice(&rest);
    out.freeze()
}

/// Decodes an index object.
pub(super) fn decode_index(buf: &[u8]) -> Result<Vec<(KeyDigest, Slot)>, MalformedPack> {
    if buf.len() < 8 || &buf[..4] != INDEX_MAGIC {
        return Err(MalformedPack("bad index magic"));
    }
    let mut rest = &buf[8..];
    if crc32fast::hash(rest) != u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) {
        return Err(MalformedPack("index checksum mismatch"));
    }
    if rest.len() % INDEX_ENTRY != 0 {
        return Err(MalformedPack("index length"));
    }
    let mut out = Vec::with_capacity(rest.len() / INDEX_ENTRY);
    while !rest.is_empty() {
        let mut d = [0; 32];
        rest.copy_to_slice(&mut d);
        let offset = rest.get_u64_le();
        let len = rest.get_u32_le();
        let crc = rest.get_u32_le();
        let stored_at = SystemTime::UNIX_EPOCH + Duration::from_micros(rest.get_u64_le());
        out.push((
            d,
            Slot {
                offset,
                len,
                crc,
                stored_at,
            },
        ));
    }
    Ok(out)
}

/// Checks an entry read back at `slot` and splits it into its key, metadata and body.
pub(super) fn decode_entry(
    buf: Bytes,
    slot: &Slot,
) -> Result<(String, Metadata, Bytes), MalformedPack> {
    if buf.len() != slot.len as usize || crc32fast::hash(&buf) != slot.crc {
        return Err(MalformedPack("entry checksum mismatch"));
    }
    let record_len = u32::from_le_bytes(
        buf.get(..4)
            .ok_or(MalformedPack("short entry"))?
            .try_into()
            .map_err(|_| MalformedPack("short entry"))?,
    ) as usize;
    let record = buf
        .get(4..4 + record_len)
        .ok_or(MalformedPack("entry record out of bounds"))?;
    let (key, meta) = codec::decode(record).map_err(|e| MalformedPack(e.0))?;
    let body = buf.slice(4 + record_len..);
    if meta.content_length != Some(body.len() as u64) {
        return Err(MalformedPack("entry body length"));
    }
    Ok((key, meta, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_index_round_trip_and_damage_is_detected() {
        let mut p = PackBuilder::default();
        let mut meta = Metadata::new(http::StatusCode::OK).with_content_length(3);
        meta.stored_at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001);
        let (d1, s1) = p.push("a", &meta, b"abc");
        let (d2, s2) = p.push("b", &meta, b"xyz");
        let (data, index) = p.finish();
        assert_eq!(decode_index(&index).unwrap(), vec![(d1, s1), (d2, s2)]);
        let range =
            |s: &Slot| data.slice(s.offset as usize..(s.offset + u64::from(s.len)) as usize);
        let (key, m, body) = decode_entry(range(&s2), &s2).unwrap();
        assert_eq!((key.as_str(), m, &body[..]), ("b", meta, &b"xyz"[..]));
        let mut bad = range(&s1).to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode_entry(bad.into(), &s1).is_err());
        assert!(decode_entry(range(&s1), &s2).is_err(), "the wrong slot");
        let mut bad = index.to_vec();
        bad[20] ^= 1;
        assert!(decode_index(&bad).is_err());
    }
}
