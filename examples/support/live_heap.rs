//! A global allocator that wraps the system's and counts live heap bytes (allocated and not
//! yet freed) of the whole process. Shared by the soak example and the memory tier's
//! footprint test (`tests/mem_footprint.rs`), which include this file by path and install
//! it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The counting allocator: install it with `#[global_allocator]`.
pub struct LiveHeap;

static LIVE: AtomicU64 = AtomicU64::new(0);

impl LiveHeap {
    /// Bytes allocated and not yet freed, process-wide.
    pub fn bytes() -> u64 {
        LIVE.load(Ordering::Relaxed)
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for LiveHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, size);
        if !p.is_null() {
            LIVE.fetch_add(size as u64, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}
