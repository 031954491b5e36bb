//! The two small objects of the purge log, in checksummed binary records: a purge (one log entry)
//! and the checkpoint (the log's retained range and the prefix floors that outlive it).

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};

const RECORD_MAGIC: &[u8; 4] = b"DJP1";
const CHECKPOINT_MAGIC: &[u8; 4] = b"DJC1";
/// magic + crc32.
const FRAME: usize = 8;
/// A log object larger than this is not ours (keys are bounded by the codec's limits).
pub(super) const MAX_OBJECT_LEN: u64 = 16 << 20;

/// What one purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purge {
    /// One cache key.
    Key(String),
    /// Every key starting with this prefix (a URL and its variants, a path, a host).
    Prefix(String),
    /// Everything.
    All,
}

/// One entry of the purge log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    /// When the purge was requested (the purging instance's clock): the floor it sets.
    pub(super) at: SystemTime,
    /// The instance that wrote it (it applied the purge itself before writing).
    pub(super) origin: u64,
    pub(super) purge: Purge,
}

/// The log's bookkeeping object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Checkpoint {
    /// The first sequence number still in the log: earlier ones were compacted away.
    pub(super) oldest: u64,
    /// A sequence number at or below the log's head, where a new instance starts reading.
    pub(super) head: u64,
    /// When the log was last compacted.
    pub(super) compacted_at: Option<SystemTime>,
    /// Prefix purges that outlive their log entries (until the store's TTL retires them).
    pub(super) floors: Vec<(String, SystemTime)>,
}

/// What was wrong with a purge log object that is not a well-formed record of ours.
#[derive(Debug, thiserror::Error)]
#[error("malformed purge log object: {0}")]
pub struct MalformedLogObject(pub(super) &'static str);

fn micros(t: SystemTime) -> u64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn time(micros: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros)
}

fn frame(magic: &[u8; 4], rest: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME + rest.len());
    out.put_slice(magic);
    out.put_u32_le(crc32fast::hash(rest));
    out.put_slice(rest);
    out.freeze()
}

fn unframe<'a>(magic: &[u8; 4], buf: &'a [u8]) -> Result<&'a [u8], MalformedLogObject> {
    if buf.len() < FRAME || &buf[..4] != magic {
        return Err(MalformedLogObject("bad magic"));
    }
    let rest = &buf[FRAME..];
    if crc32fast::hash(rest) != u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) {
        return Err(MalformedLogObject("checksum mismatch"));
    }
    Ok(rest)
}

fn take_u64(b: &mut &[u8]) -> Result<u64, MalformedLogObject> {
    b.try_get_u64_le()
        .map_err(|_| MalformedLogObject("truncated"))
}

fn take_str(b: &mut &[u8], len: usize) -> Result<String, MalformedLogObject> {
    let bytes = b.get(..len).ok_or(MalformedLogObject("truncated"))?;
    let s = std::str::from_utf8(bytes).map_err(|_| MalformedLogObject("not UTF-8"))?;
    b.advance(len);
    Ok(s.to_owned())
}

impl Record {
    pub(super) fn encode(&self) -> Bytes {
        let (kind, value) = match &self.purge {
            Purge::Key(k) => (0u8, k.as_str()),
            Purge::Prefix(p) => (1, p.as_str()),
            Purge::All => (2, ""),
        };
        let mut rest = BytesMut::with_capacity(17 + value.len());
        rest.put_u64_le(micros(self.at));
        rest.put_u64_le(self.origin);
        rest.put_u8(kind);
        rest.put_slice(value.as_bytes());
        frame(RECORD_MAGIC, &rest)
    }

    pub(super) fn decode(buf: &[u8]) -> Result<Self, MalformedLogObject> {
        let mut b = unframe(RECORD_MAGIC, buf)?;
        let at = time(take_u64(&mut b)?);
        let origin = take_u64(&mut b)?;
        let kind = b
            .try_get_u8()
            .map_err(|_| MalformedLogObject("truncated"))?;
        let len = b.len();
        let value = take_str(&mut b, len)?;
        let purge = match kind {
            0 => Purge::Key(value),
            1 => Purge::Prefix(value),
            2 if value.is_empty() => Purge::All,
            _ => return Err(MalformedLogObject("bad purge kind")),
        };
        Ok(Record { at, origin, purge })
    }
}

impl Checkpoint {
    pub(super) fn encode(&self) -> Bytes {
        let mut rest = BytesMut::new();
        rest.put_u64_le(self.oldest);
        rest.put_u64_le(self.head);
        rest.put_u64_le(self.compacted_at.map_or(0, micros));
        rest.put_u32_le(u32::try_from(self.floors.len()).unwrap_or(u32::MAX));
        for (prefix, at) in &self.floors {
            rest.put_u64_le(micros(*at));
            rest.put_u32_le(u32::try_from(prefix.len()).unwrap_or(u32::MAX));
            rest.put_slice(prefix.as_bytes());
        }
        frame(CHECKPOINT_MAGIC, &rest)
    }

    pub(super) fn decode(buf: &[u8]) -> Result<Self, MalformedLogObject> {
        let mut b = unframe(CHECKPOINT_MAGIC, buf)?;
        let oldest = take_u64(&mut b)?;
        let head = take_u64(&mut b)?;
        let compacted_at = Some(take_u64(&mut b)?).filter(|&m| m != 0).map(time);
        let n = b
            .try_get_u32_le()
            .map_err(|_| MalformedLogObject("truncated"))?;
        let mut floors = Vec::new();
        for _ in 0..n {
            let at = time(take_u64(&mut b)?);
            let len = b
                .try_get_u32_le()
                .map_err(|_| MalformedLogObject("truncated"))?;
            floors.push((take_str(&mut b, len as usize)?, at));
        }
        if !b.is_empty() {
            return Err(MalformedLogObject("trailing bytes"));
        }
        Ok(Checkpoint {
            oldest,
            head,
            compacted_at,
            floors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(micros: u64) -> SystemTime {
        time(micros)
    }

    #[test]
    fn records_round_trip_and_reject_every_bit_flip_and_truncation() {
        for purge in [
            Purge::Key("http://a/b?c".into()),
            Purge::Prefix("http://a/".into()),
            Purge::All,
        ] {
            let r = Record {
                at: t(1_700_000_000_123_456),
                origin: 42,
                purge,
            };
            let buf = r.encode();
            assert_eq!(Record::decode(&buf).unwrap(), r);
            for i in 0..buf.len() {
                let mut bad = buf.to_vec();
                bad[i] ^= 0x04;
                assert!(Record::decode(&bad).is_err(), "flip at {i}");
            }
            for n in 0..buf.len() {
                assert!(Record::decode(&buf[..n]).is_err());
            }
        }
    }

    #[test]
    fn checkpoints_round_trip() {
        let c = Checkpoint {
            oldest: 7,
            head: 19,
            compacted_at: Some(t(5)),
            floors: vec![("http://a/".into(), t(9)), (String::new(), t(3))],
        };
        assert_eq!(Checkpoint::decode(&c.encode()).unwrap(), c);
        assert_eq!(
            Checkpoint::decode(&Checkpoint::default().encode()).unwrap(),
            Checkpoint::default()
        );
        let buf = c.encode();
        assert!(Checkpoint::decode(&buf[..buf.len() - 1]).is_err());
    }
}
