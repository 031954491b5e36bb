//! The writer thread and the handle requests send their records through.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use super::format::write_record;
use super::{AccessLogSettings, Destination, Format, Record};

/// Records waiting for the writer; beyond this they are dropped and counted.
const CAPACITY: usize = 16 * 1024;

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
}

impl Sink {
    /// Hands `record` to the writer, or drops and counts it when the writer is behind.
    pub fn offer(&self, record: Record) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.increment(1);
            }
        }
    }
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
    let (tx, rx) = mpsc::sync_channel(CAPACITY);
    let format = settings.format;
    // A thread, not a task: writes block, and they must not hold a runtime worker.
    std::thread::Builder::new()
        .name("daramjwee-access-log".into())
        .spawn(move || run(rx, BufWriter::with_capacity(64 << 10, out), format))
        .map_err(AccessLogError::Thread)?;
    Ok(Sink {
        tx,
        dropped: metrics::counter!("daramjwee_access_log_dropped_total"),
    })
}

/// Writes records as they come; flushes whenever the channel is momentarily empty, so lines
/// appear promptly under light load and in large writes under heavy load.
fn run(rx: Receiver<Record>, mut out: BufWriter<Box<dyn Write + Send>>, format: Format) {
    let mut line = Vec::with_capacity(512);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(rec) = next {
            line.clear();
            write_record(&mut line, &rec, format);
            if let Err(e) = out.write_all(&line) {
                report(&mut failing, &e);
            }
            next = rx.try_recv().ok();
        }
        match out.flush() {
            Ok(()) => failing = false,
            Err(e) => report(&mut failing, &e),
        }
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
