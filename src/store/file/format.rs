//! The on-disk layout of one file-store entry, and the blocking I/O that reads and validates it.
//!
//! Everything here runs on blocking threads (`spawn_blocking`) and never trusts the disk: every
//! length is bounds-checked against the file's real size before it is used, and a file that fails a
//! check is reported as [`ReadFailure::Corrupt`], never returned.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! body (body_len bytes)
//! record (record_len bytes)   codec::encode(key, meta), with meta.content_length = Some(body_len)
//! footer (24 bytes)           u64 body_len | u32 crc32(body) | u32 record_len
//!                             | u32 crc32(previous 16 bytes) | magic "DJF1"
//! ```
//!
//! A valid file has exactly `body_len + record_len + 24` bytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::entry::Metadata;
use crate::store::codec;

/// Size of the fixed footer at the end of every entry file.
pub(super) const FOOTER_LEN: usize = 24;
const FOOTER_MAGIC: &[u8; 4] = b"DJF1";
/// Bytes moved per read when streaming or copying a body.
pub(super) const CHUNK: usize = 64 * 1024;

/// Bytes read at a file's end to find its footer and metadata record when the body is not
/// read with them: enough for typical records (one with many or long headers takes a second
/// read).
pub(super) const RECORD_TAIL: usize = 4 * 1024;

/// The fixed-size footer: where the body ends and how to check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Footer {
    pub(super) body_len: u64,
    pub(super) body_crc: u32,
    pub(super) record_len: u32,
}

impl Footer {
    pub(super) fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        out[..8].copy_from_slice(&self.body_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.body_crc.to_le_bytes());
        out[12..16].copy_from_slice(&self.record_len.to_le_bytes());
        let crc = crc32fast::hash(&out[..16]);
        out[16..20].copy_from_slice(&crc.to_le_bytes());
        out[20..].copy_from_slice(FOOTER_MAGIC);
        out
    }

    pub(super) fn decode(buf: &[u8]) -> Result<Footer, &'static str> {
        if buf.len() != FOOTER_LEN {
            return Err("short footer");
        }
        if &buf[20..] != FOOTER_MAGIC {
            return Err("bad footer magic");
        }
        if crc32fast::hash(&buf[..16]) != le_u32(&buf[16..20]) {
            return Err("footer checksum mismatch");
        }
        Ok(Footer {
            body_len: le_u64(&buf[..8]),
            body_crc: le_u32(&buf[8..12]),
            record_len: le_u32(&buf[12..16]),
        })
    }

    /// The total file length this footer describes, `None` on overflow.
    fn file_len(&self) -> Option<u64> {
        self.body_len
            .checked_add(u64::from(self.record_len))?
            .checked_add(FOOTER_LEN as u64)
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Encodes the metadata record for an entry whose body is `body_len` bytes long.
pub(super) fn record(key: &str, meta: &Metadata, body_len: u64) -> Vec<u8> {
    let mut meta = meta.clone();
    meta.content_length = Some(body_len);
    codec::encode(key, &meta)
}

/// Builds the footer for a body and its already encoded record.
pub(super) fn footer(body_len: u64, body_crc: u32, record: &[u8]) -> io::Result<[u8; FOOTER_LEN]> {
    let record_len = u32::try_from(record.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "metadata record too large"))?;
    Ok(Footer {
        body_len,
        body_crc,
        record_len,
    }
    .encode())
}

/// What identifies the file a reader opened, so that a later removal only deletes that very file
/// and not a newer entry committed at the same path in the meantime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileIdent {
    len: u64,
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
    #[cfg(not(unix))]
    modified: Option<std::time::SystemTime>,
}

impl FileIdent {
    pub(super) fn of(md: &std::fs::Metadata) -> FileIdent {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileIdent {
                len: md.len(),
                dev: md.dev(),
                ino: md.ino(),
            }
        }
        #[cfg(not(unix))]
        {
            FileIdent {
                len: md.len(),
                modified: md.modified().ok(),
            }
        }
    }

    /// The file's length in bytes.
    pub(super) fn len(&self) -> u64 {
        self.len
    }
}

/// Why an entry file could not be used.
#[derive(Debug)]
pub(super) enum ReadFailure {
    /// No file at the path.
    Missing,
    /// The file exists but fails a check; `ident` names the file that was inspected.
    Corrupt { reason: String, ident: FileIdent },
    /// The file could not be read.
    Io(io::Error),
}

/// An entry file whose footer and record passed their checks.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) file: Arc<File>,
    pub(super) ident: FileIdent,
    pub(super) modified: Option<std::time::SystemTime>,
    pub(super) key: String,
    pub(super) meta: Metadata,
    pub(super) footer: Footer,
    /// The whole body, already checked against its crc, when the tail read covered the file.
    pub(super) body: Option<Bytes>,
}

