//! [`Recent`]: the viewer sessions seen in the last while, touched on every request.
//!
//! It replaced two `moka` caches with a time-to-idle (the edge's "known" sessions and the
//! metrics' active sessions): each request paid a moka insert or read (its epoch guard,
//! frequency sketch and housekeeping queue), 7 % of the edge's CPU on a cached live playlist.
//! Here a touch is one uncontended lock and a hash-map update in one of [`SHARDS`] maps;
//! expiry is by timestamp, checked on read and swept by [`Recent::sweep`] (or when a shard is
//! full), so the bound holds without a housekeeper.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

const SHARDS: usize = 16;

/// The value of a [`Recent`] that only records whether a key was seen.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Mark;

impl From<&Mark> for Mark {
    fn from(_: &Mark) -> Mark {
        Mark
    }
}

/// One shard: each key's value and when it was last seen (ms).
type Shard<V> = Mutex<HashMap<[u8; 16], (V, i64)>>;

/// Session ids (16 bytes) seen within `idle`, each with a value; at most `capacity`.
pub struct Recent<V> {
    shards: [Shard<V>; SHARDS],
    idle_ms: i64,
    per_shard: usize,
}

impl<V> Recent<V> {
    pub fn new(idle: Duration, capacity: usize) -> Recent<V> {
        Recent {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            idle_ms: idle.as_millis() as i64,
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &[u8; 16]) -> &Shard<V> {
        // Session ids are MAC or hash output: any byte spreads them evenly.
        &self.shards[key[15] as usize % SHARDS]
    }

    /// `key` was seen at `now_ms` with `value` (made into a `V` only when it is new or
    /// changed). A new key in a full shard first sweeps it; if it is still full (`capacity`
    /// sessions seen within `idle`), the key is not kept.
    pub fn touch<Q>(&self, key: [u8; 16], value: &Q, now_ms: i64)
    where
        Q: ?Sized + PartialEq,
        V: std::borrow::Borrow<Q> + for<'a> From<&'a Q>,
    {
        let mut m = self.shard(&key).lock();
        if let Some(e) = m.get_mut(&key) {
            if e.0.borrow() != value {
                e.0 = V::from(value);
            }
            e.1 = now_ms;
            return;
        }
        if m.len() >= self.per_shard {
            let idle = self.idle_ms;
            m.retain(|_, e| now_ms - e.1 < idle);
            if m.len() >= self.per_shard {
                return;
            }
        }
        m.insert(key, (V::from(value), now_ms));
    }

    /// Whether `key` was seen within `idle` of `now_ms`.
    pub fn contains(&self, key: &[u8; 16], now_ms: i64) -> bool {
        self.shard(key)
            .lock()
            .get(key)
            .is_some_and(|e| now_ms - e.1 < self.idle_ms)
    }

    /// Forget the keys not seen within `idle` of `now_ms`; then call `each` with the value
    /// of every key left. Returns how many are left.
    pub fn sweep(&self, now_ms: i64, mut each: impl FnMut(&V)) -> usize {
        let mut n = 0;
        for s in &self.shards {
            let mut m = s.lock();
            m.retain(|_, e| now_ms - e.1 < self.idle_ms);
            m.values().for_each(|e| each(&e.0));
            n += m.len();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..2].copy_from_slice(&n.to_le_bytes());
        k[15] = n as u8;
        k
    }

    #[test]
    fn a_key_is_known_for_idle_after_its_last_touch() {
        let r: Recent<Mark> = Recent::new(Duration::from_secs(30), 100);
        r.touch(id(1), &Mark, 1_000);
        assert!(r.contains(&id(1), 30_999));
        assert!(!r.contains(&id(1), 31_000), "idle for 30 s");
        r.touch(id(1), &Mark, 20_000);
        assert!(r.contains(&id(1), 49_999), "a touch restarts the idle time");
        assert!(!r.contains(&id(2), 20_000));
        assert_eq!(r.sweep(50_000, |_| ()), 0);
        assert!(!r.contains(&id(1), 20_000), "swept");
    }

    #[test]
    fn the_value_is_the_last_one_touched_and_sweep_counts_live_keys() {
        let r: Recent<std::sync::Arc<str>> = Recent::new(Duration::from_secs(60), 1000);
        r.touch(id(1), "a", 0);
        r.touch(id(2), "a", 0);
        r.touch(id(1), "b", 10_000);
        let mut seen = Vec::new();
        assert_eq!(r.sweep(30_000, |v| seen.push(v.to_string())), 2);
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
        let mut seen = Vec::new();
        assert_eq!(
            r.sweep(65_000, |v| seen.push(v.to_string())),
            1,
            "id 2 went idle"
        );
        assert_eq!(seen, ["b"]);
    }

    #[test]
    fn a_full_shard_sweeps_then_refuses() {
        // Capacity 16: one key per shard; ids 1 and 17 share shard 1.
        let r: Recent<Mark> = Recent::new(Duration::from_secs(30), SHARDS);
        r.touch(id(1), &Mark, 0);
        r.touch(id(17), &Mark, 10_000);
        assert!(!r.contains(&id(17), 10_000), "full: not kept");
        assert!(r.contains(&id(1), 10_000), "the live key stays");
        r.touch(id(17), &Mark, 40_000);
        assert!(r.contains(&id(17), 40_000), "id 1 went idle and was swept");
        assert!(!r.contains(&id(1), 40_000));
    }
}
