//! Unit tests of the parent module.

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

/// Queues `n` tasks on each of `groups` (alternating), each logging its tag when it starts.
fn queue_logged(groups: &[(char, &WorkerPool)], n: usize, log: &Arc<Mutex<Vec<char>>>) {
    for _ in 0..n {
        for &(tag, pool) in groups {
            let log = log.clone();
            assert!(pool.try_spawn(async move { log.lock().push(tag) }));
        }
    }
}

/// With the single slot held by a gated task of `holder`, queues 40 tasks on each group,
/// frees the slot, and returns the order in which the 80 started.
async fn start_order(
    rt: &WorkerRuntime,
    holder: &WorkerPool,
    groups: &[(char, &WorkerPool)],
) -> Vec<char> {
    let gate = Arc::new(Semaphore::new(0));
    let (active, peak) = (Arc::default(), Arc::default());
    assert!(holder.try_spawn(gated(&gate, &active, &peak)));
    settle(|| rt.stats().running == 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    queue_logged(groups, 40, &log);
    settle(|| rt.stats().waiting == 80).await;
    gate.add_permits(1);
    settle(|| log.lock().len() == 80).await;
    let order = log.lock().clone();
    order
}

#[tokio::test]
async fn waiting_groups_share_a_slot_in_proportion_to_their_weights() {
    let rt = WorkerRuntime::new(1);
    let heavy = rt.group(3, 100);
    let light = rt.group(1, 100);
    let order = start_order(&rt, &light, &[('h', &heavy), ('l', &light)]).await;
    let heavy_first = order[..40].iter().filter(|&&t| t == 'h').count();
    assert!(
        (29..=31).contains(&heavy_first),
        "{heavy_first} of 40: {order:?}"
    );
    // Stride scheduling interleaves: the light group never waits more than 4 starts.
    let longest_heavy_run = order[..40]
        .split(|&t| t == 'l')
        .map(<[char]>::len)
        .max()
        .unwrap();
    assert!(longest_heavy_run <= 4, "{order:?}");
    assert_eq!(heavy.stats().completed, 40);
    assert_eq!(light.stats().completed, 41);
}

#[tokio::test]
async fn an_idle_group_banks_no_credit() {
    let rt = WorkerRuntime::new(1);
    let heavy = rt.group(3, 100);
    let light = rt.group(1, 100);
    // The light group runs alone for a while; the heavy group's pass stays behind.
    let log = Arc::new(Mutex::new(Vec::new()));
    queue_logged(&[('l', &light)], 60, &log);
    settle(|| light.stats().completed == 60).await;
    let order = start_order(&rt, &light, &[('h', &heavy), ('l', &light)]).await;
    let heavy_first = order[..40].iter().filter(|&&t| t == 'h').count();
    // Had it banked the idle time, the heavy group would take all of the first 40.
    assert!(
        (29..=31).contains(&heavy_first),
        "{heavy_first} of 40: {order:?}"
    );
}

#[tokio::test]
async fn a_full_group_drops_its_own_tasks_and_no_other() {
    let rt = WorkerRuntime::new(2);
    let full = rt.group(1, 1);
    let other = rt.group(1, 4);
    let gate = Arc::new(Semaphore::new(0));
    let (active, peak) = (Arc::default(), Arc::default());
    // Limit: the runtime's 2 slots plus a queue of 1.
    for _ in 0..3 {
        assert!(full.try_spawn(gated(&gate, &active, &peak)));
    }
    assert!(!full.try_spawn(async {}));
    assert!(!full.try_spawn(async {}));
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..6 {
        let ran = ran.clone();
        assert!(other.try_spawn(async move {
            ran.fetch_add(1, Ordering::SeqCst);
        }));
    }
    assert!(!other.try_spawn(async {}), "other's own limit is 2 + 4");
    assert_eq!((full.stats().dropped, other.stats().dropped), (2, 1));
    settle(|| rt.stats().waiting == 7).await;
    // One slot frees: `other` has waited less than `full` has run, so it goes first even
    // though `full` queued earlier.
    gate.add_permits(1);
    settle(|| ran.load(Ordering::SeqCst) >= 1).await;
    gate.add_permits(2);
    other.close(Duration::from_secs(60)).await.unwrap();
    full.close(Duration::from_secs(60)).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 6);
    assert_eq!((full.stats().completed, other.stats().completed), (3, 6));
    assert_eq!(rt.stats().running, 0);
}

#[test]
fn a_waiter_dropped_before_or_after_its_grant_gives_the_slot_back() {
    let rt = WorkerRuntime::new(1);
    let pool = rt.group(1, 0);
    let (shared, group) = (&pool.inner.runtime, pool.inner.group);
    let first = shared.acquire(group).now_or_never().expect("a free slot");
    // Dropped while queued: its entry leaves the queue.
    let mut queued = Box::pin(shared.acquire(group));
    assert!(queued.as_mut().now_or_never().is_none());
    assert_eq!(rt.stats().waiting, 1);
    drop(queued);
    assert_eq!(rt.stats().waiting, 0);
    // Dropped after the slot was sent to it, before it was polled again.
    let mut granted = Box::pin(shared.acquire(group));
    assert!(granted.as_mut().now_or_never().is_none());
    drop(first);
    let s = rt.stats();
    assert_eq!(
        (s.running, s.waiting),
        (1, 0),
        "the slot went to the waiter"
    );
    drop(granted);
    assert_eq!(rt.stats().running, 0, "and came back when it was dropped");
    let again = shared.acquire(group).now_or_never();
    assert!(again.is_some(), "the slot can be taken again");
}

