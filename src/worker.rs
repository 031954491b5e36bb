//! The bounded background pool that runs refreshes and cold-tier fills.
//!
//! Background work is best effort: at most `concurrency` tasks run at once, at most `queue` more
//! wait, and anything beyond that is dropped and counted rather than queued without bound.
//! [`WorkerPool::try_spawn`] must never block, never panic and never let one task's panic reach
//! another task or the pool's counters.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, Semaphore};

use crate::error::CloseError;

/// A bounded pool of background tasks on the current tokio runtime.
///
/// Cloning is cheap and clones share the pool.
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
    concurrency: usize,
    /// Most tasks accepted and not finished (running + waiting).
    limit: usize,
    /// Accepted and not yet finished. It is the admission counter and the drain condition.
    in_system: AtomicUsize,
    running: AtomicUsize,
    dropped: AtomicU64,
    completed: AtomicU64,
    panicked: AtomicU64,
    closed: AtomicBool,
    permits: Semaphore,
    drained: Notify,
}

/// A snapshot of a [`WorkerPool`]'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Tasks running now.
    pub running: usize,
    /// Tasks accepted and waiting for a free slot.
    pub queued: usize,
    /// Tasks refused since the pool was created (pool full, closed, or no runtime).
    pub dropped: u64,
    /// Tasks that ran to completion.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
}

