//! Temporary worker pool stand-in.
#![allow(missing_docs)]
use std::future::Future;
use std::time::Duration;
#[derive(Clone, Debug)]
pub struct WorkerPool;
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub dropped: usize,
}
impl WorkerPool {
    pub fn new(_c: usize, _q: usize) -> Self {
        WorkerPool
    }
    pub fn try_spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) -> bool {
        tokio::spawn(f);
        true
    }
    pub fn stats(&self) -> WorkerStats {
        WorkerStats::default()
    }
    pub async fn close(&self, _t: Duration) -> Result<(), crate::CloseError> {
        Ok(())
    }
}
