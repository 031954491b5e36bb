//! Coalescing: one fill per key, with every reader streaming the fill as it arrives.
//!
//! A [`Flight`] is the shared state of one fill (an origin fetch or a promotion from a lower tier).
//! The fill task pushes chunks into a bounded log; each [`FlightReader`] (the request that started
//! the fill, and every follower that joined it) reads the log from the start at its own pace.
//!
//! Memory stays bounded: the log keeps the whole body only while it fits both the per-fill retain
//! limit and the budget all fills share. While it does, late followers start from byte 0 and the
//! fill runs at the origin's pace, not its slowest reader's (as Varnish streams an object that is
//! still arriving): the bytes are held anyway. Past that, chunks every reader has read are
//! dropped, late followers wait for the fill to finish and then read the stored entry, and the
//! fill never runs more than the window ahead of its slowest reader.
//!
//! A fill that fails ends every reader with an error, never with a clean end. A fill whose readers
//! have all gone (and that is not a background refresh) is abandoned, and leaves no entry.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_core::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::entry::{EntryBody, Metadata};
use crate::error::{Error, FillError};

/// What the fill learned about the response before its body.
#[derive(Clone, Debug)]
pub(crate) enum Head {
    /// Not known yet.
    Pending,
    /// A body follows; readers stream it, and the fill stores it as the second field says.
    Body(Arc<Metadata>, crate::cache::Storing),
    /// The origin confirmed the stored entry; readers read it from the store.
    NotModified,
    /// A fresh entry was found stored after all (another fill committed it just before this
    /// one was claimed); readers read it from the store.
    Stored,
    /// The response must not be shared: each follower fetches on its own.
    Pass,
    /// The origin failed, and the stored entry is served as it is (stale-if-error); readers
    /// read it from the store. `status` is the origin's error status, if it answered one.
    Stale(Option<http::StatusCode>),
    /// The fill failed before the head.
    Failed(FillError),
}

struct Reader {
    pos: u64,
    waker: Option<Waker>,
}

struct State {
    head: Head,
    chunks: VecDeque<Bytes>,
    /// Global index of `chunks[0]`.
    first: u64,
    /// Bytes currently held in `chunks`.
    held: u64,
    /// Bytes pushed in total.
    total: u64,
    /// While true, nothing is trimmed and a new reader can start at byte 0.
    retain_all: bool,
    /// Bytes of `held` charged to the shared [`RetainBudget`] (while `retain_all`).
    charged: u64,
    readers: HashMap<u64, Reader>,
    next_reader: u64,
    /// `Some(Ok)` after a clean end, `Some(Err)` after a failure.
    end: Option<Result<(), FillError>>,
    /// Set once every byte of a body that checked out (its declared length) is in the log:
    /// readers end cleanly then, while the fill goes on to commit.
    body_complete: bool,
    /// Woken when readers advance (the filler waits for room) or leave.
    filler: Option<Waker>,
    /// A background fill keeps going with no reader.
    detached: bool,
}

/// Limits of one flight.
#[derive(Clone, Debug)]
pub(crate) struct FlightLimits {
    /// Bytes the fill may run ahead of its slowest reader.
    pub window: u64,
    /// Bytes kept from the start so late followers can join at byte 0.
    pub retain: u64,
    /// What all flights of a cache may retain together.
    pub budget: Arc<RetainBudget>,
}

/// The bytes all flights of one cache may keep from their starts, together: with many large
/// fills at once, the ones that would go over it stop retaining (their late followers then wait
/// for the stored entry), so memory stays bounded whatever the number of fills.
#[derive(Debug)]
pub(crate) struct RetainBudget {
    used: AtomicU64,
    limit: u64,
}

impl RetainBudget {
    pub(crate) fn new(limit: u64) -> Arc<RetainBudget> {
        Arc::new(RetainBudget {
            used: AtomicU64::new(0),
            limit,
        })
    }

