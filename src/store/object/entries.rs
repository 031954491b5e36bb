//! One key's entry in the bucket: reading it (the checks that turn a pointer into a hit), and
//! changing it in place (a purge's tombstone, a `304` metadata refresh), each change a
//! conditional swap of the pointer object.

use std::time::SystemTime;

use object_store::path::Path;

use super::commit::Swap;
use super::floors::purge_time;
use super::ops::{backend, delete_quiet, timed, ProtocolError};
use super::pointer::{encode_pointer, encode_tombstone, read_slot, Pointer, Slot};
use super::Inner;
use crate::entry::Metadata;
use crate::error::StoreError;

/// A live entry found by [`Inner::lookup`].
pub(super) enum Found {
    /// An entry of its own: the pointer naming its body object.
    Pointer(Pointer),
    /// A packed entry, read whole (it is small).
    Packed(Metadata, bytes::Bytes),
}

/// How many times a purge or a refresh re-reads and retries a pointer swap it lost. Losing means
/// another writer made progress, so this bounds only a pathological stream of writers.
const SWAP_ATTEMPTS: u32 = 8;

impl Inner {
    /// Reads the pointer object of hash `h`.
    pub(super) async fn read_slot(&self, key: &str, h: &str) -> Result<Slot, StoreError> {
        read_slot(self.store.as_ref(), &self.layout, key, h).await
    }

    /// Whether an entry of `key` stored at `stored_at` is purged, by the key's own floor or by a
    /// prefix floor.
    pub(super) fn is_purged(&self, slot: &Slot, key: &str, stored_at: SystemTime) -> bool {
        slot.purges(stored_at) || stored_at <= self.floors.floor_for(key)
    }

    /// The live entry of `key`: its pointer's or its packed one, whichever is newer, when it
    /// is for this key, not purged and within the TTL.
    pub(super) async fn lookup(&self, key: &str, h: &str) -> Result<Option<Found>, StoreError> {
        if let Some(found) = self.lookup_trusted_pack(key).await? {
            return Ok(Some(found));
        }
        let slot = self.read_slot(key, h).await?;
        let floor = Slot {
            version: None,
            floor: slot.floor,
            entry: None,
        };
        let pointer = self.live(key, slot).map(|(p, _)| p);
        let Some(packs) = &self.packs else {
            return Ok(pointer.map(Found::Pointer));
        };
        packs.refresh_if_due().await;
        let usable = |at: SystemTime| !self.is_purged(&floor, key, at) && !self.expired(at);
        let packed_at = packs.find(key).map(|(_, at)| at).filter(|at| usable(*at));
        let newer = match (&pointer, packed_at) {
            (Some(p), Some(at)) => at > p.meta.stored_at,
            (None, Some(_)) => true,
            _ => false,
        };
        if newer {
            if let Some((meta, body)) = packs.read(key).await? {
                if usable(meta.stored_at) {
                    return Ok(Some(Found::Packed(meta, body)));
                }
            }
        }
        Ok(pointer.map(Found::Pointer))
    }

    /// With [`Packing::trust_index`](super::Packing::trust_index): the packed entry, read with
    /// one ranged GET and no pointer GET, when the index has one that no prefix floor purges.
    async fn lookup_trusted_pack(&self, key: &str) -> Result<Option<Found>, StoreError> {
        let Some(packs) = self.packs.as_ref().filter(|p| p.trusts_index()) else {
            return Ok(None);
        };
        packs.refresh_if_due().await;
        let usable = |at: SystemTime| at > self.floors.floor_for(key) && !self.expired(at);
        if !packs.find(key).is_some_and(|(_, at)| usable(at)) {
            return Ok(None);
        }
        Ok(packs
            .read(key)
            .await?
            .filter(|(meta, _)| usable(meta.stored_at))
            .map(|(meta, body)| Found::Packed(meta, body)))
    }

    fn expired(&self, stored_at: SystemTime) -> bool {
        let age = SystemTime::now()
            .duration_since(stored_at)
            .unwrap_or_default();
        self.ttl.is_some_and(|ttl| age >= ttl)
    }

