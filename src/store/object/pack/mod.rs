//! Packing small entries: bodies under a threshold are not uploaded one object each but
//! gathered into shared pack objects with an index, so many small fills cost one PUT per pack
//! (plus one for its index) instead of two PUTs each, and a cold read is one ranged GET of the
//! entry inside its pack (after the key's pointer GET, which keeps purges exact).
//!
//! What a pack never does: make an entry visible before its pack and index are stored (a
//! writer's commit waits for the flush), serve bytes that fail the entry's crc32 or belong to
//! another key, or outrank a purge (the reader checks the key's pointer floor and the prefix
//! floors, as for any entry). Other instances find new packs by listing `_packs/` from where
//! they last looked, once per refresh interval: one LIST per instance per interval.
//!
//! Module map: `format` (the bytes), this file (buffering, flushing, the in-memory index,
//! discovery, reads).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::ops::{backend, corrupt, timed, ProtocolError};
use crate::entry::Metadata;
use crate::error::StoreError;

mod format;

use format::{decode_entry, decode_index, digest, KeyDigest, PackBuilder, Slot};

/// Settings of small-entry packing (see [`BucketStoreBuilder::packing`](super::BucketStoreBuilder::packing)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Packing {
    /// Bodies up to this many bytes are packed.
    pub threshold: usize,
    /// A pack is stored once it holds this many bytes...
    pub pack_bytes: usize,
    /// ...or once its first entry waited this long (the longest a commit waits).
    pub flush_after: Duration,
    /// How often other instances' new packs are looked for (one LIST each time).
    pub refresh: Duration,
    /// Whether a packed entry found in the in-memory index is served without reading the key's
    /// pointer first (default `false`). `true` makes a cold read one ranged GET, but a purge of
    /// a packed key then reaches this instance only through [`SharedPurges`](super::SharedPurges)
    /// (within its interval, and not for purges older than its log's retention), and a newer
    /// entry of the same key stored as its own object by another instance is not seen while
    /// the packed one is indexed here.
    pub trust_index: bool,
}

impl Packing {
    /// Packs bodies up to `threshold` bytes, in packs of 4 MiB flushed after at most 200 ms,
    /// looking for other instances' packs every second.
    pub fn new(threshold: usize) -> Self {
        Packing {
            threshold,
            pack_bytes: 4 << 20,
            flush_after: Duration::from_millis(200),
            refresh: Duration::from_secs(1),
            trust_index: false,
        }
    }

    /// Sets [`trust_index`](Self::trust_index).
    pub fn trust_index(mut self, yes: bool) -> Self {
        self.trust_index = yes;
        self
    }

    /// Sets [`pack_bytes`](Self::pack_bytes).
    pub fn pack_bytes(mut self, bytes: usize) -> Self {
        self.pack_bytes = bytes.max(1);
        self
    }

    /// Sets [`flush_after`](Self::flush_after).
    pub fn flush_after(mut self, wait: Duration) -> Self {
        self.flush_after = wait;
        self
    }

    /// Sets [`refresh`](Self::refresh).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }
}

/// Counters of the packs an instance knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackStats {
    /// Packs this instance stored.
    pub packs_written: u64,
    /// Entries in the in-memory index (this instance's and the others' packs).
    pub indexed: u64,
    /// Bytes of indexed packs whose entries were replaced or purged: what a compaction of the
    /// packs would reclaim.
    pub dead_bytes: u64,
}

type Waiter = oneshot::Sender<Result<(), Arc<StoreError>>>;

#[derive(Default)]
struct Pending {
    pack: PackBuilder,
    waiters: Vec<Waiter>,
    timer_armed: bool,
}

/// Where the other instances' packs were last looked for.
#[derive(Default)]
struct Discovery {
    /// Index objects read within the listing window (packs are named by their creation time,
    /// but become visible when their PUT ends, so each listing starts a window back).
    seen: HashSet<String>,
    since_micros: u64,
    last: Option<Instant>,
}