    /// Charges `n` bytes, unless that would go over the limit.
    fn try_charge(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes charged now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// The shared state of one fill.
pub(crate) struct Flight {
    state: Mutex<State>,
    finished: Notify,
    head_ready: Notify,
    pub(crate) started: Instant,
    limits: FlightLimits,
}

impl Flight {
    pub(crate) fn new(limits: FlightLimits, detached: bool) -> Arc<Flight> {
        Arc::new(Flight {
            state: Mutex::new(State {
                head: Head::Pending,
                chunks: VecDeque::new(),
                first: 0,
                held: 0,
                total: 0,
                retain_all: true,
                charged: 0,
                readers: HashMap::new(),
                next_reader: 0,
                end: None,
                body_complete: false,
                filler: None,
                detached,
            }),
            finished: Notify::new(),
            head_ready: Notify::new(),
            started: Instant::now(),
            limits,
        })
    }

    /// Adds a reader that starts at byte 0, or `None` when the start was already dropped.
    pub(crate) fn join(self: &Arc<Self>) -> Option<FlightReader> {
        let mut st = self.state.lock();
        if st.first != 0 {
            return None;
        }
        let id = st.next_reader;
        st.next_reader += 1;
        st.readers.insert(
            id,
            Reader {
                pos: 0,
                waker: None,
            },
        );
        Some(FlightReader {
            flight: self.clone(),
            id,
            pos: 0,
            done: false,
        })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.state.lock().end.is_some()
    }

    /// Whether every reader has left a fill that needs readers.
    pub(crate) fn orphaned(&self) -> bool {
        let st = self.state.lock();
        !st.detached && st.readers.is_empty()
    }

    pub(crate) fn set_head(&self, head: Head) {
        self.state.lock().head = head;
        self.head_ready.notify_waiters();
        self.wake_readers();
    }

    /// Waits for the head.
    pub(crate) async fn head(&self) -> Head {
        loop {
            let notified = self.head_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.state.lock();
                if !matches!(st.head, Head::Pending) {
                    return st.head.clone();
                }
                if let Some(Err(e)) = &st.end {
                    return Head::Failed(e.clone());
                }
            }
            notified.await;
        }
    }

    /// Waits until the fill ends; returns its result.
    pub(crate) async fn wait_finished(&self) -> Result<(), FillError> {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(end) = &self.state.lock().end {
                return end.clone();
            }
            notified.await;
        }
    }