    fn live(&self, key: &str, mut slot: Slot) -> Option<(Pointer, Slot)> {
        let p = slot.entry.take()?;
        if p.key != key {
            tracing::debug!(key, other = %p.key, "object store: hash collision, treated as a miss");
            return None;
        }
        if self.is_purged(&slot, key, p.meta.stored_at) {
            tracing::trace!(key, "object store: entry purged, treated as a miss");
            return None;
        }
        if self.expired(p.meta.stored_at) {
            tracing::trace!(
                key,
                "object store: entry older than the TTL, treated as a miss"
            );
            return None;
        }
        Some((p, slot))
    }

    /// Purges `key`: its pointer becomes a tombstone whose floor is the purge's instant, so no
    /// fill that started earlier can commit it again, here or on another instance.
    ///
    /// A purge replayed from the purge log is free when the bucket already reflects it (the
    /// floor is at or past the purge's instant): one GET, no PUT.
    pub(super) async fn tombstone(&self, key: &str, h: &str) -> Result<(), StoreError> {
        let at = purge_time();
        if let Some(packs) = &self.packs {
            packs.forget(key);
        }
        let path = self.layout.meta_path(h);
        for _ in 0..SWAP_ATTEMPTS {
            let slot = match self.read_slot(key, h).await {
                Ok(slot) => slot,
                // An unreadable pointer under this key's hash is replaced all the same.
                Err(StoreError::Corrupt { .. }) => {
                    return self.force_tombstone(key, &path, at).await
                }
                Err(e) => return Err(e),
            };
            if slot.floor >= at {
                return Ok(());
            }
            if slot.entry.as_ref().is_some_and(|p| p.key != key) {
                return Ok(()); // another key's entry (a hash collision): not ours to purge
            }
            let record = encode_tombstone(at);
            let store = self.store.as_ref();
            match self
                .swapper
                .swap(store, key, &path, slot.version.as_ref(), record)
                .await?
            {
                Swap::Lost => continue,
                Swap::Done => {
                    if let Some(p) = slot.entry {
                        self.delete_body_best_effort(key, &p.body).await;
                    }
                    return Ok(());
                }
            }
        }
        Err(backend(
            key,
            ProtocolError::Contended {
                attempts: SWAP_ATTEMPTS,
            },
        ))
    }

    async fn force_tombstone(
        &self,
        key: &str,
        path: &Path,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        use object_store::ObjectStoreExt as _;
        self.store
            .put(path, encode_tombstone(at).into())
            .await
            .map(drop)
            .map_err(|e| backend(key, e))
    }

    /// Replaces the metadata of `key`'s live entry, keeping its body, its length and its floor.
    /// `Ok(false)`: no live entry (absent, purged, expired, or purged while refreshing).
    pub(super) async fn refresh(
        &self,
        key: &str,
        h: &str,
        mut meta: Metadata,
    ) -> Result<bool, StoreError> {
        let path = self.layout.meta_path(h);
        for _ in 0..SWAP_ATTEMPTS {
            let slot = self.read_slot(key, h).await?;
            let Some((old, slot)) = self.live(key, slot) else {
                return Ok(false);
            };
            meta.content_length = old.meta.content_length;
            let record = encode_pointer(&old.body, key, &meta, slot.floor);
            let store = self.store.as_ref();
            match self
                .swapper
                .swap(store, key, &path, slot.version.as_ref(), record)
                .await?
            {
                Swap::Done => return Ok(true),
                Swap::Lost => continue,
            }
        }
        Err(backend(
            key,
            ProtocolError::Contended {
                attempts: SWAP_ATTEMPTS,
            },
        ))
    }

    /// Deletes a body that no pointer names any more; failure only leaves garbage behind.
    pub(super) async fn delete_body_best_effort(&self, key: &str, path: &Path) {
        let delete = delete_quiet(self.store.as_ref(), key, path);
        if let Err(e) = timed(key, self.op_timeout, delete).await {
            tracing::warn!(key, path = %path, error = %e, "object store: could not delete an unreferenced body (left for the lifecycle rule)");
        }
    }
}