#[test]
fn tasks_dropped_with_their_tokio_runtime_give_every_slot_back() {
    let rt = WorkerRuntime::new(2);
    let a = rt.group(1, 16);
    let b = rt.group(2, 16);
    let gate = Arc::new(Semaphore::new(0));
    let (active, peak) = (Arc::default(), Arc::default());
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tokio_rt.block_on(async {
        for _ in 0..8 {
            assert!(a.try_spawn(gated(&gate, &active, &peak)));
            assert!(b.try_spawn(gated(&gate, &active, &peak)));
        }
        settle(|| rt.stats().waiting == 14).await;
    });
    assert_eq!(rt.stats().running, 2);
    // Drops every task: the running ones free their slots, which are handed to waiters that
    // are dropped in turn.
    drop(tokio_rt);
    let s = rt.stats();
    assert_eq!((s.running, s.waiting), (0, 0));
    for p in [&a, &b] {
        let s = p.stats();
        assert_eq!((s.running, s.queued), (0, 0));
    }
    // Later work runs at full concurrency again.
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    tokio_rt.block_on(async {
        let gate = Arc::new(Semaphore::new(0));
        let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        for _ in 0..6 {
            assert!(a.try_spawn(gated(&gate, &active, &peak)));
        }
        settle(|| active.load(Ordering::SeqCst) == 2).await;
        gate.add_permits(6);
        a.close(Duration::from_secs(60)).await.unwrap();
        assert_eq!(a.stats().completed, 6);
    });
}

#[tokio::test]
async fn closing_one_group_drains_it_and_leaves_the_other_working() {
    let rt = WorkerRuntime::new(2);
    let closing = rt.group(1, 8);
    let staying = rt.group(1, 8);
    let gate = Arc::new(Semaphore::new(0));
    let (active, peak) = (Arc::default(), Arc::default());
    for _ in 0..4 {
        assert!(closing.try_spawn(gated(&gate, &active, &peak)));
    }
    let closer = {
        let pool = closing.clone();
        tokio::spawn(async move { pool.close(Duration::from_secs(3600)).await })
    };
    settle(|| closing.is_closed()).await;
    assert!(!closing.try_spawn(async {}), "closed");
    assert!(!staying.is_closed());
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let ran = ran.clone();
        assert!(staying.try_spawn(async move {
            ran.fetch_add(1, Ordering::SeqCst);
        }));
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!closer.is_finished(), "close returned with work pending");
    gate.add_permits(4);
    closer.await.unwrap().unwrap();
    assert_eq!(closing.stats().completed, 4);
    settle(|| ran.load(Ordering::SeqCst) == 3).await;
    // The other group still takes work, and may use every slot.
    let gate = Arc::new(Semaphore::new(0));
    let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::default());
    for _ in 0..4 {
        assert!(staying.try_spawn(gated(&gate, &active, &peak)));
    }
    settle(|| active.load(Ordering::SeqCst) == 2).await;
    gate.add_permits(4);
    staying.close(Duration::from_secs(60)).await.unwrap();
    assert_eq!(staying.stats().completed, 7);
    assert_eq!((closing.stats().dropped, staying.stats().dropped), (1, 0));
}

#[test]
fn a_group_leaves_the_runtime_when_its_pool_is_dropped() {
    let rt = WorkerRuntime::new(2);
    let a = rt.group(0, 1);
    assert_eq!(a.weight(), 1, "weight 0 is taken as 1");
    let b = rt.group(5, 1);
    assert_eq!((b.weight(), b.concurrency()), (5, 2));
    assert_eq!(rt.stats().groups, 2);
    drop(a);
    assert_eq!(rt.stats().groups, 1);
    assert_eq!(b.runtime().stats().groups, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_slots_hold_under_concurrent_spawns_from_two_groups() {
    let rt = WorkerRuntime::new(3);
    let groups = [rt.group(1, 64), rt.group(2, 64)];
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let spawners: Vec<_> = groups
        .iter()
        .map(|pool| {
            let (pool, active, peak) = (pool.clone(), active.clone(), peak.clone());
            tokio::spawn(async move {
                let mut accepted = 0u64;
                for _ in 0..300 {
                    let (active, peak) = (active.clone(), peak.clone());
                    accepted += u64::from(pool.try_spawn(async move {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        active.fetch_sub(1, Ordering::SeqCst);
                    }));
                    tokio::task::yield_now().await;
                }
                accepted
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for s in spawners {
        accepted.push(s.await.unwrap());
    }
    for (pool, accepted) in groups.iter().zip(accepted) {
        pool.close(Duration::from_secs(60)).await.unwrap();
        let s = pool.stats();
        assert_eq!((s.completed, s.completed + s.dropped), (accepted, 300));
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);
    let s = rt.stats();
    assert_eq!((s.running, s.waiting), (0, 0));
}
