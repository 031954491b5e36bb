//! The bounded background pools that run refreshes and cold-tier fills, and the runtime they
//! share.
//!
//! Background work is best effort: at most `concurrency` tasks run at once, a bounded number
//! more wait, and anything beyond that is dropped and counted rather than queued without bound.
//! A [`WorkerRuntime`] owns the running slots; each [`WorkerPool`] is one group of it, with its
//! own queue bound, counters and close/drain, and a weight. When tasks of several groups wait,
//! freed slots go to the groups in proportion to their weights (stride scheduling), so one busy
//! cache cannot starve another's refreshes, while a lone busy group may use every slot.
//! [`WorkerPool::try_spawn`] must never block, never panic and never let one task's panic reach
//! another task or the pool's counters; no lock is held while a waiter is woken.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::error::CloseError;

/// Running slots shared by several [`WorkerPool`]s, handed out by weight.
///
/// At most `concurrency` tasks of all its groups run at once. When a slot frees and tasks of
/// several groups wait, it goes to the group that is furthest behind its weighted share, so
/// over any busy stretch each waiting group starts tasks in proportion to its weight. A group
/// that had nothing waiting banks no credit: when it becomes busy again it competes from the
/// current point, not from where it left off. A group alone uses every slot.
///
/// Cloning is cheap and clones share the runtime. Tasks run on the tokio runtime current at
/// [`WorkerPool::try_spawn`]; this type only decides when they start.
///
/// ```
/// use daramjwee::{Cache, WorkerRuntime};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// // Four background slots for two caches; `busy` gets three of every four when both wait.
/// let runtime = WorkerRuntime::new(4);
/// let busy = Cache::builder().worker_pool(runtime.group(3, 1024)).build();
/// let quiet = Cache::builder().worker_pool(runtime.group(1, 256)).build();
/// assert_eq!(runtime.stats().groups, 2);
///
/// // Closing one cache drains its group only.
/// busy.close(Duration::from_secs(5)).await.unwrap();
/// assert!(quiet.stats().dropped_tasks == 0);
/// # });
/// ```
#[derive(Clone)]
pub struct WorkerRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    concurrency: usize,
    sched: Mutex<Sched>,
}

/// The scheduler's state. Only short, non-blocking sections run under its lock: nothing is
/// sent, woken or dropped there (a dropped [`Slot`] would take the lock again).
struct Sched {
    /// Slots not held by a task. Invariant: when it is above zero no live waiter is queued.
    free: usize,
    /// The pass of the last grant: where a group that becomes busy starts from.
    vtime: u128,
    next_group: u64,
    next_waiter: u64,
    groups: Vec<GroupSched>,
}

struct GroupSched {
    id: u64,
    /// `STRIDE1 / weight`: how far the group's pass moves per task started.
    stride: u128,
    /// The group's virtual time; the waiting group with the lowest pass goes next.
    pass: u128,
    waiters: VecDeque<Waiter>,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Slot>,
}

/// The pass distance of a weight-1 group per task. Large, so that `STRIDE1 / weight` rounds
/// by a negligible fraction for any `u32` weight; passes are `u128` so they never wrap.
const STRIDE1: u128 = 1 << 40;

/// A snapshot of a [`WorkerRuntime`]'s slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeStats {
    /// Most tasks running at once, across all groups.
    pub concurrency: usize,
    /// Slots held by tasks now.
    pub running: usize,
    /// Tasks waiting for a slot, across all groups (accepted tasks that have not been polled
    /// yet are not counted).
    pub waiting: usize,
    /// Groups alive (pools not yet dropped).
    pub groups: usize,
}

impl WorkerRuntime {
    /// A runtime running at most `concurrency` tasks at once (at least 1), with no groups yet.
    pub fn new(concurrency: usize) -> WorkerRuntime {
        let concurrency = concurrency.max(1);
        WorkerRuntime {
            shared: Arc::new(Shared {
                concurrency,
                sched: Mutex::new(Sched {
                    free: concurrency,
                    vtime: 0,
                    next_group: 0,
                    next_waiter: 0,
                    groups: Vec::new(),
                }),
            }),
        }
    }

