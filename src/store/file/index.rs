//! The in-memory index of committed entries, byte accounting (reservations for writes in
//! progress, eviction) and the per-key lock stripes.
//!
//! The index is the source of truth for what the store holds: a key absent from it is a miss with
//! no disk access. It never holds its `parking_lot` lock across an `.await` or around file I/O
//! other than a single unlink of a displaced file.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Mutex as AsyncMutex;

use super::format::{self, FileIdent, Opened, ReadFailure};
use super::{CommitMode, FileStore, MAX_STRAY_VICTIMS, OPEN_FILES, STRIPES};
use crate::error::StoreError;
use crate::eviction::{EvictionPolicy, PolicyKind};

/// Makes temp file names unique across every store of this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) struct Inner {
    pub(super) root: PathBuf,
    pub(super) objects: PathBuf,
    pub(super) tmp: PathBuf,
    pub(super) capacity: u64,
    pub(super) max_object_size: u64,
    pub(super) fsync: bool,
    pub(super) commit_mode: CommitMode,
    /// Page-cached hits are opened on the calling task ([`FileStoreBuilder::inline_reads`]).
    ///
    /// [`FileStoreBuilder::inline_reads`]: super::FileStoreBuilder::inline_reads
    pub(super) inline_reads: bool,
    /// Serialise commit, delete, metadata updates and removals per key. Owned guards let a
    /// blocking task keep the lock even when the future that took it is cancelled.
    pub(super) stripes: Box<[Arc<AsyncMutex<()>>]>,
    pub(super) state: parking_lot::Mutex<State>,
    pub(super) policy: PolicyKind,
    pub(super) evictions: AtomicU64,
    pub(super) policy_fallback_warned: AtomicBool,
}

pub(super) struct State {
    pub(super) index: HashMap<u64, Indexed>,
    pub(super) policy: Box<dyn EvictionPolicy>,
    /// Bytes of committed files in the index.
    pub(super) committed: u64,
    /// Bytes reserved by writes in progress (temp files).
    pub(super) reserved: u64,
    /// Ids whose index entry was given an open file, oldest first. Its length bounds the open
    /// files kept (an id may be stale: its entry gone or replaced, its file already closed).
    pub(super) open_order: VecDeque<u64>,
}

/// What the index keeps per entry: the full hash (its path), its file size, and the file
/// itself, kept open after a hit (see [`Inner::open_file`]).
pub(super) struct Indexed {
    pub(super) hash: [u8; 32],
    pub(super) size: u64,
    /// Dropped (closed) with the entry, so a replaced or removed file is never reached
    /// through it, and a deleted file's space is not held.
    pub(super) file: Option<Arc<File>>,
}

impl Indexed {
    pub(super) fn new(hash: [u8; 32], size: u64) -> Self {
        Indexed {
            hash,
            size,
            file: None,
        }
    }
}

/// Where a key lives: its SHA-256, and the 64-bit id the index and policy know it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    pub(super) hash: [u8; 32],
    pub(super) id: u64,
}

impl Loc {
    pub(super) fn of(key: &str) -> Loc {
        Loc::from_hash(Sha256::digest(key.as_bytes()).into())
    }

    pub(super) fn from_hash(hash: [u8; 32]) -> Loc {
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash[..8]);
        Loc {
            hash,
            id: u64::from_le_bytes(id),
        }
    }

    pub(super) fn path(&self, objects: &Path) -> PathBuf {
        let hex = hex(&self.hash);
        objects.join(&hex[..2]).join(&hex[2..4]).join(hex)
    }

    pub(super) fn stripe(&self) -> usize {
        (self.id % STRIPES as u64) as usize
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

pub(super) fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

/// Runs blocking filesystem work off the async threads.
pub(super) async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(format!("blocking file task failed: {e}"))),
    }
}

