//! Per-key state of the engine: the fill in flight, the generation floor, and the commit lock.
//!
//! Every write to the cache (a fill, a promotion, a cold copy, a `set`) takes a ticket from one
//! global counter when it starts. `set` and `delete` raise the key's floor to their own ticket. A
//! write may commit only while its ticket is at or above the floor, checked under the key's commit
//! lock, which `delete` also holds while it removes the entry: so a late fill, refresh or cold write
//! can never overwrite a newer `set` or resurrect a deleted entry.
//!
//! A slot exists only while someone uses the key; the table never grows with the key space.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::flight::Flight;

const SHARDS: usize = 64;

#[derive(Default)]
struct Slot {
    flight: Option<Arc<Flight>>,
    floor: u64,
    lock: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

type Shard = Mutex<HashMap<Box<str>, Slot>>;

pub(crate) struct KeyTable {
    shards: Box<[Shard]>,
    hasher: RandomState,
    tickets: AtomicU64,
}

/// What a request found when it asked to fill a key.
pub(crate) enum Claim {
    /// No fill was running: the caller leads a new one and must run it.
    Lead(Arc<Flight>, Usage),
    /// A fill is running: follow it.
    Follow(Arc<Flight>),
}

/// Holds a key's slot alive; carries the holder's ticket.
pub(crate) struct Usage {
    table: Arc<KeyTable>,
    key: Box<str>,
    pub(crate) ticket: u64,
}

impl KeyTable {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(KeyTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            tickets: AtomicU64::new(1),
        })
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// The fill in flight for `key`, if any.
    pub(crate) fn flight(&self, key: &str) -> Option<Arc<Flight>> {
        self.shard(key)
            .lock()
            .get(key)
            .and_then(|s| s.flight.clone())
    }

    /// Joins the running fill, or registers `make()` as the new one. A running fill older than
    /// `max_age` is no longer joined: the caller leads a fresh one (the old one finishes for its
    /// own readers).
    pub(crate) fn claim(
        self: &Arc<Self>,
        key: &str,
        max_age: Duration,
        make: impl FnOnce() -> Arc<Flight>,
    ) -> Claim {
        let mut shard = self.shard(key).lock();
        let slot = shard.entry(Box::from(key)).or_default();
        if let Some(f) = &slot.flight {
            if !f.is_finished() && f.started.elapsed() < max_age {
                return Claim::Follow(f.clone());
            }
        }
        let flight = make();
        slot.flight = Some(flight.clone());
        slot.users += 1;
        let ticket = self.ticket();
        drop(shard);
        Claim::Lead(
            flight,
            Usage {
                table: self.clone(),
                key: Box::from(key),
                ticket,
            },
        )
    }

    /// Registers a writer that is not a coalesced fill (a `set`, a cold copy).
    /// With `raise_floor`, older writes in progress lose the right to commit.
    pub(crate) fn writer(self: &Arc<Self>, key: &str, raise_floor: bool) -> Usage {
        let ticket = self.ticket();
        let mut shard = self.shard(key).lock();
        let slot = shard.entry(Box::from(key)).or_default();
        slot.users += 1;
        if raise_floor {
            slot.floor = slot.floor.max(ticket);
            // New requests must not join a fill whose result will be thrown away.
            slot.flight = None;
        }
        drop(shard);
        Usage {
            table: self.clone(),
            key: Box::from(key),
            ticket,
        }
    }

    /// Registers a cold copy of a write that held `ticket`.
    pub(crate) fn writer_with_ticket(self: &Arc<Self>, key: &str, ticket: u64) -> Usage {
        let mut shard = self.shard(key).lock();
        shard.entry(Box::from(key)).or_default().users += 1;
        drop(shard);
        Usage {
            table: self.clone(),
            key: Box::from(key),
            ticket,
        }
    }
}

impl Usage {
    /// The key this usage holds.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Takes the key's commit lock, and returns it only if this write is still the newest.
    pub(crate) async fn lock_if_current(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lock = {
            let shard = self.table.shard(&self.key).lock();
            shard.get(&self.key)?.lock.clone()
        };
        let guard = lock.lock_owned().await;
        let floor = self
            .table
            .shard(&self.key)
            .lock()
            .get(&self.key)
            .map_or(0, |s| s.floor);
        (self.ticket >= floor).then_some(guard)
    }

    /// Takes the key's commit lock unconditionally (for `delete`).
    pub(crate) async fn lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut shard = self.table.shard(&self.key).lock();
            shard.entry(self.key.clone()).or_default().lock.clone()
        };
        lock.lock_owned().await
    }

    /// Stops advertising `flight` as the key's fill (new requests will not join it).
    pub(crate) fn retire(&self, flight: &Arc<Flight>) {
        let mut shard = self.table.shard(&self.key).lock();
        if let Some(slot) = shard.get_mut(&self.key) {
            if slot.flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, flight)) {
                slot.flight = None;
            }
        }
    }
}

impl Drop for Usage {
    fn drop(&mut self) {
        let mut shard = self.table.shard(&self.key).lock();
        if let Some(slot) = shard.get_mut(&self.key) {
            slot.users = slot.users.saturating_sub(1);
            if slot.users == 0 {
                shard.remove(&self.key);
            }
        }
    }
}