    /// A new group: a [`WorkerPool`] whose tasks run on this runtime's slots.
    ///
    /// `weight` (0 is taken as 1) is the group's share when several groups wait: a group of
    /// weight 3 starts three tasks for every one of a group of weight 1. The group accepts at
    /// most the runtime's concurrency plus `queue` tasks not yet finished; more are dropped and
    /// counted in the group's own [`WorkerStats`]. The group leaves the runtime when its last
    /// clone and its last task are gone.
    pub fn group(&self, weight: u32, queue: usize) -> WorkerPool {
        let weight = weight.max(1);
        let id = {
            let mut s = self.shared.sched.lock();
            let id = s.next_group;
            s.next_group += 1;
            s.groups.push(GroupSched {
                id,
                stride: STRIDE1 / u128::from(weight),
                pass: 0,
                waiters: VecDeque::new(),
            });
            id
        };
        let limit = self.shared.concurrency.saturating_add(queue);
        WorkerPool {
            inner: Arc::new(PoolInner {
                runtime: self.shared.clone(),
                group: id,
                weight,
                limit,
                in_system: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                panicked: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                drained: Notify::new(),
            }),
        }
    }

    /// Most tasks running at once, across all groups.
    pub fn concurrency(&self) -> usize {
        self.shared.concurrency
    }

    /// A snapshot of the slots.
    pub fn stats(&self) -> RuntimeStats {
        let s = self.shared.sched.lock();
        RuntimeStats {
            concurrency: self.shared.concurrency,
            running: self.shared.concurrency - s.free,
            waiting: s.groups.iter().map(|g| g.waiters.len()).sum(),
            groups: s.groups.len(),
        }
    }
}

impl fmt::Debug for WorkerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerRuntime")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Sched {
    fn group_mut(&mut self, id: u64) -> Option<&mut GroupSched> {
        self.groups.iter_mut().find(|g| g.id == id)
    }

    /// Charges `group` for one task start.
    fn charge(&mut self, group: usize) {
        let g = &mut self.groups[group];
        g.pass = g.pass.max(self.vtime);
        self.vtime = g.pass;
        g.pass += g.stride;
        self.free -= 1;
    }

    /// Hands free slots to waiters, the group with the lowest pass first (ties: the older
    /// group). The grants are returned to be sent once the lock is released.
    fn grant(&mut self, shared: &Arc<Shared>, out: &mut Vec<(oneshot::Sender<Slot>, Slot)>) {
        while self.free > 0 {
            let next = self
                .groups
                .iter()
                .enumerate()
                .filter(|(_, g)| !g.waiters.is_empty())
                .min_by_key(|(_, g)| (g.pass, g.id))
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let Some(w) = self.groups[i].waiters.pop_front() else {
                break;
            };
            // A waiter dropped without taking its entry out (it is doing so now) is skipped
            // without charge; one dropped after this check gives the slot back on send.
            // Dropping a sender whose receiver is gone wakes no one, so it may happen here.
            if w.tx.is_closed() {
                continue;
            }
            self.charge(i);
            out.push((
                w.tx,
                Slot {
                    shared: shared.clone(),
                    armed: true,
                },
            ));
        }
    }
}

impl Shared {
    /// Waits for a running slot for a task of `group`.
    async fn acquire(self: &Arc<Self>, group: u64) -> Slot {
        loop {
            let (id, rx) = {
                let mut s = self.sched.lock();
                if s.free > 0 {
                    if let Some(i) = s.groups.iter().position(|g| g.id == group) {
                        s.charge(i);
                        return Slot {
                            shared: self.clone(),
                            armed: true,
                        };
                    }
                }
                let id = s.next_waiter;
                s.next_waiter += 1;
                let vtime = s.vtime;
                let (tx, rx) = oneshot::channel();
                match s.group_mut(group) {
                    Some(g) => {
                        // An idle group banks no credit: it starts from the current pass.
                        if g.waiters.is_empty() {
                            g.pass = g.pass.max(vtime);
                        }
                        g.waiters.push_back(Waiter { id, tx });
                    }
                    // Unreachable: the group lives while its pool does. Run rather than hang.
                    None => {
                        return Slot {
                            shared: self.clone(),
                            armed: false,
                        }
                    }
                }
                (id, rx)
            };
            let mut wait = WaitGuard {
                shared: self,
                group,
                id,
                rx: Some(rx),
            };
            if let Some(rx) = wait.rx.as_mut() {
                if let Ok(slot) = rx.await {
                    wait.rx = None;
                    return slot;
                }
            }
            // The sender went away without a slot (it cannot, but stay correct): queue again.
        }
    }