/// The packs of one store.
pub(super) struct Packs {
    cfg: Packing,
    /// The store's TTL: older entries are dropped from the index (they are misses anyway).
    ttl: Option<Duration>,
    store: Arc<dyn ObjectStore>,
    dir: Path,
    nonce: String,
    counter: AtomicU64,
    op_timeout: Duration,
    pending: Mutex<Pending>,
    index: RwLock<HashMap<KeyDigest, (Arc<str>, Slot)>>,
    dead: AtomicU64,
    written: AtomicU64,
    discovery: Arc<tokio::sync::Mutex<Discovery>>,
    /// Whether a first look at the bucket's packs succeeded.
    discovered: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Packs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packs")
            .field("cfg", &self.cfg)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn now_micros() -> u64 {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Packs {
    pub(super) fn new(
        cfg: Packing,
        ttl: Option<Duration>,
        store: Arc<dyn ObjectStore>,
        dir: Path,
        op_timeout: Duration,
    ) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let nonce = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Packs {
            cfg,
            ttl,
            store,
            dir,
            nonce: format!("{nonce:016x}"),
            counter: AtomicU64::new(0),
            op_timeout,
            pending: Mutex::new(Pending::default()),
            index: RwLock::new(HashMap::new()),
            dead: AtomicU64::new(0),
            written: AtomicU64::new(0),
            discovery: Arc::new(tokio::sync::Mutex::new(Discovery::default())),
            discovered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(super) fn threshold(&self) -> usize {
        self.cfg.threshold
    }

    pub(super) fn trusts_index(&self) -> bool {
        self.cfg.trust_index
    }

    pub(super) fn stats(&self) -> PackStats {
        PackStats {
            packs_written: self.written.load(Ordering::Relaxed),
            indexed: self.index.read().len() as u64,
            dead_bytes: self.dead.load(Ordering::Relaxed),
        }
    }

    /// Adds an entry to the pack being filled and waits until that pack is stored.
    pub(super) async fn add(
        self: &Arc<Self>,
        key: &str,
        meta: &Metadata,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let full = {
            let mut p = self.pending.lock();
            p.pack.push(key, meta, body);
            p.waiters.push(tx);
            if p.pack.len() >= self.cfg.pack_bytes {
                Some(std::mem::take(&mut *p))
            } else {
                if !p.timer_armed {
                    p.timer_armed = true;
                    let packs = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(packs.cfg.flush_after).await;
                        let due = std::mem::take(&mut *packs.pending.lock());
                        packs.flush(due).await;
                    });
                }
                None
            }
        };
        if let Some(full) = full {
            self.flush(full).await;
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(backend(key, ProtocolError::PackFlush { source: e })),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Stores a pack and its index, then makes its entries visible and answers its writers.
    async fn flush(&self, batch: Pending) {
        if batch.pack.is_empty() {
            return;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = format!("{:020}-{}-{n:08}", now_micros(), self.nonce).into();
        let (data, index) = batch.pack.finish();
        let stored = timed("", self.op_timeout, async {
            let pack = self.dir.clone().join(format!("{name}.pack"));
            self.store
                .put(&pack, data.into())
                .await
                .map_err(|e| backend("", e))?;
            let idx = self.dir.clone().join(format!("{name}.idx"));
            self.store
                .put(&idx, index.clone().into())
                .await
                .map_err(|e| backend("", e))
        })
        .await;
        let res = match stored {
            Ok(_) => {
                self.written.fetch_add(1, Ordering::Relaxed);
                let entries = decode_index(&index).unwrap_or_default();
                self.insert(&name, entries);
                Ok(())
            }
            Err(e) => Err(Arc::new(e)),
        };
        for w in batch.waiters {
            let _ = w.send(res.clone());
        }
    }

    /// Adds a pack's entries to the in-memory index, each only if newer than what it has.
    fn insert(&self, name: &Arc<str>, entries: Vec<(KeyDigest, Slot)>) {
        let mut index = self.index.write();
        for (d, slot) in entries {
            match index.get(&d) {
                Some((_, old)) if old.stored_at >= slot.stored_at => {
                    self.dead.fetch_add(u64::from(slot.len), Ordering::Relaxed);
                }
                Some((_, old)) => {
                    self.dead.fetch_add(u64::from(old.len), Ordering::Relaxed);
                    index.insert(d, (name.clone(), slot));
                }
                None => {
                    index.insert(d, (name.clone(), slot));
                }
            }
        }
    }

    /// Drops index entries past the store's TTL, so the index is bounded by what the TTL keeps.
    fn drop_expired(&self) {
        let Some(ttl) = self.ttl else {
            return;
        };
        let Some(horizon) = SystemTime::now().checked_sub(ttl) else {
            return;
        };
        self.index
            .write()
            .retain(|_, (_, slot)| slot.stored_at > horizon);
    }

    /// The packed entry of `key` this instance knows of: its pack and where it is.
    pub(super) fn find(&self, key: &str) -> Option<(Arc<str>, SystemTime)> {
        let index = self.index.read();
        index
            .get(&digest(key))
            .map(|(n, s)| (n.clone(), s.stored_at))
    }

    /// Forgets `key`'s packed entry (purged here); the pointer's floor stops it elsewhere.
    pub(super) fn forget(&self, key: &str) {
        if let Some((_, s)) = self.index.write().remove(&digest(key)) {
            self.dead.fetch_add(u64::from(s.len), Ordering::Relaxed);
        }
    }

    /// Forgets every packed entry (the store was cleared).
    pub(super) fn forget_all(&self) {
        self.index.write().clear();
    }

    /// Reads `key`'s packed entry: one ranged GET. `None` when the pack is gone (expired by
    /// the lifecycle rule) or the entry is another key's.
    pub(super) async fn read(&self, key: &str) -> Result<Option<(Metadata, Bytes)>, StoreError> {
        let Some((name, slot)) = self.index.read().get(&digest(key)).cloned() else {
            return Ok(None);
        };
        let path = self.dir.clone().join(format!("{name}.pack"));
        let range = slot.offset..slot.offset + u64::from(slot.len);
        let buf = match self.store.get_range(&path, range).await {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(backend(key, e)),
        };
        let (stored_key, meta, body) =
            decode_entry(buf, &slot).map_err(|e| corrupt(key, e.to_string()))?;
        Ok((stored_key == key).then_some((meta, body)))
    }

    /// Looks for other instances' new packs when the refresh interval has passed. The first
    /// look is waited for (a new instance would otherwise miss every packed entry); later ones
    /// run in the background, so a lookup never waits for a listing.
    pub(super) async fn refresh_if_due(self: &Arc<Self>) {
        let discovered = self.discovered.load(Ordering::Acquire);
        let d = if discovered {
            self.discovery.clone().try_lock_owned().ok()
        } else {
            Some(self.discovery.clone().lock_owned().await)
        };
        let Some(mut d) = d else {
            return; // a look is running
        };
        if d.last.is_some_and(|t| t.elapsed() < self.cfg.refresh) {
            return;
        }
        d.last = Some(Instant::now());
        let packs = self.clone();
        let look = async move {
            match packs.refresh(&mut d).await {
                Ok(()) => packs.discovered.store(true, Ordering::Release),
                Err(e) => tracing::warn!(error = %e, "object store: looking for new packs failed"),
            }
        };
        if discovered {
            tokio::spawn(look);
        } else {
            look.await;
        }
    }

    /// Lists the packs named since the last look (a window back), and indexes the new ones.
    async fn refresh(&self, d: &mut Discovery) -> Result<(), StoreError> {
        // A pack is named when its flush starts and listed once its PUT ends: look back as far
        // as a flush may take.
        let window = u64::try_from(self.op_timeout.as_micros()).unwrap_or(u64::MAX);
        let from = d.since_micros.saturating_sub(window);
        let offset = self.dir.clone().join(format!("{from:020}"));
        let mut listing = self.store.list_with_offset(Some(&self.dir), &offset);
        let mut newest = d.since_micros;
        while let Some(item) =
            timed("", self.op_timeout, async { Ok(listing.next().await) }).await?
        {
            let meta = item.map_err(|e| backend("", e))?;
            let Some(name) = meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".idx"))
            else {
                continue;
            };
            let micros = name
                .get(..20)
                .and_then(|m| m.parse::<u64>().ok())
                .unwrap_or(0);
            newest = newest.max(micros);
            if name.contains(self.nonce.as_str()) || !d.seen.insert(name.to_owned()) {
                continue;
            }
            let buf = timed("", self.op_timeout, async {
                let res = self
                    .store
                    .get(&meta.location)
                    .await
                    .map_err(|e| backend("", e))?;
                res.bytes().await.map_err(|e| backend("", e))
            })
            .await?;
            let entries = decode_index(&buf).map_err(|e| corrupt("", e.to_string()))?;
            self.insert(&Arc::from(name), entries);
        }
        d.since_micros = newest;
        self.drop_expired();
        let keep_from = newest.saturating_sub(window);
        d.seen
            .retain(|n| n.get(..20).and_then(|m| m.parse::<u64>().ok()).unwrap_or(0) >= keep_from);
        Ok(())
    }
}
