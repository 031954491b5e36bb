//! Recovery on open: sweeping temp files left by a crash and rebuilding the index from disk.
//!
//! It must never index a file it has not validated: corrupt, half-written or misplaced entry
//! files are deleted, and files that do not look like entries are left alone.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::format::{self, ReadFailure};
use super::index::{parse_hex32, remove_if_exists, Loc};
use super::HEAD_TAIL;

/// An entry found on disk while opening.
pub(super) struct Found {
    pub(super) key: String,
    pub(super) hash: [u8; 32],
    pub(super) size: u64,
    pub(super) modified: SystemTime,
}

/// Removes every temp file: none can belong to a live writer of this store yet.
pub(super) fn sweep_temp(tmp: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(tmp)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            tracing::debug!(path = %entry.path().display(), "removing orphaned temp file");
            remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

/// Lists the valid entries under `objects/`, oldest first, deleting corrupt, half-written and
/// misplaced entry files. Files whose names are not entry names are left alone.
pub(super) fn scan_objects(objects: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for l1 in std::fs::read_dir(objects)? {
        let l1 = l1?;
        if !l1.file_type()?.is_dir() {
            continue;
        }
        for l2 in std::fs::read_dir(l1.path())? {
            let l2 = l2?;
            if !l2.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(l2.path())? {
                let f = f?;
                let path = f.path();
                let name = f.file_name();
                let Some(hash) = name.to_str().and_then(parse_hex32) else {
                    tracing::debug!(path = %path.display(), "ignoring unknown file in cache dir");
                    continue;
                };
                let expected = Loc::from_hash(hash).path(objects);
                if expected != path {
                    tracing::warn!(path = %path.display(), "removing misplaced cache file");
                    remove_if_exists(&path)?;
                    continue;
                }
                match format::open_entry(&path, HEAD_TAIL) {
                    Ok(o) if Loc::of(&o.key).hash == hash => found.push(Found {
                        key: o.key.clone(),
                        hash,
                        size: o.ident.len(),
                        modified: o.modified.unwrap_or(SystemTime::UNIX_EPOCH),
                    }),
                    Ok(_) => {
                        tracing::warn!(path = %path.display(), "removing cache file holding another key");
                        remove_if_exists(&path)?;
                    }
                    Err(ReadFailure::Corrupt { reason, .. }) => {
                        tracing::warn!(path = %path.display(), reason, "removing corrupt cache file");
                        remove_if_exists(&path)?;
                    }
                    Err(ReadFailure::Missing) => {}
                    Err(ReadFailure::Io(e)) => {
                        tracing::warn!(path = %path.display(), error = %e, "skipping unreadable cache file");
                    }
                }
            }
        }
    }
    found.sort_by_key(|f| f.modified);
    Ok(found)
}