    /// Gives `n` slots back and hands them on. A grant whose waiter is gone comes back here
    /// instead of being dropped, so a long line of cancelled waiters does not recurse.
    fn release(self: &Arc<Self>, mut n: usize) {
        let mut grants = Vec::new();
        while n > 0 {
            {
                let mut s = self.sched.lock();
                s.free += n;
                debug_assert!(s.free <= self.concurrency);
                s.grant(self, &mut grants);
            }
            n = 0;
            for (tx, slot) in grants.drain(..) {
                if let Err(mut slot) = tx.send(slot) {
                    slot.armed = false;
                    n += 1;
                }
            }
        }
    }
}

/// A running slot. Dropping it gives the slot back, wherever that happens: at the end of a
/// task, or inside a channel whose waiter was dropped after the slot was sent to it.
struct Slot {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.shared.release(1);
        }
    }
}

/// A queued waiter. Dropping it before it got a slot takes its entry out of the queue; a slot
/// already sent to it is freed with the channel, after the lock is released.
struct WaitGuard<'a> {
    shared: &'a Arc<Shared>,
    group: u64,
    id: u64,
    rx: Option<oneshot::Receiver<Slot>>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(rx) = self.rx.take() else { return };
        let removed = {
            let mut s = self.shared.sched.lock();
            s.group_mut(self.group).and_then(|g| {
                let at = g.waiters.iter().position(|w| w.id == self.id)?;
                g.waiters.remove(at)
            })
        };
        drop(removed);
        drop(rx);
    }
}

/// A bounded pool of background tasks: one group of a [`WorkerRuntime`].
///
/// [`WorkerPool::new`] makes a pool with a runtime of its own; [`WorkerRuntime::group`] makes
/// pools that share one. Cloning is cheap and clones share the pool.
///
/// ```
/// use daramjwee::WorkerPool;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let pool = WorkerPool::new(4, 64);
/// assert!(pool.try_spawn(async { /* refresh an entry */ }));
/// pool.close(Duration::from_secs(5)).await.unwrap();
/// assert_eq!(pool.stats().completed, 1);
/// assert!(!pool.try_spawn(async {}), "a closed pool takes no work");
/// # });
/// ```
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    runtime: Arc<Shared>,
    group: u64,
    weight: u32,
    /// Most tasks accepted and not finished (running + waiting).
    limit: usize,
    /// Accepted and not yet finished. It is the admission counter and the drain condition.
    in_system: AtomicUsize,
    running: AtomicUsize,
    dropped: AtomicU64,
    completed: AtomicU64,
    panicked: AtomicU64,
    closed: AtomicBool,
    drained: Notify,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Every task holds the pool, so no waiter of this group is left.
        let mut s = self.runtime.sched.lock();
        s.groups.retain(|g| g.id != self.group);
    }
}

/// A snapshot of a [`WorkerPool`]'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Tasks of this pool running now.
    pub running: usize,
    /// Tasks of this pool accepted and waiting for a free slot.
    pub queued: usize,
    /// Tasks refused since the pool was created (pool full, closed, or no runtime).
    pub dropped: u64,
    /// Tasks that ran to completion.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
}

