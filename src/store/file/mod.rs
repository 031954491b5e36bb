//! The local-disk tier: entries as files under one directory, bounded in bytes, kept across
//! restarts.
//!
//! It must never lose or corrupt a committed entry on a crash and never serve a partial or corrupt
//! one: a file that fails a check is a miss (and is deleted), and a body whose checksum fails
//! while it streams ends with an error item, never with a clean end.
//!
//! See [`FileStore`] for the layout, the file format and the crash guarantees.

mod format;
mod index;
mod reader;
mod scan;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex as AsyncMutex;

use self::format::{ReadFailure, FOOTER_LEN};
use self::index::{blocking, blocking_store, remove_if_exists, Indexed, Inner, Loc, State};
use self::reader::BodyReader;
use self::writer::{FileStoreWriter, Sink, TempFile};
use super::{Store, StoreWriter};
use crate::entry::{EntryBody, Metadata, StoredEntry};
use crate::error::StoreError;
use crate::eviction::PolicyKind;

/// Default capacity: 1 GiB.
const DEFAULT_CAPACITY: u64 = 1 << 30;
/// Number of per-key lock stripes.
const STRIPES: usize = 64;
/// Tail read on `get`: entries up to this size (body and trailer) are read in one go.
const GET_TAIL: usize = 32 * 1024;
/// Files kept open after a hit, so the next hit of the same entry skips `open` and `close`
/// (bounded well under common descriptor limits).
const OPEN_FILES: usize = 256;
/// Tail read on `head` and when scanning: enough for typical metadata records.
const HEAD_TAIL: usize = format::RECORD_TAIL;
/// The writer buffers small chunks up to this many bytes before handing them to a blocking write.
const WRITE_BUFFER: usize = 64 * 1024;
/// How many unknown ids a misbehaving policy may return before the store picks a victim itself.
const MAX_STRAY_VICTIMS: usize = 1024;

/// How a finished temp file is put in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitMode {
    /// Rename the temp file over the entry's path: atomic (the default).
    #[default]
    Rename,
    /// Copy the temp file to the entry's path, for filesystems without an atomic rename.
    ///
    /// **Not atomic**: readers may miss the entry while it is copied, and a crash mid-copy
    /// leaves a partial file (rejected by the trailer checks, so it is never served).
    Copy,
}

/// Builder for [`FileStore`].
///
/// ```no_run
/// # async fn demo() -> Result<(), daramjwee::StoreError> {
/// use daramjwee::store::FileStore;
/// let store = FileStore::builder("/var/cache/daramjwee")
///     .capacity(10 << 30)
///     .max_object_size(512 << 20)
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileStoreBuilder {
    dir: PathBuf,
    capacity: u64,
    policy: PolicyKind,
    max_object_size: Option<u64>,
    fsync: bool,
    commit_mode: CommitMode,
    inline_reads: bool,
}

impl FileStoreBuilder {
    /// Total bytes kept on disk (file sizes: bodies plus metadata), writes in progress included.
    /// Defaults to 1 GiB.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// The eviction policy (default: [`PolicyKind::S3Fifo`]).
    pub fn policy(mut self, policy: PolicyKind) -> Self {
        self.policy = policy;
        self
    }

    /// Largest body kept, in bytes; larger writes fail with [`StoreError::TooLarge`].
    /// Defaults to (and is capped at) the capacity; set it lower so one huge object cannot flush
    /// the whole tier.
    pub fn max_object_size(mut self, bytes: u64) -> Self {
        self.max_object_size = Some(bytes);
        self
    }

    /// Whether commits `fsync` the file and its directory (default `true`). See
    /// [`FileStore`] for what each setting guarantees after a crash.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// How temp files are put in place (default [`CommitMode::Rename`]).
    pub fn commit_mode(mut self, mode: CommitMode) -> Self {
        self.commit_mode = mode;
        self
    }

    /// Whether a hit whose bytes are all in the page cache is opened and read on the calling
    /// task, without a hop to a blocking thread (default `true`). The reads never wait for
    /// the disk (on Linux, `preadv2` with `RWF_NOWAIT`; elsewhere they always take the hop),
    /// but opening the file may look its path up on disk: turn this off when the directory
    /// lives on a file system whose lookups can stall (a network mount).
    pub fn inline_reads(mut self, on: bool) -> Self {
        self.inline_reads = on;
        self
    }