impl WorkerPool {
    /// A pool running at most `concurrency` tasks at once (at least 1) with at most `queue`
    /// more waiting.
    pub fn new(concurrency: usize, queue: usize) -> WorkerPool {
        let concurrency = concurrency.max(1);
        WorkerPool {
            inner: Arc::new(PoolInner {
                concurrency,
                limit: concurrency.saturating_add(queue),
                in_system: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                panicked: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                permits: Semaphore::new(concurrency),
                drained: Notify::new(),
            }),
        }
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

    /// Most tasks running at once.
    pub fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Stops accepting work and waits until every accepted task has finished, or `timeout`
    /// passes.
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
            .field("concurrency", &self.inner.concurrency)
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
    // The semaphore is never closed, so acquiring only waits; treat an error as a free slot
    // rather than losing the task.
    let _permit = inner.permits.acquire().await.ok();
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
    // Release the place (and wake `close`) only after the outcome is counted.
    drop(ticket);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Semaphore;

    use super::*;

    /// Yields until `cond` holds; fails instead of hanging if it never does.
    async fn settle(mut cond: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition never reached");
    }

    /// A task that waits for a permit from `gate`, recording how many run at once.
    fn gated(
        gate: &Arc<Semaphore>,
        active: &Arc<AtomicUsize>,
        peak: &Arc<AtomicUsize>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (gate, active, peak) = (gate.clone(), active.clone(), peak.clone());
        async move {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn never_runs_more_than_concurrency_at_once() {
        let pool = WorkerPool::new(2, 8);
        let gate = Arc::new(Semaphore::new(0));
        let (active, peak) = (Arc::default(), Arc::default());
        for _ in 0..10 {
            assert!(pool.try_spawn(gated(&gate, &active, &peak)));
        }
        settle(|| active.load(Ordering::SeqCst) == 2).await;
        let stats = pool.stats();
        assert_eq!((stats.running, stats.queued), (2, 8));
        // Let them through one at a time; each freed slot admits exactly one waiter.
        for _ in 0..10 {
            gate.add_permits(1);
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            assert!(active.load(Ordering::SeqCst) <= 2);
        }
        pool.close(Duration::from_secs(60)).await.unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(pool.stats().completed, 10);
    }

    #[tokio::test]
    async fn overflow_beyond_the_queue_is_dropped_and_counted() {
        let pool = WorkerPool::new(1, 2);
        let gate = Arc::new(Semaphore::new(0));
        let (active, peak) = (Arc::default(), Arc::default());
        for _ in 0..3 {
            assert!(pool.try_spawn(gated(&gate, &active, &peak)));
        }
        assert!(!pool.try_spawn(gated(&gate, &active, &peak)));
        assert!(!pool.try_spawn(async {}));
        assert_eq!(pool.stats().dropped, 2);
        gate.add_permits(3);
        pool.close(Duration::from_secs(60)).await.unwrap();
        let stats = pool.stats();
        assert_eq!((stats.completed, stats.dropped), (3, 2));
    }

    #[tokio::test]
    async fn a_finished_task_frees_its_place() {
        let pool = WorkerPool::new(1, 0);
        let gate = Arc::new(Semaphore::new(0));
        let (active, peak) = (Arc::default(), Arc::default());
        assert!(pool.try_spawn(gated(&gate, &active, &peak)));
        assert!(!pool.try_spawn(async {}), "full");
        gate.add_permits(1);
        settle(|| pool.stats().completed == 1).await;
        settle(|| pool.stats().running == 0).await;
        assert!(pool.try_spawn(async {}), "room again");
    }

    #[tokio::test]
    async fn close_waits_until_all_work_has_finished() {
        let pool = WorkerPool::new(2, 4);
        let gate = Arc::new(Semaphore::new(0));
        let (active, peak) = (Arc::default(), Arc::default());
        for _ in 0..6 {
            assert!(pool.try_spawn(gated(&gate, &active, &peak)));
        }
        let closer = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.close(Duration::from_secs(3600)).await })
        };
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!closer.is_finished(), "close returned with work pending");
        assert!(pool.is_closed());
        gate.add_permits(6);
        closer.await.unwrap().unwrap();
        let stats = pool.stats();
        assert_eq!((stats.completed, stats.running, stats.queued), (6, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn close_times_out_and_reports_pending_tasks() {
        let pool = WorkerPool::new(1, 3);
        let gate = Arc::new(Semaphore::new(0));
        let (active, peak) = (Arc::default(), Arc::default());
        for _ in 0..4 {
            assert!(pool.try_spawn(gated(&gate, &active, &peak)));
        }
        let err = pool.close(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.pending, 4);
        assert_eq!(err.timeout, Duration::from_secs(1));
        // The tasks were not cancelled: they finish once released.
        gate.add_permits(4);
        pool.close(Duration::from_secs(1)).await.unwrap();
        assert_eq!(pool.stats().completed, 4);
    }

    #[tokio::test]
    async fn a_panicking_task_is_counted_and_harms_no_other() {
        let pool = WorkerPool::new(1, 4);
        let ran = Arc::new(AtomicUsize::new(0));
        assert!(pool.try_spawn(async { panic!("boom") }));
        for _ in 0..3 {
            let ran = ran.clone();
            assert!(pool.try_spawn(async move {
                ran.fetch_add(1, Ordering::SeqCst);
            }));
        }
        pool.close(Duration::from_secs(60)).await.unwrap();
        let stats = pool.stats();
        assert_eq!(ran.load(Ordering::SeqCst), 3);
        assert_eq!((stats.panicked, stats.completed), (1, 3));
        assert_eq!((stats.running, stats.queued), (0, 0));
    }

    #[tokio::test]
    async fn try_spawn_after_close_is_refused() {
        let pool = WorkerPool::new(2, 2);
        pool.close(Duration::from_secs(1)).await.unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        assert!(!pool.try_spawn(async move { flag.store(true, Ordering::SeqCst) }));
        tokio::task::yield_now().await;
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(pool.stats().dropped, 1);
    }

    #[test]
    fn try_spawn_outside_a_runtime_is_refused() {
        let pool = WorkerPool::new(2, 2);
        assert!(!pool.try_spawn(async {}));
        let stats = pool.stats();
        assert_eq!((stats.dropped, stats.running, stats.queued), (1, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_racing_spawns_never_leaves_accepted_work_behind() {
        for _ in 0..20 {
            let pool = WorkerPool::new(2, 16);
            let accepted = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicUsize::new(0));
            let spawners: Vec<_> = (0..2)
                .map(|_| {
                    let (pool, accepted, done) = (pool.clone(), accepted.clone(), done.clone());
                    tokio::spawn(async move {
                        for _ in 0..200 {
                            let done = done.clone();
                            if pool.try_spawn(async move {
                                tokio::task::yield_now().await;
                                done.fetch_add(1, Ordering::SeqCst);
                            }) {
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            tokio::task::yield_now().await;
            pool.close(Duration::from_secs(60)).await.unwrap();
            // Whatever was accepted before close won the race has finished by now.
            let finished = done.load(Ordering::SeqCst);
            for s in spawners {
                s.await.unwrap();
            }
            assert_eq!(finished, accepted.load(Ordering::SeqCst));
            let stats = pool.stats();
            assert_eq!(stats.completed as usize, finished);
            assert_eq!((stats.running, stats.queued), (0, 0));
        }
    }
}
