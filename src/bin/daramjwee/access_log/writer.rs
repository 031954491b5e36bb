//! Where lines gather ([`Sink`]) and the thread that writes them out.
//!
//! A request renders its line itself, on its own thread, into one of a few buffers (shards)
//! that threads pick once each; the writer thread swaps each buffer for an empty one every
//! [`BATCH_PAUSE`] and writes it whole. A line costs the request an uncontended lock and the
//! rendering: no channel, no record copied between threads, no wake-up of the writer on the
//! request path (the first line after the writer went idle is the only one that wakes it).
//! The earlier design sent each record (about 0.5 KiB) through a bounded channel to a thread
//! that rendered it: in a profile of 1 KiB hits the writer thread took 4.2% of the proxy's CPU
//! samples and the channel's send 1.4%. Rendering costs about 87 ns a line, the request's
//! draft and the splice at the end together (the `render_speed` measurement in `format.rs`,
//! 2026-12-05), and the writer thread 0.7% (`docs/proxy.md`, "Access log").
//!
//! Lines of one thread keep their order; lines of different threads may be written up to one
//! pause apart out of order, as nginx's per-worker log buffers do. [`Sink::flush`] has the
//! writer write everything now (for shutdown).

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

use parking_lot::Mutex;

use super::format::{Draft, End, LineFormat};
#[cfg(test)]
use super::Record;
use super::{AccessLogSettings, Destination, Format};

/// Bytes of lines waiting to be written, across all shards; beyond this, lines are dropped
/// and counted. At 100k requests/s of 200-byte lines the writer takes 0.4 MiB per pause: this
/// is ten pauses of slack for a slow disk.
const CAPACITY: usize = 4 << 20;

/// How long the writer lets lines gather once it has written what there was.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The log file could not be opened for appending.
    #[error("cannot open access log {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the access log thread: {0}")]
    Thread(#[source] io::Error),
}

/// The request side of an access log: finishes lines into the shards. Dropping the last
/// handle lets the writer write what is left and end.
#[derive(Debug)]
pub struct Sink {
    shared: Arc<Shared>,
    writer: Thread,
    dropped: metrics::Counter,
}

/// What the request threads and the writer share.
#[derive(Debug)]
struct Shared {
    /// The lines' format (each shard's renderer has it too).
    format: Format,
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// Bytes one shard may hold.
    shard_bytes: usize,
    /// Set by the writer before it parks on empty shards; the first line after clears it and
    /// wakes the writer.
    parked: AtomicBool,
    /// Set when the [`Sink`] is gone: the writer writes what is left and ends.
    closed: AtomicBool,
    /// Flushes asked for ([`Sink::flush`]), and the last one the writer has done.
    flush_asked: AtomicU64,
    flush_done: AtomicU64,
    /// Lines dropped, readable here (the metric may have no recorder).
    dropped: AtomicU64,
}

/// Keeps each shard on cache lines of its own: two threads locking neighbouring shards would
/// otherwise pass one line back and forth between their cores on every request (measured: the
/// lock was most of the cost of a line).
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// One buffer of rendered lines, with its renderer (which keeps the last timestamp text).
#[derive(Debug)]
struct Shard {
    lines: Vec<u8>,
    format: LineFormat,
}

