//! A value a reload replaces and every request reads: the sites, the access log.
//!
//! Reading it from one shared place on every request (a read lock and an `Arc` clone, then a
//! drop) costs four atomic operations on cache lines that every core writes: on a busy
//! machine each one moves a line between cores. A [`Cached`] copy, one per connection, reads
//! the shared generation (a line no request writes) and touches the shared value only after
//! a reload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// The shared value: replaced by a reload, read through [`Cached`] copies.
#[derive(Debug, Default)]
pub struct Swap<T> {
    inner: Arc<SwapInner<T>>,
}

#[derive(Debug, Default)]
struct SwapInner<T> {
    /// Bumped after each replacement.
    generation: AtomicU64,
    value: RwLock<T>,
}

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Swap<T> {
        Swap {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Clone> Swap<T> {
    /// A swap holding `value`.
    pub fn new(value: T) -> Swap<T> {
        Swap {
            inner: Arc::new(SwapInner {
                generation: AtomicU64::new(0),
                value: RwLock::new(value),
            }),
        }
    }

    /// The current value.
    pub fn get(&self) -> T {
        self.inner.value.read().clone()
    }

    /// Replaces the value for readers from now on; returns the old one.
    pub fn replace(&self, value: T) -> T {
        let old = std::mem::replace(&mut *self.inner.value.write(), value);
        self.inner.generation.fetch_add(1, Ordering::Release);
        old
    }

    /// A reader's copy, for one connection.
    pub fn cached(&self) -> Cached<T> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        Cached {
            swap: self.clone(),
            generation,
            value: self.get(),
        }
    }
}

/// One reader's copy of a [`Swap`]'s value, refreshed when a reload replaced it.
#[derive(Debug, Clone)]
pub struct Cached<T> {
    swap: Swap<T>,
    generation: u64,
    value: T,
}

impl<T: Clone> Cached<T> {
    /// The shared value this is a copy of.
    pub fn swap(&self) -> &Swap<T> {
        &self.swap
    }

    /// The current value, and whether it changed since the last call.
    pub fn get(&mut self) -> (&T, bool) {
        let now = self.swap.inner.generation.load(Ordering::Acquire);
        let changed = now != self.generation;
        if changed {
            // A reload between the load and this read gives a newer value under an older
            // generation: the next call reads it again, nothing worse.
            self.value = self.swap.get();
            self.generation = now;
        }
        (&self.value, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_sees_a_replacement_on_its_next_read() {
        let swap = Swap::new(Arc::new(1));
        let mut a = swap.cached();
        let mut b = a.clone();
        assert_eq!(a.get(), (&Arc::new(1), false));
        assert_eq!(*swap.replace(Arc::new(2)), 1);
        assert_eq!(a.get(), (&Arc::new(2), true));
        assert_eq!(a.get(), (&Arc::new(2), false));
        assert_eq!(b.get(), (&Arc::new(2), true));
        assert_eq!(*swap.get(), 2);
    }
}
