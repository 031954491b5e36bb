//! A value a reload replaces and requests read: the sites and the access log (through
//! [`Swap::with`], every request), the listener's certificate (through [`Swap::get`], every
//! handshake).
//!
//! Reading it from one shared place on every request (a read lock and an `Arc` clone, then a
//! drop) costs four atomic operations on cache lines that every core writes: on a busy
//! machine each one moves a line between cores. [`Swap::with`] reads this thread's copy
//! instead, after checking the shared generation (a line no request writes); the shared value
//! is touched only after a reload.
//!
//! A thread's copy is refreshed by its next read after a reload, so an old value (a site's
//! caches, say) outlives the reload on a runtime worker only until that worker serves a request.
//! Copies kept per connection instead would keep it alive for as long as an idle keep-alive
//! connection stays open.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// The shared value: replaced by a reload, read through per-thread copies.
#[derive(Debug)]
pub struct Swap<T> {
    inner: Arc<SwapInner<T>>,
}

#[derive(Debug)]
struct SwapInner<T> {
    /// Names this swap in the threads' copies (unlike an address, never reused).
    id: u64,
    /// Bumped after each replacement.
    generation: AtomicU64,
    value: RwLock<T>,
}

/// One thread's copy of one swap's value (or of something made from it).
struct Copy {
    id: u64,
    generation: u64,
    value: Box<dyn Any>,
}

/// Copies one thread keeps, of different swaps.
const MAX_COPIES: usize = 8;

thread_local! {
    static COPIES: RefCell<Vec<Copy>> = const { RefCell::new(Vec::new()) };
}

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Swap<T> {
        Swap {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Default + Clone> Default for Swap<T> {
    fn default() -> Swap<T> {
        Swap::new(T::default())
    }
}

impl<T: Clone> Swap<T> {
    /// A swap holding `value`.
    pub fn new(value: T) -> Swap<T> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Swap {
            inner: Arc::new(SwapInner {
                id: IDS.fetch_add(1, Ordering::Relaxed),
                generation: AtomicU64::new(0),
                value: RwLock::new(value),
            }),
        }
    }

    /// The current value, read from the shared place.
    pub fn get(&self) -> T {
        self.inner.value.read().clone()
    }

    /// Replaces the value for readers from now on; returns the old one.
    pub fn replace(&self, value: T) -> T {
        let old = std::mem::replace(&mut *self.inner.value.write(), value);
        self.inner.generation.fetch_add(1, Ordering::Release);
        old
    }

    /// Runs `f` on this thread's copy of `make(current value)`, making it again only after a
    /// reload. A call made from inside `f` (never done here) reads the shared value instead.
    pub fn with<D: 'static, R>(&self, make: impl Fn(&T) -> D, f: impl FnOnce(&D) -> R) -> R {
        let generation = self.inner.generation.load(Ordering::Acquire);
        let mut f = Some(f);
        let done = COPIES.try_with(|copies| {
            let Ok(mut copies) = copies.try_borrow_mut() else {
                return None;
            };
            let at = match copies.iter().position(|c| c.id == self.inner.id) {
                Some(at) => at,
                None => {
                    // A process has a few swaps, made at start; tests make many. The oldest
                    // copy goes first, so a thread never holds on to many dropped swaps.
                    if copies.len() >= MAX_COPIES {
                        copies.remove(0);
                    }
                    copies.push(self.copy(generation, &make));
                    copies.len() - 1
                }
            };
            let stale = copies[at].generation != generation || !copies[at].value.as_ref().is::<D>();
            if stale {
                // A reload between the load above and this read gives a newer value under an
                // older generation: the next call makes it again, nothing worse.
                copies[at] = self.copy(generation, &make);
            }
            let value = copies[at].value.downcast_ref::<D>()?;
            f.take().map(|f| f(value))
        });
        match (done, f) {
            (Ok(Some(r)), _) => r,
            (_, Some(f)) => f(&make(&self.get())),
            (_, None) => unreachable!("`f` ran, so the copy answered"),
        }
    }

    fn copy<D: 'static>(&self, generation: u64, make: &impl Fn(&T) -> D) -> Copy {
        Copy {
            id: self.inner.id,
            generation,
            value: Box::new(make(&self.get())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_sees_a_replacement_on_its_next_read() {
        let swap = Swap::new(Arc::new(1));
        let other = Swap::new(Arc::new(10));
        let read = |s: &Swap<Arc<i32>>| s.with(Arc::clone, |v| **v);
        assert_eq!(read(&swap), 1);
        assert_eq!(read(&other), 10);
        assert_eq!(*swap.replace(Arc::new(2)), 1);
        assert_eq!(read(&swap), 2);
        assert_eq!(read(&other), 10, "each swap has its own copy");
        // Another thread makes its own copy, of the current value.
        let theirs = swap.clone();
        let seen = std::thread::spawn(move || theirs.with(Arc::clone, |v| **v));
        assert_eq!(seen.join().unwrap(), 2);
        // A call from inside `f` reads the shared value.
        let nested = swap.with(Arc::clone, |_| swap.with(Arc::clone, |v| **v));
        assert_eq!(nested, 2);
    }

    #[test]
    fn an_old_value_is_released_by_the_next_read_after_a_replacement() {
        let first = Arc::new(1);
        let swap = Swap::new(Arc::clone(&first));
        swap.with(Arc::clone, |_| ());
        swap.replace(Arc::new(2));
        assert_eq!(
            Arc::strong_count(&first),
            2,
            "this thread's copy still holds it"
        );
        swap.with(Arc::clone, |_| ());
        assert_eq!(Arc::strong_count(&first), 1);
    }
}
