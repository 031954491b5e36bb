//! Where things live in the bucket. Keys are data, never paths: every path of an entry derives
//! from the hex SHA-256 of its key, and a pointer may only name a body inside its own key's
//! directory.
//!
//! ```text
//! <prefix>/<h[0..2]>/<h[2..4]>/<h>.meta              pointer: codec record (key + Metadata) + body path
//! <prefix>/<h[0..2]>/<h[2..4]>/<h>/<unique>.body      body bytes, written once, never modified
//! <prefix>/_purges/...                                the shared purge log (see `purge`)
//! <prefix>/_packs/...                                 packs of small entries (see `pack`)
//! ```
//!
//! The bookkeeping directories start with `_`, which no key hash (hex) does.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::path::Path;
use sha2::{Digest, Sha256};

/// The hex SHA-256 of a cache key.
pub(super) fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut h = String::with_capacity(64);
    for b in digest {
        let _ = write!(h, "{b:02x}");
    }
    h
}

/// The paths of one store's objects.
#[derive(Debug)]
pub(super) struct Layout {
    prefix: Path,
    /// Random per instance, so that body paths from different processes never collide.
    nonce: u64,
    counter: AtomicU64,
}

impl Layout {
    pub(super) fn new(prefix: Path) -> Self {
        let nonce = RandomState::new().build_hasher().finish()
            ^ u64::from(std::process::id()).rotate_left(32);
        Layout {
            prefix,
            nonce,
            counter: AtomicU64::new(0),
        }
    }

    /// The prefix every object of the store lives under.
    pub(super) fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// A path under the prefix (for the store's own bookkeeping objects).
    pub(super) fn under(&self, part: &str) -> Path {
        self.prefix.clone().join(part)
    }

    fn dir(&self, h: &str) -> Path {
        self.prefix.clone().join(&h[0..2]).join(&h[2..4])
    }

    /// The pointer object of the key hashed to `h`.
    pub(super) fn meta_path(&self, h: &str) -> Path {
        self.dir(h).join(format!("{h}.meta"))
    }

    fn body_dir(&self, h: &str) -> Path {
        self.dir(h).join(h)
    }

    /// A fresh body path for the key hashed to `h`, unique across instances and writes.
    pub(super) fn new_body_path(&self, h: &str) -> Path {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.body_dir(h)
            .join(format!("{:016x}-{n:016x}.body", self.nonce))
    }

    /// Whether `body` is a body path of the key hashed to `h`: a pointer never sends a reader
    /// (or a delete) outside its own key's directory, whatever the record says.
    pub(super) fn owns_body(&self, h: &str, body: &Path) -> bool {
        let dir = self.body_dir(h);
        body.prefix_match(&dir)
            .map(|mut rest| {
                matches!((rest.next(), rest.next()), (Some(name), None) if name.as_ref().ends_with(".body"))
            })
            .unwrap_or(false)
    }
}