/// [`blocking`] for work that reports store errors itself.
pub(super) async fn blocking_store<T, F>(key: &str, f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::io(
            key,
            io::Error::other(format!("blocking file task failed: {e}")),
        )),
    }
}

pub(super) fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl Inner {
    pub(super) fn stripe(&self, loc: &Loc) -> Arc<AsyncMutex<()>> {
        Arc::clone(&self.stripes[loc.stripe()])
    }

    /// Whether `loc` is indexed (with this exact hash); records a hit when `touch` is set.
    pub(super) fn indexed(&self, loc: &Loc, touch: bool) -> Option<u64> {
        let mut st = self.state.lock();
        let size = match st.index.get(&loc.id) {
            Some(e) if e.hash == loc.hash => e.size,
            _ => return None,
        };
        if touch {
            st.policy.touch(loc.id);
        }
        Some(size)
    }

    /// Whether `loc` is indexed (with this exact hash), and the file kept open for it, if any.
    /// Records no hit.
    pub(super) fn open_file(&self, loc: &Loc) -> Option<Option<Arc<File>>> {
        let st = self.state.lock();
        match st.index.get(&loc.id) {
            Some(e) if e.hash == loc.hash => Some(e.file.clone()),
            _ => None,
        }
    }

    /// Keeps `file` open for `loc`'s entry, if the entry is still the one indexed and has none,
    /// closing the oldest kept file when [`OPEN_FILES`] are open. Committed files are never
    /// changed in place (every write is a new file put over the path), and a replaced or
    /// removed entry drops its file, so a kept file is always the entry's current one.
    #[cfg(unix)]
    pub(super) fn keep_open(&self, loc: &Loc, file: Arc<File>) {
        let closed = {
            let mut st = self.state.lock();
            match st.index.get(&loc.id) {
                Some(e) if e.hash == loc.hash && e.file.is_none() => {}
                _ => return,
            }
            let mut closed = None;
            if st.open_order.len() >= OPEN_FILES {
                if let Some(old) = st.open_order.pop_front() {
                    closed = st.index.get_mut(&old).and_then(|e| e.file.take());
                }
            }
            if let Some(e) = st.index.get_mut(&loc.id) {
                e.file = Some(file);
            }
            st.open_order.push_back(loc.id);
            closed
        };
        // Closed outside the lock.
        drop(closed);
    }

    /// Stops keeping `loc`'s file open (it was found unlinked: removed behind the index).
    pub(super) fn close_kept(&self, loc: &Loc) {
        let closed = {
            let mut st = self.state.lock();
            match st.index.get_mut(&loc.id) {
                Some(e) if e.hash == loc.hash => e.file.take(),
                _ => None,
            }
        };
        drop(closed);
    }

    /// Drops `loc` from the index (if it is there with this hash). Returns whether it was.
    pub(super) fn unindex(&self, loc: &Loc) -> bool {
        let mut st = self.state.lock();
        match st.index.get(&loc.id) {
            Some(e) if e.hash == loc.hash => {}
            _ => return false,
        }
        if let Some(e) = st.index.remove(&loc.id) {
            st.committed -= e.size;
            st.policy.remove(loc.id);
        }
        true
    }

    /// Records a file just put in place at `loc` (the caller holds its stripe), turning
    /// `reserved` bytes into a committed entry of `size` bytes.
    pub(super) fn index_committed(&self, loc: &Loc, size: u64, reserved: u64) {
        let displaced = {
            let mut st = self.state.lock();
            st.reserved -= reserved.min(st.reserved);
            st.committed += size;
            st.policy.insert(loc.id, size);
            let old = st.index.insert(loc.id, Indexed::new(loc.hash, size));
            match old {
                Some(old) => {
                    st.committed -= old.size;
                    (old.hash != loc.hash).then(|| Loc::from_hash(old.hash))
                }
                None => None,
            }
        };
        // Another key with the same 64-bit id lost its index slot; it shares the stripe we hold,
        // so its file can go now. The commit itself has succeeded: only log a failure.
        if let Some(d) = displaced {
            if let Err(e) = remove_if_exists(&d.path(&self.objects)) {
                tracing::warn!(error = %e, "could not delete a displaced cache file");
            }
        }
    }

    /// Grows a reservation by `extra` bytes if that fits without evicting anything.
    pub(super) fn try_grow(&self, extra: u64) -> bool {
        let mut st = self.state.lock();
        if st.committed + st.reserved + extra > self.capacity {
            return false;
        }
        st.reserved += extra;
        true
    }

    pub(super) fn release(&self, bytes: u64) {
        if bytes > 0 {
            let mut st = self.state.lock();
            st.reserved -= bytes.min(st.reserved);
        }
    }

    /// Reserves `n` more bytes for a write in progress that already holds `held` bytes, evicting
    /// committed entries to make room.
    /// The victims are already out of the index; the caller deletes their files with
    /// [`FileStore::remove_victims`]. Fails (reserving nothing) when even an empty index would
    /// leave no room, i.e. the other writes in progress hold the rest of the capacity.
    pub(super) fn reserve(
        &self,
        key: &str,
        n: u64,
        held: u64,
    ) -> (Result<(), StoreError>, Vec<Loc>) {
        let mut victims = Vec::new();
        let mut st = self.state.lock();
        // What the writes of others leave to this one: the limit reported when it does not fit.
        let room = self
            .capacity
            .saturating_sub(st.reserved.saturating_sub(held));
        let too_large = || StoreError::TooLarge {
            key: key.to_owned(),
            size: held + n,
            limit: room,
        };
        // Every committed entry can be evicted, so only other writes in progress can make this
        // impossible; checking first avoids evicting entries for a write that fails anyway.
        if st.reserved.saturating_add(n) > self.capacity {
            return (Err(too_large()), victims);
        }
        st.reserved += n;
        while st.committed + st.reserved > self.capacity {
            match self.pick_victim(&mut st) {
                Some(v) => victims.push(v),
                // Index and accounting disagree (should not happen): refuse rather than overfill.
                None => {
                    st.reserved -= n;
                    return (Err(too_large()), victims);
                }
            }
        }
        (Ok(()), victims)
    }

    /// Takes one victim out of the index. Falls back to an arbitrary entry when the policy has
    /// nothing to offer while entries remain, so a faulty policy cannot wedge the store.
    pub(super) fn pick_victim(&self, st: &mut State) -> Option<Loc> {
        for _ in 0..MAX_STRAY_VICTIMS {
            let Some(id) = st.policy.evict() else { break };
            if let Some(e) = st.index.remove(&id) {
                st.committed -= e.size;
                self.evictions.fetch_add(1, Ordering::Relaxed);
                return Some(Loc::from_hash(e.hash));
            }
        }
        let id = *st.index.keys().next()?;
        if !self.policy_fallback_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                policy = ?self.policy,
                "eviction policy out of step with the file store index; evicting arbitrary entries"
            );
        }
        st.policy.remove(id);
        let e = st.index.remove(&id)?;
        st.committed -= e.size;
        self.evictions.fetch_add(1, Ordering::Relaxed);
        Some(Loc::from_hash(e.hash))
    }
}