    /// Creates the directories, removes temp files left by a crash, rebuilds the index from the
    /// entries on disk (deleting corrupt ones) and evicts down to the capacity.
    pub async fn open(self) -> Result<FileStore, StoreError> {
        let objects = self.dir.join("objects");
        let tmp = self.dir.join("tmp");
        let found = {
            let (objects, tmp) = (objects.clone(), tmp.clone());
            blocking(move || {
                std::fs::create_dir_all(&objects)?;
                std::fs::create_dir_all(&tmp)?;
                scan::sweep_temp(&tmp)?;
                scan::scan_objects(&objects)
            })
            .await
            .map_err(|e| StoreError::io("", e))?
        };
        let inner = Arc::new(self.into_inner(objects, tmp, found.len()));
        // Nothing else can reach the store yet, so files are removed directly, without stripes.
        let doomed = inner.index_found(found);
        if !doomed.is_empty() {
            let paths: Vec<PathBuf> = doomed.iter().map(|l| l.path(&inner.objects)).collect();
            blocking(move || {
                for p in paths {
                    remove_if_exists(&p)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| StoreError::io("", e))?;
        }
        tracing::debug!(
            dir = %inner.root.display(),
            entries = inner.state.lock().index.len(),
            "file store opened"
        );
        Ok(FileStore { inner })
    }

    /// The store's shared state, with an empty index sized for `entries`.
    fn into_inner(self, objects: PathBuf, tmp: PathBuf, entries: usize) -> Inner {
        let capacity = self.capacity;
        Inner {
            root: self.dir,
            objects,
            tmp,
            capacity,
            max_object_size: self.max_object_size.unwrap_or(capacity).min(capacity),
            fsync: self.fsync,
            commit_mode: self.commit_mode,
            inline_reads: self.inline_reads,
            stripes: (0..STRIPES)
                .map(|_| Arc::new(AsyncMutex::new(())))
                .collect(),
            state: parking_lot::Mutex::new(State {
                index: HashMap::with_capacity(entries),
                policy: self.policy.build(capacity),
                committed: 0,
                reserved: 0,
                open_order: VecDeque::new(),
            }),
            policy: self.policy,
            evictions: AtomicU64::new(0),
            policy_fallback_warned: AtomicBool::new(false),
        }
    }
}

impl Inner {
    /// Indexes the entries found on disk at open, then picks victims until they fit the
    /// capacity. Returns the files to delete: those victims, and the older of two files whose
    /// keys share a 64-bit id. `found` is in order of modification, oldest first.
    fn index_found(&self, found: Vec<scan::Found>) -> Vec<Loc> {
        let mut doomed = Vec::new();
        let mut st = self.state.lock();
        for f in found {
            let loc = Loc::from_hash(f.hash);
            st.committed += f.size;
            st.policy.insert(loc.id, f.size);
            if let Some(old) = st.index.insert(loc.id, Indexed::new(f.hash, f.size)) {
                // Two keys share a 64-bit id: keep the newer file (`found` is oldest first).
                st.committed -= old.size;
                doomed.push(Loc::from_hash(old.hash));
            }
        }
        while st.committed > self.capacity {
            match self.pick_victim(&mut st) {
                Some(v) => doomed.push(v),
                None => break,
            }
        }
        doomed
    }
}

/// The local-disk tier: entries as files under one directory, bounded in bytes.
///
/// Cheap to clone; clones share the same directory and index.
///
/// # Layout
///
/// ```text
/// <dir>/objects/ab/cd/abcd…(64 hex digits)   one committed entry per file
/// <dir>/tmp/<unique>.tmp                     writes in progress (swept on open)
/// ```
///
/// Keys are data, never paths: a file's name is the hex SHA-256 of its key, so no key (however
/// long, or full of `/`, `..` or odd unicode) can name a path outside the directory. The full key
/// is stored inside the file and compared on every read; a file holding another key is treated
/// as corrupt.
///
/// # File format
///
/// `body | record | footer`, where the record is [`codec::encode`](crate::store::codec::encode)
/// of the key and the metadata (with `content_length` set to the real body length) and the footer
/// is 24 bytes: `u64 body_len | u32 crc32(body) | u32 record_len | u32 crc32(those 16 bytes) |
/// "DJF1"` (little-endian). A valid file is exactly `body_len + record_len + 24` bytes long.
/// The body comes first so a writer streams it straight to disk and writes the metadata once
/// the body is complete. A hit takes one `open`, one `fstat` and one positioned read of the
/// file's last 32 KiB, which for small entries is the whole file (checked and returned at once);
/// larger bodies stream in 64 KiB reads, so memory never depends on object size.
///
/// # Crash consistency
///
/// A write goes to a temp file in `tmp/`; `commit` writes the trailer, `fsync`s the file, renames
/// it into `objects/` and `fsync`s the parent directory. Hence, with `fsync` on (the default):
///
/// - the file's bytes are durable before its name appears (file fsync before rename), so after a
///   crash a name never points at a partial file;
/// - a returned `commit` is durable (directory fsync after rename);
/// - rename is atomic, so after a crash the path holds either the old entry or the new one;
/// - an interrupted write leaves only a temp file, removed by the next [`open`](FileStoreBuilder::open);
/// - `delete` also fsyncs the directory, so an invalidation survives a crash; evictions do not
///   (an evicted entry that comes back is still a valid entry).
///
/// With `fsync` off, a process crash is just as safe (the kernel keeps the page cache), but after
/// a power loss or kernel crash a renamed file may be empty or hold garbage. The footer and
/// record checksums and the length check catch that on open or read, and the body crc catches a
/// damaged body at the end of its stream: such entries are dropped, never served.
///
/// [`CommitMode::Copy`] (for filesystems without an atomic rename) is *not* atomic: during a
/// commit, readers may briefly miss the entry, and a crash mid-copy leaves a partial file that the
/// trailer checks reject on the next read or open.
///
/// # Capacity and concurrency
///
/// The capacity counts file sizes (bodies plus metadata) of committed entries *and* of writes in
/// progress, whose bytes are reserved as they are written, evicting entries to make room. A write
/// that cannot fit even after evicting every committed entry (the other writes in progress hold
/// the rest) fails with [`StoreError::TooLarge`] and is dropped. [`update_metadata`] copies the
/// body into a new file, so it needs room for a second copy while it runs.
///
/// Commits, deletes and metadata updates of one key are serialised (64 lock stripes); the last
/// commit wins. Reads take no lock: a reader that already opened an entry keeps streaming that
/// version even if it is replaced, evicted or deleted meanwhile (on Unix, where an open file
/// outlives its name). Misses are answered from the in-memory index without touching the disk.
///
/// Hits whose bytes are in the page cache are read on the calling task (see
/// [`FileStoreBuilder::inline_reads`]), and the store keeps up to 256 files open after hits (256
/// file descriptors), so the next hit of the same entry costs one `fstat` and one read. A kept
/// file is closed when its entry is replaced, deleted, evicted or cleared, and one found with no
/// links left (removed behind the store) is never read.
///
/// One directory must be used by one `FileStore` at a time: `open` deletes every temp file it
/// finds, including those of another live store.
///
/// [`update_metadata`]: Store::update_metadata
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

impl FileStore {
    /// Starts configuring a store rooted at `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> FileStoreBuilder {
        FileStoreBuilder {
            dir: dir.into(),
            capacity: DEFAULT_CAPACITY,
            policy: PolicyKind::default(),
            max_object_size: None,
            fsync: true,
            commit_mode: CommitMode::default(),
            inline_reads: true,
        }
    }

    /// Number of entries evicted to make room since the store was opened.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// The store's root directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (len, used) = {
            let st = self.inner.state.lock();
            (st.index.len(), st.committed + st.reserved)
        };
        f.debug_struct("FileStore")
            .field("dir", &self.inner.root)
            .field("capacity", &self.inner.capacity)
            .field("used", &used)
            .field("len", &len)
            .field("policy", &self.inner.policy)
            .field("commit_mode", &self.inner.commit_mode)
            .finish()
    }
}

