//! The writer thread and the handle requests send their records through.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::format::LineFormat;
use super::{AccessLogSettings, Destination, Format, Record};

/// Records waiting for the writer; beyond this they are dropped and counted. At 100k
/// requests/s it holds 80 ms, four times [`BATCH_PAUSE`]. The slots (about 0.5 KiB each, the
/// records' texts inline) are allocated when the log starts: 4 MiB.
const CAPACITY: usize = 8 * 1024;

/// How long the writer lets records gather once it has caught up.
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

/// The sending side: offers records without ever waiting.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: SyncSender<Record>,
    dropped: metrics::Counter,
    /// The same count, readable here (the metric may have no recorder).
    dropped_here: Arc<AtomicU64>,
}

impl Sink {
    /// Hands `record` to the writer, or drops and counts it when the writer is behind.
    pub fn offer(&self, record: Record) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.increment(1);
                self.dropped_here.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped so far because the writer was behind (or gone).
    pub fn dropped(&self) -> u64 {
        self.dropped_here.load(Ordering::Relaxed)
    }
}

/// A sink and the receiving end of its channel of `capacity` records.
fn channel(capacity: usize) -> (Sink, Receiver<Record>) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let sink = Sink {
        tx,
        dropped: metrics::counter!("daramjwee_access_log_dropped_total"),
        dropped_here: Arc::default(),
    };
    (sink, rx)
}

/// Opens the destination and starts the writer thread. The thread ends when every [`Sink`] is
/// gone, after writing what it was sent.
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
    let (sink, rx) = channel(CAPACITY);
    let format = settings.format;
    // A thread, not a task: writes block, and they must not hold a runtime worker.
    std::thread::Builder::new()
        .name("daramjwee-access-log".into())
        .spawn(move || run(rx, BufWriter::with_capacity(64 << 10, out), format))
        .map_err(AccessLogError::Thread)?;
    Ok(sink)
}

/// Writes records in batches: after catching up it flushes and pauses for [`BATCH_PAUSE`]
/// before looking again, and blocks only once a pause brought nothing. Under load the thread
/// never parks, so a request's `try_send` never has to wake it (a system call on the request
/// path), and each batch is one write. Lines appear at most a pause late.
fn run(rx: Receiver<Record>, mut out: BufWriter<Box<dyn Write + Send>>, format: Format) {
    let mut format = LineFormat::new(format);
    let mut line = Vec::with_capacity(512);
    let mut failing = false;
    let mut next = rx.recv().ok();
    while let Some(first) = next {
        let mut rec = Some(first);
        while let Some(r) = rec {
            line.clear();
            format.write(&mut line, &r);
            if let Err(e) = out.write_all(&line) {
                report(&mut failing, &e);
            }
            rec = rx.try_recv().ok();
        }
        match out.flush() {
            Ok(()) => failing = false,
            Err(e) => report(&mut failing, &e),
        }
        std::thread::sleep(BATCH_PAUSE);
        next = match rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => rx.recv().ok(),
            Err(TryRecvError::Disconnected) => None,
        };
    }
    let _ = out.flush();
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
    use std::time::{Duration, SystemTime};

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
    fn a_full_channel_drops_and_counts_instead_of_waiting() {
        let (sink, rx) = channel(2);
        for _ in 0..5 {
            sink.offer(record());
        }
        assert_eq!(sink.dropped(), 3);
        assert_eq!(rx.try_iter().count(), 2);
        drop(rx);
        sink.offer(record());
        assert_eq!(sink.dropped(), 4, "a writer that is gone counts as behind");
    }
}