impl FileStore {
    /// Deletes the files of entries already taken out of the index. Runs as a spawned task so a
    /// cancelled caller cannot leave them behind; each removal holds the victim's stripe and
    /// skips a file re-committed since it was evicted.
    pub(super) async fn remove_victims(&self, victims: Vec<Loc>) {
        if victims.is_empty() {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            for v in victims {
                let guard = inner.stripe(&v).lock_owned().await;
                let inner2 = Arc::clone(&inner);
                let res = blocking(move || {
                    let _guard = guard;
                    if inner2.indexed(&v, false).is_some() {
                        return Ok(());
                    }
                    remove_if_exists(&v.path(&inner2.objects)).map(|_| ())
                })
                .await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "could not delete evicted cache file");
                }
            }
        });
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "eviction task failed");
        }
    }

    /// Deletes a corrupt file, but only if the path still holds the very file that was found
    /// corrupt (not an entry committed since).
    pub(super) async fn remove_corrupt(&self, key: &str, loc: Loc, ident: FileIdent, reason: &str) {
        tracing::warn!(key, reason, "corrupt cache file removed");
        let guard = self.inner.stripe(&loc).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let res = blocking(move || {
            let _guard = guard;
            let path = loc.path(&inner.objects);
            match std::fs::metadata(&path) {
                Ok(md) if FileIdent::of(&md) == ident => {
                    inner.unindex(&loc);
                    remove_if_exists(&path).map(|_| ())
                }
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    inner.unindex(&loc);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
        .await;
        if let Err(e) = res {
            tracing::warn!(key, error = %e, "could not delete corrupt cache file");
        }
    }

    /// Forgets an indexed entry whose file is gone (deleted behind the store's back).
    pub(super) async fn forget_missing(&self, loc: Loc) {
        let guard = self.inner.stripe(&loc).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let _ = blocking(move || {
            let _guard = guard;
            if let Err(e) = std::fs::symlink_metadata(loc.path(&inner.objects)) {
                if e.kind() == io::ErrorKind::NotFound {
                    inner.unindex(&loc);
                }
            }
            Ok(())
        })
        .await;
    }

    /// Opens and validates the entry for `key`; `Ok(None)` on a miss or a corrupt file.
    /// A hit on `get` (`touch`) counts as an access for the policy; `head` does not.
    pub(super) async fn open_checked(
        &self,
        key: &str,
        tail: usize,
        touch: bool,
    ) -> Result<Option<(Loc, Opened)>, StoreError> {
        let loc = Loc::of(key);
        if self.inner.indexed(&loc, touch).is_none() {
            return Ok(None);
        }
        let path = loc.path(&self.inner.objects);
        let res = match tokio::task::spawn_blocking(move || format::open_entry(&path, tail)).await {
            Ok(r) => r,
            Err(e) => Err(ReadFailure::Io(io::Error::other(e.to_string()))),
        };
        match res {
            Ok(o) if o.key == key => Ok(Some((loc, o))),
            Ok(o) => {
                self.remove_corrupt(key, loc, o.ident, "file holds another key")
                    .await;
                Ok(None)
            }
            Err(ReadFailure::Missing) => {
                self.forget_missing(loc).await;
                Ok(None)
            }
            Err(ReadFailure::Corrupt { reason, ident }) => {
                self.remove_corrupt(key, loc, ident, &reason).await;
                Ok(None)
            }
            Err(ReadFailure::Io(e)) => Err(StoreError::io(key, e)),
        }
    }

    pub(super) fn temp_path(&self, loc: &Loc) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.inner
            .tmp
            .join(format!("{:016x}-{}-{n}.tmp", loc.id, std::process::id()))
    }
}

impl Inner {
    /// Puts a finished temp file at `path`, creating the fan-out directories on first use.
    pub(super) fn install(&self, temp: &Path, path: &Path) -> io::Result<()> {
        let put = |temp: &Path, path: &Path| match self.commit_mode {
            CommitMode::Copy => format::copy_file(temp, path, self.fsync),
            _ => std::fs::rename(temp, path),
        };
        match put(temp, path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(parent) = path.parent() else {
                    return Err(e);
                };
                std::fs::create_dir_all(parent)?;
                if self.fsync {
                    // Make the new fan-out directories themselves durable.
                    if let Some(grand) = parent.parent() {
                        format::sync_dir(grand)?;
                    }
                    format::sync_dir(&self.objects)?;
                }
                put(temp, path)
            }
            other => other,
        }
    }
}