/// Opens and validates the entry at `path`.
///
/// Reads the last `tail_hint` bytes (at least the footer) with a single positioned read, which for
/// small entries covers the whole file: their body is then checked and returned at once. A record
/// larger than the tail read costs one more read. Larger bodies are left in the file for the
/// caller to stream; their crc is checked as they are read.
pub(super) fn open_entry(path: &Path, tail_hint: usize) -> Result<Opened, ReadFailure> {
    open_entry_with(path, tail_hint, read_exact_at)
}

/// [`open_entry`] without waiting for the disk: every read must be served from the page cache
/// ([`read_cached_at`]), or it fails with [`io::ErrorKind::WouldBlock`] and the caller moves
/// the whole open to a blocking thread. Opening the file itself may still look the path up on
/// disk (a hot tier's directories are normally cached).
pub(super) fn open_entry_cached(path: &Path, tail_hint: usize) -> Result<Opened, ReadFailure> {
    open_entry_with(path, tail_hint, |file, buf, offset| {
        if read_cached_at(file, buf, offset)? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    })
}

/// [`open_entry_cached`] on a file kept open from an earlier hit: no `open`, and the file must
/// still be linked (a file unlinked or replaced behind the index has no links left; committed
/// files are never changed in place, so a linked one is still the entry's). Anything else
/// fails the same way, and every check of a fresh open runs again.
pub(super) fn reread_entry_cached(
    file: Arc<File>,
    tail_hint: usize,
) -> Result<Opened, ReadFailure> {
    read_entry(file, tail_hint, true, |file, buf, offset| {
        if read_cached_at(file, buf, offset)? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    })
}

fn open_entry_with(
    path: &Path,
    tail_hint: usize,
    read_exact_at: impl Fn(&File, &mut [u8], u64) -> io::Result<()>,
) -> Result<Opened, ReadFailure> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadFailure::Missing),
        Err(e) => return Err(ReadFailure::Io(e)),
    };
    read_entry(Arc::new(file), tail_hint, false, read_exact_at)
}

/// Validates the entry in `file` (see [`open_entry`]). With `must_be_linked`, a file with no
/// links left is [`ReadFailure::Missing`].
fn read_entry(
    file: Arc<File>,
    tail_hint: usize,
    must_be_linked: bool,
    read_exact_at: impl Fn(&File, &mut [u8], u64) -> io::Result<()>,
) -> Result<Opened, ReadFailure> {
    let md = file.metadata().map_err(ReadFailure::Io)?;
    if must_be_linked && !is_linked(&md) {
        return Err(ReadFailure::Missing);
    }
    let ident = FileIdent::of(&md);
    let corrupt = |reason: &str| ReadFailure::Corrupt {
        reason: reason.to_owned(),
        ident,
    };
    let len = md.len();
    if len < FOOTER_LEN as u64 {
        return Err(corrupt("file shorter than its footer"));
    }
    let tail_len = tail_len(len, tail_hint);
    let tail_start = len - tail_len as u64;
    let mut tail = vec![0u8; tail_len];
    read_exact_at(&file, &mut tail, tail_start).map_err(|e| eof_is_corrupt(e, ident))?;

    let footer = Footer::decode(&tail[tail_len - FOOTER_LEN..]).map_err(corrupt)?;
    if footer.file_len() != Some(len) {
        return Err(corrupt("file length does not match its footer"));
    }
    let record_len = footer.record_len as usize;
    if record_len > codec::MAX_PAYLOAD + codec::FRAME_OVERHEAD {
        return Err(corrupt("metadata record too large"));
    }
    let record_start = footer.body_len;
    let decoded = if record_start >= tail_start {
        // Both bounds were checked against `len` above, so the slice is in range.
        let from = (record_start - tail_start) as usize;
        codec::decode(&tail[from..from + record_len])
    } else {
        let mut rec = vec![0u8; record_len];
        read_exact_at(&file, &mut rec, record_start).map_err(|e| eof_is_corrupt(e, ident))?;
        codec::decode(&rec)
    };
    let (key, meta) = decoded.map_err(|e| corrupt(e.0))?;
    if meta.content_length != Some(footer.body_len) {
        return Err(corrupt("record body length does not match the footer"));
    }

    let body = if tail_start == 0 {
        let mut tail = Bytes::from(tail);
        let body = tail.split_to(footer.body_len as usize);
        if crc32fast::hash(&body) != footer.body_crc {
            return Err(corrupt("body checksum mismatch"));
        }
        Some(body)
    } else {
        None
    };
    Ok(Opened {
        file,
        ident,
        modified: md.modified().ok(),
        key,
        meta,
        footer,
        body,
    })
}