impl FileStore {
    /// The entry read from an opened file: its body from the tail read (small bodies), or
    /// streamed from the file with its checksum checked.
    fn entry(&self, key: &str, loc: Loc, o: format::Opened) -> StoredEntry {
        let meta = Arc::new(o.meta);
        let body = match o.body {
            Some(b) if b.is_empty() => EntryBody::empty(),
            Some(b) => EntryBody::from_bytes(b),
            None => {
                let reader = BodyReader {
                    store: self.clone(),
                    key: key.to_owned(),
                    loc,
                    ident: o.ident,
                    file: o.file,
                    pos: 0,
                    end: o.footer.body_len,
                    expected_crc: o.footer.body_crc,
                    crc: crc32fast::Hasher::new(),
                    done: false,
                };
                // Fused: a consumer polling again after the end gets `None`, not a panic.
                let chunks = futures_util::stream::unfold(reader, |mut r| async move {
                    let item = r.next_chunk().await?;
                    Some((item, r))
                });
                EntryBody::from_stream(futures_util::StreamExt::fuse(chunks))
            }
        };
        StoredEntry::new(meta, body)
    }
}

#[async_trait]
impl Store for FileStore {
    fn name(&self) -> &'static str {
        "file"
    }

    fn object_size_limit(&self) -> Option<u64> {
        Some(self.inner.max_object_size)
    }

    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        let Some((loc, o)) = self.open_checked(key, GET_TAIL, true).await? else {
            return Ok(None);
        };
        Ok(Some(self.entry(key, loc, o)))
    }

    /// A miss is answered from the index alone; a hit whose record (and, for small bodies,
    /// body) is in the page cache is opened inline. Anything else (a read that would wait for
    /// the disk, a missing or corrupt file) is left to [`get`](Store::get), which also cleans
    /// up after it.
    fn try_get_now(&self, key: &str) -> Option<Result<Option<StoredEntry>, StoreError>> {
        if !self.inner.inline_reads {
            return None;
        }
        let loc = Loc::of(key);
        let Some(kept) = self.inner.open_file(&loc) else {
            return Some(Ok(None));
        };
        let opened = match kept {
            Some(file) => match format::reread_entry_cached(file, GET_TAIL) {
                Ok(o) => o,
                Err(_) => {
                    // Unlinked behind the index, or changed: forget the file; the full path
                    // decides (and cleans up).
                    self.inner.close_kept(&loc);
                    return None;
                }
            },
            None => {
                let o = format::open_entry_cached(&loc.path(&self.inner.objects), GET_TAIL).ok()?;
                #[cfg(unix)]
                if o.key == key {
                    self.inner.keep_open(&loc, Arc::clone(&o.file));
                }
                o
            }
        };
        if opened.key != key {
            return None;
        }
        // Counted as an access only now that it is served.
        self.inner.indexed(&loc, true)?;
        Some(Ok(Some(self.entry(key, loc, opened))))
    }

    async fn head(&self, key: &str) -> Result<Option<Metadata>, StoreError> {
        Ok(self
            .open_checked(key, HEAD_TAIL, false)
            .await?
            .map(|(_, o)| o.meta))
    }

    async fn put(&self, key: &str, meta: Metadata) -> Result<Box<dyn StoreWriter>, StoreError> {
        let limit = self.inner.max_object_size;
        if let Some(len) = meta.content_length.filter(|&l| l > limit) {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size: len,
                limit,
            });
        }
        let loc = Loc::of(key);
        // The guard travels through the blocking task, so a cancelled `put` removes the file too.
        let temp = TempFile::new(Arc::clone(&self.inner), self.temp_path(&loc));
        let (file, temp) = blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(temp.path())?;
            Ok((file, temp))
        })
        .await
        .map_err(|e| StoreError::io(key, e))?;
        Ok(Box::new(FileStoreWriter {
            store: self.clone(),
            key: key.to_owned(),
            meta,
            loc,
            sink: Some(Sink {
                file,
                crc: crc32fast::Hasher::new(),
            }),
            temp: Some(temp),
            buf: Vec::new(),
            buffered: 0,
            written: 0,
        }))
    }

    /// Rewrites the entry with the new metadata: the body is copied into a new temp file on disk
    /// (checked against its crc on the way; no network transfer), which then replaces the old
    /// file atomically, as a commit does. While it runs it needs room for a second copy of the
    /// entry, and fails with [`StoreError::TooLarge`] when the capacity cannot provide it.
    /// A corrupt entry is deleted, and reported as absent (`Ok(false)`).
    async fn update_metadata(&self, key: &str, meta: Metadata) -> Result<bool, StoreError> {
        let loc = Loc::of(key);
        let Some(old_size) = self.inner.indexed(&loc, false) else {
            return Ok(false);
        };
        // The record's size does not depend on the body length it carries (a fixed-width u64).
        let record_len = format::record(key, &meta, 0).len() as u64;
        let estimate = old_size + record_len + FOOTER_LEN as u64;
        let (res, victims) = self.inner.reserve(key, estimate, 0);
        let mut temp = TempFile::new(Arc::clone(&self.inner), self.temp_path(&loc));
        if res.is_ok() {
            temp.reserved = estimate;
        }
        self.remove_victims(victims).await;
        res?;

        let guard = self.inner.stripe(&loc).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        blocking_store(&key.clone(), move || {
            rewrite_with_meta(&inner, &loc, &key, &meta, record_len, &mut temp, guard)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let loc = Loc::of(key);
        let guard = self.inner.stripe(&loc).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let _guard = guard;
            inner.unindex(&loc);
            let path = loc.path(&inner.objects);
            if remove_if_exists(&path)? && inner.fsync {
                format::sync_dir(path.parent().unwrap_or(&inner.objects))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::io(key, e))
    }

    fn used_bytes(&self) -> Option<u64> {
        let st = self.inner.state.lock();
        Some(st.committed + st.reserved)
    }

    fn len(&self) -> Option<u64> {
        Some(self.inner.state.lock().index.len() as u64)
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let victims: Vec<Loc> = {
            let mut st = self.inner.state.lock();
            st.committed = 0;
            st.policy = self.inner.policy.build(self.inner.capacity);
            st.index
                .drain()
                .map(|(_, e)| Loc::from_hash(e.hash))
                .collect()
        };
        self.remove_victims(victims).await;
        Ok(())
    }

    /// Reads every entry's trailer to learn its key (the index keeps only hashes), then
    /// deletes those under `prefix`: O(entries) small reads.
    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let objects = self.inner.objects.clone();
        let found = blocking(move || scan::scan_objects(&objects))
            .await
            .map_err(|e| StoreError::io(prefix, e))?;
        let mut removed = 0;
        for f in found.into_iter().filter(|f| f.key.starts_with(prefix)) {
            self.delete(&f.key).await?;
            removed += 1;
        }
        Ok(removed)
    }

    fn evictions(&self) -> Option<u64> {
        Some(FileStore::evictions(self))
    }
}

