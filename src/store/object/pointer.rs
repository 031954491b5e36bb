//! The pointer object of a key: the small record that makes an entry visible (its key, its
//! metadata and the path of its body), or a tombstone left by a purge. Either way it carries the
//! key's *purge floor*: no entry stored before that instant may become visible again.
//!
//! The pointer object is the per-key coordination point between instances sharing a bucket:
//! every change to it is a conditional PUT against the version that was read (see
//! [`commit`](super::commit)), and its floor is what makes a fill that started before a purge
//! lose, even when it commits after the purge on another machine.

use std::time::{Duration, SystemTime};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, UpdateVersion};

use super::layout::Layout;
use super::ops::{backend, corrupt};
use crate::entry::Metadata;
use crate::error::StoreError;
use crate::store::codec;

/// Version 1: a live pointer without a floor (written by earlier releases; still read).
const MAGIC_V1: &[u8; 4] = b"DJO1";
/// Version 2: floor + live pointer or tombstone.
const MAGIC_V2: &[u8; 4] = b"DJO2";
/// magic + crc32.
const FRAME: usize = 8;
/// A pointer larger than this is not ours: refuse to download it.
const MAX_POINTER_LEN: u64 =
    (codec::MAX_PAYLOAD + codec::FRAME_OVERHEAD + FRAME + 11) as u64 + u16::MAX as u64;

/// A decoded live pointer.
#[derive(Debug)]
pub(super) struct Pointer {
    pub(super) key: String,
    pub(super) meta: Metadata,
    pub(super) body: Path,
}

/// What the pointer object of a key hash holds, with the version it was read at.
#[derive(Debug)]
pub(super) struct Slot {
    /// `None`: there is no pointer object (a conditional write must *create* it).
    pub(super) version: Option<UpdateVersion>,
    /// Entries stored at or before this instant were purged. `UNIX_EPOCH` when never purged.
    pub(super) floor: SystemTime,
    /// The live entry, or `None` for an absent key or a tombstone.
    pub(super) entry: Option<Pointer>,
}

impl Slot {
    fn absent() -> Self {
        Slot {
            version: None,
            floor: SystemTime::UNIX_EPOCH,
            entry: None,
        }
    }

    /// Whether an entry stored at `stored_at` was purged by this slot's floor.
    pub(super) fn purges(&self, stored_at: SystemTime) -> bool {
        stored_at <= self.floor
    }
}

fn micros(t: SystemTime) -> u64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn frame(magic: &[u8; 4], rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME + rest.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&crc32fast::hash(rest).to_le_bytes());
    out.extend_from_slice(rest);
    out
}

/// A live pointer record naming `body`, keeping the key's purge `floor`.
pub(super) fn encode_pointer(
    body: &Path,
    key: &str,
    meta: &Metadata,
    floor: SystemTime,
) -> Vec<u8> {
    let record = codec::encode(key, meta);
    let path = body.as_ref().as_bytes();
    let mut rest = Vec::with_capacity(11 + path.len() + record.len());
    rest.extend_from_slice(&micros(floor).to_le_bytes());
    rest.push(1);
    // Paths are built by `Layout::new_body_path` and stay far below 64 KiB.
    rest.extend_from_slice(&(path.len().min(u16::MAX as usize) as u16).to_le_bytes());
    rest.extend_from_slice(path);
    rest.extend_from_slice(&record);
    frame(MAGIC_V2, &rest)
}

/// A tombstone record: no entry, and nothing stored at or before `floor` may come back.
pub(super) fn encode_tombstone(floor: SystemTime) -> Vec<u8> {
    let mut rest = Vec::with_capacity(9);
    rest.extend_from_slice(&micros(floor).to_le_bytes());
    rest.push(0);
    frame(MAGIC_V2, &rest)
}

fn decode_live(rest: &[u8]) -> Result<Pointer, &'static str> {
    let len = rest.get(..2).ok_or("short pointer record")?;
    let path_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    let path_bytes = rest
        .get(2..2 + path_len)
        .ok_or("pointer path out of bounds")?;
    let path = std::str::from_utf8(path_bytes).map_err(|_| "pointer path is not UTF-8")?;
    let body = Path::parse(path).map_err(|_| "invalid pointer path")?;
    let (key, meta) = codec::decode(&rest[2 + path_len..]).map_err(|e| e.0)?;
    Ok(Pointer { key, meta, body })
}

/// Decodes a pointer object into its floor and its live entry (`None`: a tombstone).
pub(super) fn decode_pointer(buf: &[u8]) -> Result<(SystemTime, Option<Pointer>), &'static str> {
    if buf.len() < FRAME {
        return Err("short pointer record");
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let rest = &buf[FRAME..];
    if crc32fast::hash(rest) != crc {
        return Err("pointer checksum mismatch");
    }
    match &buf[..4] {
        m if m == MAGIC_V1 => Ok((SystemTime::UNIX_EPOCH, Some(decode_live(rest)?))),
        m if m == MAGIC_V2 => {
            let head = rest.get(..9).ok_or("short pointer record")?;
            let mut floor = [0; 8];
            floor.copy_from_slice(&head[..8]);
            let floor = SystemTime::UNIX_EPOCH + Duration::from_micros(u64::from_le_bytes(floor));
            match head[8] {
                0 if rest.len() == 9 => Ok((floor, None)),
                1 => Ok((floor, Some(decode_live(&rest[9..])?))),
                _ => Err("bad pointer kind"),
            }
        }
        _ => Err("bad pointer magic"),
    }
}

/// Reads and decodes the pointer object of hash `h`, with the version it was read at.
pub(super) async fn read_slot(
    store: &dyn ObjectStore,
    layout: &Layout,
    key: &str,
    h: &str,
) -> Result<Slot, StoreError> {
    let path = layout.meta_path(h);
    let res = match store.get(&path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(Slot::absent()),
        Err(e) => return Err(backend(key, e)),
    };
    if res.meta.size > MAX_POINTER_LEN {
        return Err(corrupt(
            key,
            format!("pointer object of {} bytes", res.meta.size),
        ));
    }
    let version = UpdateVersion {
        e_tag: res.meta.e_tag.clone(),
        version: res.meta.version.clone(),
    };
    let buf = match res.bytes().await {
        Ok(b) => b,
        // Deleted between the response headers and the body.
        Err(object_store::Error::NotFound { .. }) => return Ok(Slot::absent()),
        Err(e) => return Err(backend(key, e)),
    };
    let (floor, entry) = decode_pointer(&buf).map_err(|reason| corrupt(key, reason))?;
    if let Some(p) = &entry {
        if !layout.owns_body(h, &p.body) {
            return Err(corrupt(
                key,
                format!("pointer names a foreign body path {}", p.body),
            ));
        }
    }
    Ok(Slot {
        version: Some(version),
        floor,
        entry,
    })
}