    /// Waits until there is room for another chunk (the slowest reader is within the window).
    /// Returns false when the fill should stop because every reader left.
    pub(crate) async fn wait_room(&self) -> bool {
        std::future::poll_fn(|cx| {
            let mut st = self.state.lock();
            if !st.detached && st.readers.is_empty() {
                return Poll::Ready(false);
            }
            if st.retain_all {
                // Every byte is kept anyway: readers behind cost no more memory, so the fill
                // keeps the origin's pace (and is stored sooner).
                return Poll::Ready(true);
            }
            let slowest = st.readers.values().map(|r| r.pos).min().unwrap_or(st.total);
            let unread: u64 = st
                .chunks
                .iter()
                .skip(slowest.saturating_sub(st.first) as usize)
                .map(|c| c.len() as u64)
                .sum();
            if unread < self.limits.window {
                Poll::Ready(true)
            } else {
                st.filler = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    pub(crate) fn push(&self, chunk: Bytes) {
        {
            let mut st = self.state.lock();
            st.total += chunk.len() as u64;
            st.held += chunk.len() as u64;
            let n = chunk.len() as u64;
            st.chunks.push_back(chunk);
            if st.retain_all {
                if st.held <= self.limits.retain && self.limits.budget.try_charge(n) {
                    st.charged += n;
                } else {
                    st.retain_all = false;
                    self.limits.budget.release(std::mem::take(&mut st.charged));
                }
            }
            trim(&mut st);
        }
        self.wake_readers();
    }

    /// Marks the body complete: every byte is pushed and the body checked out, so readers may
    /// end cleanly now, before the fill's commit (an `fsync`, an upload) is done. Whatever the
    /// commit's outcome, what they read is the whole, verified body. Followers waiting for the
    /// stored entry still wait for [`finish`](Self::finish).
    pub(crate) fn complete_body(&self) {
        self.state.lock().body_complete = true;
        self.wake_readers();
    }

    /// Ends the flight. The first call wins.
    pub(crate) fn finish(&self, result: Result<(), FillError>) {
        {
            let mut st = self.state.lock();
            if st.end.is_some() {
                return;
            }
            if let (Err(e), Head::Pending) = (&result, &st.head) {
                st.head = Head::Failed(e.clone());
            }
            st.end = Some(result);
        }
        self.head_ready.notify_waiters();
        self.finished.notify_waiters();
        self.wake_readers();
    }

    fn wake_readers(&self) {
        let wakers: Vec<Waker> = {
            let mut st = self.state.lock();
            st.readers
                .values_mut()
                .filter_map(|r| r.waker.take())
                .collect()
        };
        for w in wakers {
            w.wake();
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let charged = std::mem::take(&mut self.state.get_mut().charged);
        self.limits.budget.release(charged);
    }
}

/// Drops chunks every reader has read, once the retain budget is spent.
fn trim(st: &mut State) {
    if st.retain_all {
        return;
    }
    let slowest = st.readers.values().map(|r| r.pos).min().unwrap_or(st.total);
    while st.first < slowest {
        match st.chunks.pop_front() {
            Some(c) => {
                st.held -= c.len() as u64;
                st.first += 1;
            }
            None => break,
        }
    }
}

/// One reader of a flight: a stream of the fill's chunks from byte 0.
pub(crate) struct FlightReader {
    flight: Arc<Flight>,
    id: u64,
    /// Index of the next chunk to read.
    pos: u64,
    /// The failure was reported.
    done: bool,
}

impl FlightReader {
    pub(crate) fn into_body(self) -> EntryBody {
        EntryBody::from_stream(self)
    }
}

impl Stream for FlightReader {
    type Item = Result<Bytes, Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut st = this.flight.state.lock();
        let idx = this.pos.checked_sub(st.first);
        if let Some(chunk) = idx.and_then(|i| st.chunks.get(i as usize)).cloned() {
            // Only a reader at the front can let chunks go: skip the scan over every reader
            // otherwise (with a thousand followers it would run a thousand times per chunk).
            let at_front = idx == Some(0);
            this.pos += 1;
            if let Some(r) = st.readers.get_mut(&this.id) {
                r.pos = this.pos;
            }
            if at_front {
                trim(&mut st);
            }
            let filler = st.filler.take();
            drop(st);
            if let Some(w) = filler {
                w.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if st.body_complete {
            return Poll::Ready(None);
        }
        match &st.end {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(e)) => {
                // Report the failure once, then end: a failed fill never looks like a clean end
                // to a reader that has not seen the error yet.
                if this.done {
                    return Poll::Ready(None);
                }
                this.done = true;
                Poll::Ready(Some(Err(Error::FillAbandoned(e.clone()))))
            }
            None => {
                if let Some(r) = st.readers.get_mut(&this.id) {
                    r.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for FlightReader {
    fn drop(&mut self) {
        let filler = {
            let mut st = self.flight.state.lock();
            st.readers.remove(&self.id);
            trim(&mut st);
            st.filler.take()
        };
        if let Some(w) = filler {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(window: u64, retain: u64, budget: &Arc<RetainBudget>) -> FlightLimits {
        FlightLimits {
            window,
            retain,
            budget: budget.clone(),
        }
    }

    async fn read_all(reader: FlightReader) -> Vec<u8> {
        let body = reader.into_body().collect().await.expect("clean end");
        body.to_vec()
    }

    #[tokio::test]
    async fn a_retained_fill_runs_ahead_of_a_reader_that_does_not_read() {
        let budget = RetainBudget::new(1 << 20);
        let flight = Flight::new(limits(4, 1 << 20, &budget), false);
        let idle = flight.join().expect("first reader");
        // Far more than the 4-byte window, with a reader that reads nothing: every push finds
        // room because the bytes are retained anyway.
        for i in 0..100u8 {
            let room = tokio::time::timeout(Duration::from_secs(1), flight.wait_room()).await;
            assert_eq!(room, Ok(true), "push {i} waited for the idle reader");
            flight.push(Bytes::from(vec![i; 8]));
        }
        assert_eq!(budget.used(), 800);
        // A follower arriving now still starts at byte 0.
        let late = flight.join().expect("start still held");
        flight.finish(Ok(()));
        let want: Vec<u8> = (0..100u8).flat_map(|i| [i; 8]).collect();
        assert_eq!(read_all(late).await, want);
        assert_eq!(read_all(idle).await, want);
        drop(flight);
        assert_eq!(
            budget.used(),
            0,
            "the budget is given back when the flight ends"
        );
    }

    #[tokio::test]
    async fn past_the_retain_limit_the_window_paces_the_fill_and_late_joins_are_refused() {
        let budget = RetainBudget::new(1 << 20);
        let flight = Flight::new(limits(16, 32, &budget), false);
        let mut reader = flight.join().expect("first reader");
        for _ in 0..5 {
            assert!(flight.wait_room().await);
            flight.push(Bytes::from_static(b"12345678"));
        }
        // 40 bytes pushed: over the 32-byte retain limit, so the start is no longer kept.
        assert_eq!(
            budget.used(),
            0,
            "a flight that stops retaining gives its charge back"
        );
        // 40 unread bytes > 16-byte window: the fill waits for the reader.
        let room = tokio::time::timeout(Duration::from_millis(50), flight.wait_room()).await;
        assert!(room.is_err(), "the fill must wait for its slowest reader");
        // Nothing is dropped before the reader has read it; once it has, the start is gone.
        assert!(flight.join().is_some(), "unread chunks are still held");
        let first = std::future::poll_fn(|cx| std::pin::Pin::new(&mut reader).poll_next(cx)).await;
        assert_eq!(first.expect("a chunk").expect("no error"), "12345678");
        assert!(
            flight.join().is_none(),
            "the start is gone for late followers"
        );
        flight.finish(Ok(()));
        assert_eq!(read_all(reader).await, b"12345678".repeat(4));
    }

    #[tokio::test]
    async fn readers_end_at_body_completion_and_waiters_at_finish() {
        let budget = RetainBudget::new(1 << 20);
        let flight = Flight::new(limits(1 << 20, 1 << 20, &budget), false);
        let reader = flight.join().expect("reader");
        flight.push(Bytes::from_static(b"all of it"));
        flight.complete_body();
        assert_eq!(read_all(reader).await, b"all of it");
        assert!(!flight.is_finished(), "the commit is still to come");
        let waiting = tokio::time::timeout(Duration::from_millis(20), flight.wait_finished());
        assert!(
            waiting.await.is_err(),
            "waiters for the stored entry keep waiting"
        );
        // A commit failure afterwards does not turn the delivered body into an error.
        let late = flight.join().expect("start still held");
        flight.finish(Err(FillError::Cancelled));
        assert_eq!(read_all(late).await, b"all of it");
        assert!(matches!(
            flight.wait_finished().await,
            Err(FillError::Cancelled)
        ));
    }

    #[tokio::test]
    async fn fills_share_one_retain_budget() {
        let budget = RetainBudget::new(24);
        let a = Flight::new(limits(1 << 20, 1 << 20, &budget), false);
        let b = Flight::new(limits(1 << 20, 1 << 20, &budget), false);
        let ra = a.join().expect("reader a");
        let rb = b.join().expect("reader b");
        a.push(Bytes::from_static(b"aaaaaaaaaaaaaaaa")); // 16 of 24 used
        b.push(Bytes::from_static(b"bbbbbbbbbbbbbbbb")); // would be 32: b stops retaining
        assert_eq!(budget.used(), 16);
        assert!(a.join().is_some(), "a keeps its start");
        // b still holds its chunk for its reader, but once read it is dropped.
        a.finish(Ok(()));
        b.finish(Ok(()));
        assert_eq!(read_all(rb).await, b"bbbbbbbbbbbbbbbb");
        assert!(b.join().is_none(), "b's start was dropped once read");
        assert_eq!(read_all(ra).await, b"aaaaaaaaaaaaaaaa");
        drop(a);
        assert_eq!(budget.used(), 0);
    }
}