/// How many bytes to read at the end of a file of `len` bytes (at least `FOOTER_LEN`): the
/// whole hint when the file fits it (the body comes with the record), else [`RECORD_TAIL`].
/// A body longer than the hint is streamed by a reader of its own, so the tail needs only the
/// footer and (usually) the record; a longer record takes one more read. Reading the whole hint
/// then was a 32 KiB copy per hit of a 64 KiB entry that nothing used.
fn tail_len(len: u64, tail_hint: usize) -> usize {
    let want = if len > tail_hint as u64 {
        tail_hint.min(RECORD_TAIL)
    } else {
        tail_hint
    };
    // At most `want`, a small constant, so the cast cannot truncate.
    len.min(want.max(FOOTER_LEN) as u64) as usize
}

fn eof_is_corrupt(e: io::Error, ident: FileIdent) -> ReadFailure {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ReadFailure::Corrupt {
            reason: "file shrank while being read".to_owned(),
            ident,
        }
    } else {
        ReadFailure::Io(e)
    }
}

/// Copies the body of `src` into `dst` in bounded chunks, checking it against the footer's crc.
/// Returns `Ok(false)` when the body is corrupt (nothing useful was copied).
pub(super) fn copy_body(src: &Opened, dst: &mut File) -> io::Result<bool> {
    let mut buf = vec![0u8; CHUNK.min(src.footer.body_len as usize)];
    let mut crc = crc32fast::Hasher::new();
    let mut pos = 0u64;
    while pos < src.footer.body_len {
        let n = (src.footer.body_len - pos).min(CHUNK as u64) as usize;
        match read_exact_at(&src.file, &mut buf[..n], pos) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        crc.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(crc.finalize() == src.footer.body_crc)
}

/// Reads exactly `buf.len()` bytes at `offset` without moving a shared cursor, so one open file
/// can serve concurrent readers.
/// Whether the file still has a name (platforms without link counts: assume not, so a kept
/// file is never trusted there).
fn is_linked(md: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::nlink(md) > 0
    }
    #[cfg(not(unix))]
    {
        let _ = md;
        false
    }
}

/// Fills `buf` from `offset` only if every byte is in the page cache: `Ok(true)` when it was
/// read, `Ok(false)` when reading would wait for the disk (Linux `preadv2` with `RWF_NOWAIT`),
/// or always on platforms that cannot tell, so the caller reads on a blocking thread instead.
/// A file shorter than `offset + buf.len()` is an [`io::ErrorKind::UnexpectedEof`] error.
pub(super) fn read_cached_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::{preadv2, Errno, ReadWriteFlags};
        let mut done = 0;
        while done < buf.len() {
            let mut slices = [io::IoSliceMut::new(&mut buf[done..])];
            match preadv2(
                file,
                &mut slices,
                offset + done as u64,
                ReadWriteFlags::NOWAIT,
            ) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                // Not cached (AGAIN), or a kernel or file system without RWF_NOWAIT.
                Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                    return Ok(false)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, buf, offset);
        Ok(false)
    }
}

pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            ) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    #[cfg(not(any(unix, windows)))]
    {
        use std::io::{Seek, SeekFrom};
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

/// Makes a directory's entries (a rename, a new file) durable. A no-op where directories cannot
/// be opened for syncing.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Copies `src` into a fresh file at `dst` (for filesystems without an atomic rename).
pub(super) fn copy_file(src: &Path, dst: &Path, fsync: bool) -> io::Result<()> {
    match std::fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut from = File::open(src)?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
    if fsync {
        to.sync_all()?;
    }
    std::fs::remove_file(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips_and_rejects_any_flipped_byte() {
        let f = Footer {
            body_len: 123_456,
            body_crc: 0xdead_beef,
            record_len: 99,
        };
        let buf = f.encode();
        assert_eq!(Footer::decode(&buf), Ok(f));
        for i in 0..buf.len() {
            let mut bad = buf;
            bad[i] ^= 0x10;
            assert!(Footer::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    /// The whole hint when the file fits it (the body is read with the record), the record's
    /// share otherwise, never less than a footer, never more than the file.
    #[test]
    fn the_tail_read_is_the_hint_only_when_the_body_comes_with_it() {
        let hint = 32 * 1024;
        assert_eq!(tail_len(10, hint), 10);
        assert_eq!(tail_len(hint as u64, hint), hint);
        assert_eq!(tail_len(hint as u64 + 1, hint), RECORD_TAIL);
        assert_eq!(tail_len(64 * 1024 + 300, hint), RECORD_TAIL);
        assert_eq!(tail_len(1 << 30, 2), FOOTER_LEN);
        // A hint below the record tail is not raised.
        assert_eq!(tail_len(3_000, 2 * 1024), 2 * 1024);
    }
}
