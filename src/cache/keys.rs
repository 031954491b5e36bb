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
    /// Prefix purges that writes older than them must respect: (prefix, ticket). Pruned once
    /// no write older than a purge is alive.
    purges: Mutex<Vec<(Box<str>, u64)>>,
    /// Tickets of live usages (fills, sets, copies), to know when a purge can be forgotten.
    live: Mutex<std::collections::BTreeMap<u64, usize>>,
    /// Woken when the last live usage ends (`Cache::close` waits for it).
    idle: tokio::sync::Notify,
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
            purges: Mutex::new(Vec::new()),
            live: Mutex::new(std::collections::BTreeMap::new()),
            idle: tokio::sync::Notify::new(),
        })
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// Usages (fills, sets, copies) still alive.
    pub(crate) fn live_count(&self) -> usize {
        self.live.lock().values().sum()
    }

    /// Waits until no usage is alive.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.lock().is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn track(&self, ticket: u64) {
        *self.live.lock().entry(ticket).or_default() += 1;
    }

    fn untrack(&self, ticket: u64) {
        let oldest = {
            let mut live = self.live.lock();
            if let Some(n) = live.get_mut(&ticket) {
                *n -= 1;
                if *n == 0 {
                    live.remove(&ticket);
                }
            }
            live.keys().next().copied()
        };
        if oldest.is_none() {
            self.idle.notify_waiters();
        }
        let mut purges = self.purges.lock();
        if !purges.is_empty() {
            // A purge matters only to writes that started before it.
            purges.retain(|(_, t)| oldest.is_some_and(|o| o < *t));
        }
    }

    /// Registers a purge of every key under `prefix`: writes that started before it may no
    /// longer commit such keys. Returns the keys with a write in flight, which the caller must
    /// delete under their commit lock (a write may have passed its check just before).
    pub(crate) fn purge_prefix(self: &Arc<Self>, prefix: &str) -> Vec<String> {
        let ticket = self.ticket();
        self.purges.lock().push((Box::from(prefix), ticket));
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            keys.extend(
                shard
                    .keys()
                    .filter(|k| k.starts_with(prefix))
                    .map(|k| k.to_string()),
            );
        }
        keys
    }

    fn purged_since(&self, key: &str, ticket: u64) -> bool {
        self.purges
            .lock()
            .iter()
            .any(|(p, t)| *t > ticket && key.starts_with(&**p))
    }

    /// The fill in flight for `key`, if any (a finished one that is only committing does not
    /// count, as in [`claim`](KeyTable::claim)).
    pub(crate) fn flight(&self, key: &str) -> Option<Arc<Flight>> {
        self.shard(key)
            .lock()
            .get(key)
            .and_then(|s| s.flight.clone())
            .filter(|f| !f.is_finished())
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
        self.track(ticket);
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
        self.track(ticket);
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
        self.track(ticket);
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
        (self.ticket >= floor && !self.table.purged_since(&self.key, self.ticket)).then_some(guard)
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
        {
            let mut shard = self.table.shard(&self.key).lock();
            if let Some(slot) = shard.get_mut(&self.key) {
                slot.users = slot.users.saturating_sub(1);
                if slot.users == 0 {
                    shard.remove(&self.key);
                }
            }
        }
        self.table.untrack(self.ticket);
    }
}
