//! The pointer object: the small record that makes an entry visible (its key, its metadata and
//! the path of its body), in the checksummed [`codec`](crate::store::codec) format.

use object_store::path::Path;

use super::layout::Layout;
use super::ops::{backend, corrupt};
use crate::entry::Metadata;
use crate::error::StoreError;
use crate::store::codec;

const POINTER_MAGIC: &[u8; 4] = b"DJO1";
/// magic + crc32 + u16 path length.
const POINTER_HEADER: usize = 10;
/// A pointer larger than this is not ours: refuse to download it.
const MAX_POINTER_LEN: u64 =
    (codec::MAX_PAYLOAD + codec::FRAME_OVERHEAD + POINTER_HEADER) as u64 + u16::MAX as u64;

/// A decoded pointer object.
pub(super) struct Pointer {
    pub(super) key: String,
    pub(super) meta: Metadata,
    pub(super) body: Path,
}

pub(super) fn encode_pointer(body: &Path, key: &str, meta: &Metadata) -> Vec<u8> {
    let record = codec::encode(key, meta);
    let path = body.as_ref().as_bytes();
    let mut rest = Vec::with_capacity(2 + path.len() + record.len());
    // Paths are built by `Inner::new_body_path` and stay far below 64 KiB.
    rest.extend_from_slice(&(path.len().min(u16::MAX as usize) as u16).to_le_bytes());
    rest.extend_from_slice(path);
    rest.extend_from_slice(&record);
    let mut out = Vec::with_capacity(8 + rest.len());
    out.extend_from_slice(POINTER_MAGIC);
    out.extend_from_slice(&crc32fast::hash(&rest).to_le_bytes());
    out.extend_from_slice(&rest);
    out
}

pub(super) fn decode_pointer(buf: &[u8]) -> Result<Pointer, &'static str> {
    if buf.len() < POINTER_HEADER {
        return Err("short pointer record");
    }
    if &buf[..4] != POINTER_MAGIC {
        return Err("bad pointer magic");
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let rest = &buf[8..];
    if crc32fast::hash(rest) != crc {
        return Err("pointer checksum mismatch");
    }
    let path_len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
    let path_bytes = rest
        .get(2..2 + path_len)
        .ok_or("pointer path out of bounds")?;
    let path = std::str::from_utf8(path_bytes).map_err(|_| "pointer path is not UTF-8")?;
    let body = Path::parse(path).map_err(|_| "invalid pointer path")?;
    let (key, meta) = codec::decode(&rest[2 + path_len..]).map_err(|e| e.0)?;
    Ok(Pointer { key, meta, body })
}

/// Reads and decodes the pointer of hash `h`. `Ok(None)`: no pointer.
pub(super) async fn read_pointer(
    store: &dyn object_store::ObjectStore,
    layout: &Layout,
    key: &str,
    h: &str,
) -> Result<Option<Pointer>, StoreError> {
    use object_store::ObjectStoreExt as _;
    let path = layout.meta_path(h);
    let res = match store.get(&path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(backend(key, e)),
    };
    if res.meta.size > MAX_POINTER_LEN {
        return Err(corrupt(
            key,
            format!("pointer object of {} bytes", res.meta.size),
        ));
    }
    let buf = match res.bytes().await {
        Ok(b) => b,
        // Deleted between the response headers and the body.
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(backend(key, e)),
    };
    let p = decode_pointer(&buf).map_err(|reason| corrupt(key, reason))?;
    if !layout.owns_body(h, &p.body) {
        return Err(corrupt(
            key,
            format!("pointer names a foreign body path {}", p.body),
        ));
    }
    Ok(Some(p))
}