/// The blocking part of [`FileStore::update_metadata`], under the entry's stripe lock
/// (`guard`, released once the new file is in place): copies the body of the entry at `loc`
/// into `temp` behind `meta`'s record and installs it. False when the entry is gone, not
/// `key`'s, or corrupt (then removed).
fn rewrite_with_meta(
    inner: &Inner,
    loc: &Loc,
    key: &str,
    meta: &Metadata,
    record_len: u64,
    temp: &mut TempFile,
    guard: tokio::sync::OwnedMutexGuard<()>,
) -> Result<bool, StoreError> {
    if inner.indexed(loc, false).is_none() {
        return Ok(false);
    }
    let path = loc.path(&inner.objects);
    let Some(src) = open_for_update(inner, loc, &path, key)? else {
        return Ok(false);
    };
    // A commit may have replaced the entry with a larger one since the reservation.
    let size = src.footer.body_len + record_len + FOOTER_LEN as u64;
    if size > temp.reserved {
        if !inner.try_grow(size - temp.reserved) {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size,
                limit: temp.reserved,
            });
        }
        temp.reserved = size;
    }
    let io = |e| StoreError::io(key, e);
    if !write_with_meta(temp.path(), &src, key, meta, inner.fsync).map_err(io)? {
        tracing::warn!(key, "corrupt cache body removed during metadata update");
        inner.unindex(loc);
        remove_if_exists(&path).map_err(io)?;
        return Ok(false);
    }
    let reserved = temp.install(&path).map_err(io)?;
    inner.index_committed(loc, size, reserved);
    drop(guard);
    if inner.fsync {
        format::sync_dir(path.parent().unwrap_or(&inner.objects)).map_err(io)?;
    }
    Ok(true)
}

