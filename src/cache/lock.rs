//! The fill lock: Pingora's [`CacheLock`], with the gap between a request's lookup and its
//! lock closed.
//!
//! Pingora looks a request up in the cache and, on a miss, takes the key's lock: the first
//! request becomes the writer (it fetches), the others readers (they wait, then look
//! again). With a store that lets readers follow a fill as it arrives (ours:
//! `support_streaming_partial_write`), the writer releases the lock as soon as its fill is
//! registered, before the body. A request whose lookup ran just before that registration
//! and whose lock attempt runs just after it finds the key unlocked and becomes a second
//! writer: a second origin fetch of an object already arriving. Seen under load (a fast
//! origin or shield, many viewers at once); here a write lock is only handed out when the
//! store has no fill or fresh copy of the key, otherwise the request waits on nothing and
//! looks again, finding the fill.

use super::store::SegmentStore;
use pingora_cache::key::CacheKey;
use pingora_cache::lock::{
    CacheKeyLock, CacheKeyLockImpl, CacheLock, LockStatus, Locked, WritePermit,
};
use std::time::Duration;

pub struct FillLock {
    inner: CacheLock,
    store: &'static SegmentStore,
}

impl FillLock {
    /// A lock for `store` whose writers may hold it for `age_timeout`, for the life of the
    /// process (Pingora's cache API wants `'static`).
    pub fn leak(age_timeout: Duration, store: &'static SegmentStore) -> &'static CacheKeyLockImpl {
        Box::leak(Box::new(FillLock {
            inner: CacheLock::new(age_timeout),
            store,
        }))
    }
}

impl CacheKeyLock for FillLock {
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> Locked {
        match self.inner.lock(key, stale_writer) {
            Locked::Write(permit) if !stale_writer && self.store.holds(key) => {
                // A fill began after this request's lookup: read the lock this permit holds,
                // release it at once as done, and the request looks the key up again.
                let read = self.inner.lock(key, false);
                self.inner.release(key, permit, LockStatus::Done);
                read
            }
            locked => locked,
        }
    }

    fn release(&self, key: &CacheKey, permit: WritePermit, reason: LockStatus) {
        self.inner.release(key, permit, reason)
    }

    fn custom_lock_status(&self, custom_no_cache: &'static str) -> LockStatus {
        self.inner.custom_lock_status(custom_no_cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Policy;
    use pingora_cache::storage::Storage;
    use pingora_cache::trace::Span;
    use pingora_cache::CacheMeta;
    use std::time::SystemTime;

    #[tokio::test]
    async fn a_fill_begun_after_the_lookup_is_followed_not_fetched_again() {
        let store = SegmentStore::leak(Policy::default());
        let lock = FillLock::leak(Duration::from_secs(5), store);
        let key = CacheKey::new("http://o/a.ts", "");
        // Request B looked `key` up: nothing. Request A locks it, registers its fill and
        // releases the lock (readers follow the fill from here on).
        let Locked::Write(a) = lock.lock(&key, false) else {
            panic!("the first request writes")
        };
        let now = SystemTime::now();
        let header = pingora_http::ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let span = Span::inactive();
        let fill = store
            .get_miss_handler(&key, &meta, &span.handle())
            .await
            .unwrap();
        lock.release(&key, a, LockStatus::Done);
        // B's lock attempt: it must wait (already released: look again), not fetch.
        match lock.lock(&key, false) {
            Locked::Read(r) => {
                r.wait().await;
                assert_eq!(r.lock_status(), LockStatus::Done);
            }
            Locked::Write(_) => panic!("a second fill of an object already arriving"),
        }
        assert!(store.lookup(&key, &span.handle()).await.unwrap().is_some());
        drop(fill);
        // With nothing in the store a lock is a write lock, as Pingora's; so is a stale
        // writer's (revalidation) whatever the store holds.
        let other = CacheKey::new("http://o/b.ts", "");
        let Locked::Write(b) = lock.lock(&other, false) else {
            panic!("nothing stored: a writer")
        };
        lock.release(&other, b, LockStatus::Done);
        let third = CacheKey::new("http://o/c.ts", "");
        let fill = store
            .get_miss_handler(&third, &meta, &span.handle())
            .await
            .unwrap();
        let Locked::Write(c) = lock.lock(&third, true) else {
            panic!("a stale writer writes")
        };
        lock.release(&third, c, LockStatus::Done);
        drop(fill);
    }
}