impl Shared {
    fn new(format: Format, shard_count: usize, capacity: usize) -> Shared {
        let shard_count = shard_count.max(1);
        let shards = (0..shard_count)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    lines: Vec::new(),
                    format: LineFormat::new(format),
                }))
            })
            .collect();
        Shared {
            format,
            shards,
            shard_bytes: capacity / shard_count,
            parked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            flush_asked: AtomicU64::new(0),
            flush_done: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Sink {
    fn new(shared: Arc<Shared>, writer: Thread) -> Sink {
        Sink {
            shared,
            writer,
            dropped: metrics::counter!("daramjwee_access_log_dropped_total"),
        }
    }

    /// The format the requests' drafts are to be rendered in.
    pub fn format(&self) -> Format {
        self.shared.format
    }

    /// Renders `record` as a request would, and offers it ([`Sink::log`]).
    #[cfg(test)]
    pub fn offer(&self, record: &Record) {
        let (draft, end) = record.parts(self.shared.format);
        self.log(&draft, &end);
    }

    /// Finishes the line of `draft` (rendered in [`Sink::format`]) and `end` for the writer,
    /// or drops and counts it when the writer is behind.
    pub fn log(&self, draft: &Draft, end: &End) {
        let shards = &self.shared.shards;
        let shard = &shards[thread_shard() % shards.len()];
        let was_empty = {
            let mut shard = shard.lock();
            if shard.lines.len() >= self.shared.shard_bytes {
                drop(shard);
                self.dropped.increment(1);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let Shard { lines, format } = &mut *shard;
            let was_empty = lines.is_empty();
            format.finish(lines, draft, end);
            was_empty
        };
        // The shard's lock orders this read after the writer's `parked` store if the writer
        // looked at this shard before the line was in it (see `run`).
        if was_empty
            && self.shared.parked.load(Ordering::Acquire)
            && self.shared.parked.swap(false, Ordering::AcqRel)
        {
            self.writer.unpark();
        }
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Has the writer write out every line rendered so far, and waits for it, up to
    /// `timeout`. Returns whether it did. For shutdown: the writer otherwise writes a line up
    /// to one pause late, and a process that exits first would lose it.
    pub fn flush(&self, timeout: Duration) -> bool {
        let asked = self.shared.flush_asked.fetch_add(1, Ordering::AcqRel) + 1;
        self.writer.unpark();
        let deadline = std::time::Instant::now() + timeout;
        while self.shared.flush_done.load(Ordering::Acquire) < asked {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

/// This thread's shard number: threads take consecutive numbers, so up to as many threads as
/// there are shards (the runtime's workers) never share one.
fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        s.get()
    })
}

/// Opens the destination and starts the writer thread. The thread ends when the [`Sink`] is
/// gone, after writing what was rendered.
pub fn start(settings: &AccessLogSettings) -> Result<Sink, AccessLogError> {
    let out: Box<dyn Write + Send> = match &settings.destination {
        Destination::Stdout => Box::new(io::stdout()),
        Destination::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AccessLogError::Open {
                    path: path.clone(),
                    source,
                })?,
        ),
    };
    // One shard per runtime worker, and a few for other threads (the blocking pool).
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let shared = Arc::new(Shared::new(settings.format, threads + 2, CAPACITY));
    let theirs = Arc::clone(&shared);
    // A thread, not a task: writes block, and they must not hold a runtime worker.
    let handle = std::thread::Builder::new()
        .name("daramjwee-access-log".into())
        .spawn(move || run(&theirs, out))
        .map_err(AccessLogError::Thread)?;
    Ok(Sink::new(shared, handle.thread().clone()))
}

/// Writes the shards out every [`BATCH_PAUSE`] while there are lines, and parks once a pause
/// brought none, until a line or the end wakes it.
fn run(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut spare = Vec::new();
    let mut failing = false;
    loop {
        // Read before the drain: a close or flush asked after it is seen on the next turn.
        let closed = shared.closed.load(Ordering::Acquire);
        let asked = shared.flush_asked.load(Ordering::Acquire);
        let wrote = drain(shared, &mut spare, &mut out, &mut failing);
        shared.flush_done.store(asked, Ordering::Release);
        if closed {
            return;
        }
        if wrote {
            // A flush (or the sink's end) cuts the pause short.
            std::thread::park_timeout(BATCH_PAUSE);
            continue;
        }
        shared.parked.store(true, Ordering::SeqCst);
        // A line that came in after the drain but before `parked` was set did not wake us:
        // look once more, through each shard's lock, before parking.
        let waiting = shared.shards.iter().any(|s| !s.lock().lines.is_empty())
            || shared.flush_asked.load(Ordering::Acquire) != asked;
        if !waiting && !shared.closed.load(Ordering::Acquire) {
            std::thread::park();
        }
        shared.parked.store(false, Ordering::Release);
    }
}

/// Writes every shard's lines (one write each) and flushes. Returns whether there were any.
fn drain(
    shared: &Shared,
    spare: &mut Vec<u8>,
    out: &mut Box<dyn Write + Send>,
    failing: &mut bool,
) -> bool {
    let mut wrote = false;
    for shard in shared.shards.iter() {
        {
            let mut shard = shard.lock();
            if shard.lines.is_empty() {
                continue;
            }
            std::mem::swap(&mut shard.lines, spare);
        }
        wrote = true;
        if let Err(e) = out.write_all(spare) {
            report(failing, &e);
        }
        spare.clear();
    }
    if wrote {
        match out.flush() {
            Ok(()) => *failing = false,
            Err(e) => report(failing, &e),
        }
    }
    wrote
}

/// Logs a write error once per run of failures, not once per line.
fn report(failing: &mut bool, e: &io::Error) {
    if !*failing {
        tracing::warn!(error = %e, "cannot write the access log; lines are lost until it recovers");
        *failing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant, SystemTime};

    fn record() -> Record {
        Record {
            start: SystemTime::now(),
            client: None,
            method: http::Method::GET,
            target: None,
            version: http::Version::HTTP_11,
            status: http::StatusCode::OK,
            bytes: 0,
            duration: Duration::ZERO,
            upstream: None,
            cache_status: None,
            request_id: None,
            referer: None,
            user_agent: None,
        }
    }

    #[test]
    fn a_full_shard_drops_and_counts_instead_of_waiting() {
        // One shard with room for two lines, and no writer emptying it.
        let mut line = Vec::new();
        LineFormat::new(Format::Combined).write(&mut line, &record());
        let shared = Shared::new(Format::Combined, 1, 2 * line.len());
        let sink = Sink::new(Arc::new(shared), std::thread::current());
        for _ in 0..5 {
            sink.offer(&record());
        }
        assert_eq!(sink.dropped(), 3);
        let kept = sink.shared.shards[0].lock().lines.clone();
        assert_eq!(kept.iter().filter(|&&b| b == b'\n').count(), 2);
    }

    /// A directory (kept while the test runs) and a log file path in it.
    fn log_file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        (dir, path)
    }

    /// Combined lines appended to `path`.
    fn file_log(path: &std::path::Path) -> AccessLogSettings {
        AccessLogSettings {
            destination: Destination::File(path.to_owned()),
            format: Format::Combined,
        }
    }

    /// A flush returns once every line rendered before it is in the file, without waiting for
    /// the writer's pause.
    #[test]
    fn a_flush_writes_every_line_before_it_returns() {
        let (_dir, path) = log_file();
        let sink = start(&file_log(&path)).unwrap();
        for round in 1..=3 {
            // The first line wakes the writer, which then pauses: the rest would wait for it.
            for _ in 0..100 {
                sink.offer(&record());
            }
            assert!(sink.flush(Duration::from_secs(10)));
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), 100 * round);
        }
    }

    /// Lines from several threads, offered while the writer parks and wakes, all reach the
    /// file, whole, by the time the last sink is gone.
    #[test]
    fn every_line_from_every_thread_is_written_whole() {
        let (_dir, path) = log_file();
        let sink = Arc::new(start(&file_log(&path)).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        sink.offer(&record());
                        if i % 100 == 0 {
                            // Long enough for the writer to drain and park.
                            std::thread::sleep(BATCH_PAUSE * 3);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(sink.dropped(), 0);
        drop(sink);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = String::new();
        while Instant::now() < deadline {
            text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() >= 2000 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(text.lines().count(), 2000);
        assert!(text
            .lines()
            .all(|l| l.starts_with("- - - [") && l.ends_with("rid=-")));
    }
}