impl WorkerPool {
    /// A pool with a runtime of its own: at most `concurrency` tasks at once (at least 1) with
    /// at most `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize) -> WorkerPool {
        WorkerRuntime::new(concurrency).group(1, queue)
    }

    /// Runs `fut` in the background on the current tokio runtime, if the pool has room.
    ///
    /// Returns `false`, and counts the task as dropped, when the pool is full, closed, or
    /// called outside a tokio runtime. Never blocks.
    pub fn try_spawn<F>(&self, fut: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let inner = &self.inner;
        let refuse = || {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            false
        };
        if inner.closed.load(Ordering::SeqCst) {
            return refuse();
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("background task dropped: no tokio runtime");
            return refuse();
        };
        let admitted = inner
            .in_system
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < inner.limit).then_some(n + 1)
            });
        if admitted.is_err() {
            tracing::debug!(limit = inner.limit, "background task dropped: pool full");
            return refuse();
        }
        // `close` sets `closed` and then reads `in_system`; we raised `in_system` and now read
        // `closed`. Both orders are SeqCst, so at least one side sees the other: either close
        // waits for this task, or we back out here and close never has to.
        let ticket = Ticket {
            inner: inner.clone(),
            running: false,
        };
        if inner.closed.load(Ordering::SeqCst) {
            drop(ticket);
            return refuse();
        }
        handle.spawn(run(ticket, fut));
        true
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WorkerStats {
        let inner = &self.inner;
        let in_system = inner.in_system.load(Ordering::SeqCst);
        let running = inner.running.load(Ordering::SeqCst);
        WorkerStats {
            running,
            queued: in_system.saturating_sub(running),
            dropped: inner.dropped.load(Ordering::Relaxed),
            completed: inner.completed.load(Ordering::Relaxed),
            panicked: inner.panicked.load(Ordering::Relaxed),
        }
    }

    /// Most tasks running at once: the runtime's concurrency, which this pool may share.
    pub fn concurrency(&self) -> usize {
        self.inner.runtime.concurrency
    }

    /// The pool's share of the runtime when several groups wait.
    pub fn weight(&self) -> u32 {
        self.inner.weight
    }

    /// The runtime this pool is a group of.
    pub fn runtime(&self) -> WorkerRuntime {
        WorkerRuntime {
            shared: self.inner.runtime.clone(),
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Stops accepting work and waits until every accepted task has finished, or `timeout`
    /// passes. Other groups of the same runtime are not affected.
    ///
    /// On timeout the tasks keep running and the error says how many were still pending.
    /// Calling it again waits again.
    ///
    /// # Panics
    ///
    /// Like [`tokio::time::timeout`], when the runtime has no time driver.
    pub async fn close(&self, timeout: Duration) -> Result<(), CloseError> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        let drained = async {
            loop {
                let notified = inner.drained.notified();
                tokio::pin!(notified);
                // Register before checking, so a wake-up between the check and the await
                // is not lost.
                notified.as_mut().enable();
                if inner.in_system.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, drained).await {
            Ok(()) => Ok(()),
            Err(_) => {
                let pending = inner.in_system.load(Ordering::SeqCst);
                tracing::warn!(pending, ?timeout, "background work did not drain in time");
                Err(CloseError { timeout, pending })
            }
        }
    }
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("concurrency", &self.inner.runtime.concurrency)
            .field("weight", &self.inner.weight)
            .field("limit", &self.inner.limit)
            .field("closed", &self.is_closed())
            .field("stats", &self.stats())
            .finish()
    }
}

/// One accepted task's place in the pool. Dropping it gives the place back, so the counters stay
/// right even when the runtime shuts down and drops the task before it finishes.
struct Ticket {
    inner: Arc<PoolInner>,
    running: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.running {
            self.inner.running.fetch_sub(1, Ordering::SeqCst);
        }
        if self.inner.in_system.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.drained.notify_waiters();
        }
    }
}

async fn run<F>(mut ticket: Ticket, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let inner = ticket.inner.clone();
    let slot = inner.runtime.acquire(inner.group).await;
    inner.running.fetch_add(1, Ordering::SeqCst);
    ticket.running = true;
    // The task's state is dropped with it on panic; nothing of ours is left half-updated.
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(()) => {
            inner.completed.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            inner.panicked.fetch_add(1, Ordering::Relaxed);
            tracing::error!("background task panicked");
        }
    }
    // Free the slot, then the place (waking `close`) once the outcome is counted, so a
    // drained pool holds no slot of the runtime.
    drop(slot);
    drop(ticket);
}

#[cfg(test)]
mod tests;