/// Writes a new file at `dst_path`: the body of `src` (checked against its crc on the way),
/// then `meta`'s record and the footer. False, with nothing more written, when the body is
/// corrupt.
fn write_with_meta(
    dst_path: &Path,
    src: &format::Opened,
    key: &str,
    meta: &Metadata,
    fsync: bool,
) -> std::io::Result<bool> {
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst_path)?;
    let body_ok = match &src.body {
        Some(b) => dst.write_all(b).map(|()| true),
        None => format::copy_body(src, &mut dst),
    }?;
    if !body_ok {
        return Ok(false);
    }
    let record = format::record(key, meta, src.footer.body_len);
    let footer = format::footer(src.footer.body_len, src.footer.body_crc, &record)?;
    dst.write_all(&record)?;
    dst.write_all(&footer)?;
    if fsync {
        dst.sync_all()?;
    }
    Ok(true)
}

/// The entry at `path` for an in-place metadata update, or `None` (unindexed, and removed
/// when corrupt) when it is gone or not `key`'s.
fn open_for_update(
    inner: &Inner,
    loc: &Loc,
    path: &Path,
    key: &str,
) -> Result<Option<format::Opened>, StoreError> {
    match format::open_entry(path, HEAD_TAIL) {
        Ok(o) if o.key == key => Ok(Some(o)),
        Ok(_) | Err(ReadFailure::Corrupt { .. }) => {
            tracing::warn!(key, "corrupt cache file removed during metadata update");
            inner.unindex(loc);
            remove_if_exists(path).map_err(|e| StoreError::io(key, e))?;
            Ok(None)
        }
        Err(ReadFailure::Missing) => {
            inner.unindex(loc);
            Ok(None)
        }
        Err(ReadFailure::Io(e)) => Err(StoreError::io(key, e)),
    }
}
