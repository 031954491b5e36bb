//! Purge floors: the instants before which entries are purged, per key (kept in the key's pointer
//! object, see [`pointer`](super::pointer)) and per key prefix (kept here, in memory, and shared
//! between instances by [`SharedPurges`](super::SharedPurges) through the bucket).
//!
//! A prefix purge cannot delete what it cannot enumerate cheaply (a bucket lists paths, and paths
//! are key hashes), so it masks instead: an entry whose key matches and whose `stored_at` is at or
//! before the floor reads as a miss and cannot be committed. Masked objects are removed by the
//! store's TTL and the bucket lifecycle rule.

use std::future::Future;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;

tokio::task_local! {
    /// The instant a purge being applied was requested, when it is replayed from the purge log
    /// (the purging instance's clock), rather than now.
    static PURGE_AT: SystemTime;
}

/// The instant the purge being run was requested: the replayed one, else now.
pub(super) fn purge_time() -> SystemTime {
    PURGE_AT
        .try_with(|t| *t)
        .unwrap_or_else(|_| SystemTime::now())
}

/// Runs `fut` (an engine purge) as the replay of a purge requested at `at`.
pub(super) async fn replaying<F: Future>(at: SystemTime, fut: F) -> F::Output {
    PURGE_AT.scope(at, fut).await
}

/// The prefix floors of one store.
#[derive(Debug, Default)]
pub(super) struct Floors {
    list: RwLock<Vec<(String, SystemTime)>>,
}

impl Floors {
    /// The latest floor among the prefixes `key` starts with (`UNIX_EPOCH`: none).
    pub(super) fn floor_for(&self, key: &str) -> SystemTime {
        self.list
            .read()
            .iter()
            .filter(|(p, _)| key.starts_with(p.as_str()))
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Purges every key starting with `prefix` stored at or before `at`. A floor it covers
    /// (a longer prefix, no later) is dropped, so the list stays as short as what was purged.
    pub(super) fn raise(&self, prefix: &str, at: SystemTime) {
        let mut list = self.list.write();
        if list
            .iter()
            .any(|(p, t)| prefix.starts_with(p.as_str()) && *t >= at)
        {
            return;
        }
        list.retain(|(p, t)| !(p.starts_with(prefix) && *t <= at));
        list.push((prefix.to_owned(), at));
    }

    /// Drops floors older than `age`: every entry they mask is past the store's TTL anyway.
    pub(super) fn expire(&self, age: Duration, now: SystemTime) {
        self.list
            .write()
            .retain(|(_, t)| now.duration_since(*t).unwrap_or_default() < age);
    }

    /// Every floor, for the purge log's checkpoint.
    pub(super) fn snapshot(&self) -> Vec<(String, SystemTime)> {
        self.list.read().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_matching_prefix_wins_and_covered_floors_are_dropped() {
        let f = Floors::default();
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        f.raise("http://a/x/", t(10));
        f.raise("http://a/", t(5));
        assert_eq!(f.floor_for("http://a/x/1"), t(10));
        assert_eq!(f.floor_for("http://a/y"), t(5));
        assert_eq!(f.floor_for("http://b/"), SystemTime::UNIX_EPOCH);
        f.raise("http://a/", t(20));
        assert_eq!(f.snapshot(), vec![("http://a/".to_owned(), t(20))]);
        f.raise("http://a/x/", t(15));
        assert_eq!(f.snapshot().len(), 1, "covered by a later, shorter prefix");
        f.expire(Duration::from_secs(5), t(30));
        assert!(f.snapshot().is_empty());
    }
}
