//! [`SegmentStore`]: the `Storage` implementation.

use super::Policy;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{
    CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

type BinaryMeta = (Vec<u8>, Vec<u8>);

/// What a fill of unknown length (a chunked playlist) reserves of the in-flight share;
/// only bytes past it are counted as they arrive.
const UNKNOWN_LENGTH_RESERVE: u64 = 1 << 20;

/// The bytes a fill of `resp` reserves: its `Content-Length`, or
/// [`UNKNOWN_LENGTH_RESERVE`].
fn reserve_len(resp: &ResponseHeader) -> u64 {
    super::content_length(resp).unwrap_or(UNKNOWN_LENGTH_RESERVE)
}

/// Bytes of the in-flight share held for one fill, for as long as the request filling it
/// lasts (see [`SegmentStore::try_reserve`]); given back on drop.
pub struct Reservation {
    store: &'static SegmentStore,
    len: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.store.inflight.fetch_sub(self.len, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservation({} bytes)", self.len)
    }
}

/// A complete object.
struct Entry {
    meta: Fields,
    body: Bytes,
    /// The answering code's own header for it, made on its first hit (see [`Derived`]).
    derived: arc_swap::ArcSwapOption<Derived>,
}

impl Entry {
    fn new(meta: Fields, body: Bytes) -> Entry {
        Entry {
            meta,
            body,
            derived: arc_swap::ArcSwapOption::empty(),
        }
    }
}

/// A response header the code answering hits made from an object's stored header (the
/// edge's: origin headers filtered, media type checked, its fixed headers added), kept
/// with the object so that it is built once per object rather than on every hit. `tag`
/// names what it was made for (a configuration and a kind of request): a hit asking with
/// another tag makes it again. A 304 revalidation stores a new object, so a new header.
pub struct Derived {
    pub tag: u64,
    /// `None`: the object is not answered this way (the reader decided once). Kept as
    /// plain parts (no second map of the names' case): a hit sets its few headers straight
    /// into the map.
    pub header: Option<http::response::Parts>,
    /// The object is a playlist (its body may be rewritten per viewer).
    pub playlist: bool,
}

/// What a hit needs of an object's `CacheMeta`, kept decoded: Pingora's serialized form
/// compresses the header (zstd), and decoding it on every hit costs more than cloning it.
struct Fields {
    fresh_until: SystemTime,
    /// When the object was stored: its identity for `EdgeState::verbatim` (a 304
    /// revalidation keeps it).
    created: SystemTime,
    /// When the origin last gave or confirmed it (a 304 revalidation moves it): `Age`
    /// counts from it (RFC 9111 §4.2.3).
    epoch: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    header: ResponseHeader,
    /// Bytes the header takes, for the weigher.
    weight: usize,
}

impl Fields {
    fn of(meta: &CacheMeta) -> Fields {
        let header = meta.response_header_copy();
        let weight = 128
            + header
                .headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 16)
                .sum::<usize>();
        Fields {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            epoch: meta.epoch(),
            stale_while_revalidate: meta.stale_while_revalidate_sec(),
            stale_if_error: meta.stale_if_error_sec(),
            header,
            weight,
        }
    }

    fn meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        );
        if self.epoch != self.created {
            meta.set_epoch_override(self.epoch);
        }
        meta
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Progress {
    /// This many chunks are readable; more may come.
    Writing(usize),
    /// All chunks are in.
    Done(usize),
    /// The origin fetch failed: readers must fail too, not end early.
    Failed,
}

/// An object still arriving from the origin.
struct Partial {
    id: u64,
    meta: BinaryMeta,
    chunks: RwLock<Vec<Bytes>>,
    progress: watch::Sender<Progress>,
}

/// See [`SegmentStore::hit`].
pub struct FreshHit {
    entry: Arc<Entry>,
    pub body: Bytes,
    pub created: SystemTime,
    /// When the origin last gave or confirmed it: `Age` counts from it.
    pub epoch: SystemTime,
    /// Past its freshness (answered only while its origin's failure is remembered or a
    /// background refresh runs).
    pub stale: bool,
}

impl FreshHit {
    /// The header derived from the object's stored one for `tag`, made by `make` on the
    /// first hit with that tag and kept with the object (see [`Derived`]).
    pub fn derived(
        &self,
        tag: u64,
        make: impl FnOnce(&ResponseHeader) -> Result<Derived>,
    ) -> Result<Arc<Derived>> {
        if let Some(d) = self.entry.derived.load_full().filter(|d| d.tag == tag) {
            return Ok(d);
        }
        let d = Arc::new(make(&self.entry.meta.header)?);
        self.entry.derived.store(Some(d.clone()));
        Ok(d)
    }
}

/// The segment cache. Create once and leak (`Storage` methods take `&'static self`).
pub struct SegmentStore {
    done: moka::sync::Cache<HashBinary, Arc<Entry>>,
    partial: Mutex<HashMap<HashBinary, Arc<Partial>>>,
    next_id: AtomicU64,
    policy: Policy,
    /// Bytes of objects still arriving, all fills together. They count against
    /// `max_bytes`: complete objects get `max_bytes - inflight_budget`, fills the rest,
    /// so a hostile origin's endless bodies cannot hold memory outside the bound.
    inflight: AtomicU64,
    inflight_budget: u64,
}

fn key_of(key: &CacheKey) -> HashBinary {
    key.combined_bin()
}

impl SegmentStore {
    pub fn new(policy: Policy) -> SegmentStore {
        let inflight_budget = policy.max_bytes / 4;
        let done = moka::sync::Cache::builder()
            .max_capacity(policy.max_bytes - inflight_budget)
            .weigher(|k: &HashBinary, e: &Arc<Entry>| {
                // (a long body's placement takes up to a page more: see `stored_body`)
                let placed = if e.body.len() >= ALIGNED_BODY_MIN {
                    4096
                } else {
                    0
                };
                // (the header twice: the edge's own made from it on the first hit, see
                // `Derived`, is about its size)
                let w = k.len() + 2 * e.meta.weight + e.body.len() + placed + 64;
                w.min(u32::MAX as usize) as u32
            })
            .build();
        SegmentStore {
            done,
            partial: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            policy,
            inflight: AtomicU64::new(0),
            inflight_budget,
        }
    }

    /// The body of a complete object, if the object under `key` is the one stored at
    /// `created` (the hit being served): lets a small playlist hit be rewritten whole before
    /// its header leaves, so it goes out with a `Content-Length` in one write.
    pub fn complete_body(&self, key: &CacheKey, created: SystemTime) -> Option<Bytes> {
        let e = self.done.get(&key_of(key))?;
        (e.meta.created == created).then(|| e.body.clone())
    }

    /// A complete object under `key` (`CacheKey::combined_bin`) that is fresh at `now`, or
    /// (with `stale_ok`) still within its `stale_if_error`: its stored header,
    /// body and creation time, for an answer that skips Pingora's cache phases
    /// (`EdgeProxy::serve_fresh_hit`). A still-arriving object is not one.
    pub fn hit(&self, key: &HashBinary, now: SystemTime, stale_ok: bool) -> Option<FreshHit> {
        let e = self.done.get(key)?;
        let fresh = e.meta.fresh_until > now;
        let usable = fresh
            || (stale_ok
                && e.meta.fresh_until
                    + std::time::Duration::from_secs(e.meta.stale_if_error.into())
                    > now);
        usable.then(|| FreshHit {
            body: e.body.clone(),
            created: e.meta.created,
            epoch: e.meta.epoch,
            stale: !fresh,
            entry: e,
        })
    }

    /// Bytes of objects still arriving from origins.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Reserve the in-flight share a fill of `resp` is about to take (see
    /// [`SegmentStore::try_reserve`]).
    pub fn reserve_for(&'static self, resp: &ResponseHeader) -> Option<Reservation> {
        self.try_reserve(reserve_len(resp))
    }

    /// Reserve `len` bytes of the in-flight share for a fill about to start (its
    /// declared `Content-Length`, or [`UNKNOWN_LENGTH_RESERVE`]). `None`: they do not fit,
    /// and the response is passed through uncached, whole. Deciding here, before the
    /// viewer's header goes out, is what keeps the budget from ever cutting a body it has
    /// started: a fill never needs more than it reserved (the origin connection ends a
    /// body at its Content-Length), except a body of unknown length past the reserve.
    pub fn try_reserve(&'static self, len: u64) -> Option<Reservation> {
        let mut cur = self.inflight.load(Ordering::Acquire);
        loop {
            let next = cur.checked_add(len)?;
            if next > self.inflight_budget {
                return None;
            }
            match self.inflight.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Reservation { store: self, len }),
                Err(seen) => cur = seen,
            }
        }
    }

    /// A leaked store for Pingora's `&'static` cache API (one per server).
    pub fn leak(policy: Policy) -> &'static SegmentStore {
        Box::leak(Box::new(SegmentStore::new(policy)))
    }

    /// Whether a lookup of `key` now would find a fill in progress or a fresh copy (see
    /// `lock::FillLock`).
    pub(crate) fn holds(&self, key: &CacheKey) -> bool {
        let k = key_of(key);
        self.partial.lock().contains_key(&k)
            || self
                .done
                .get(&k)
                .is_some_and(|e| e.meta.fresh_until > SystemTime::now())
    }

    /// Bytes and objects held (complete objects; in-flight ones are bounded by the number
    /// of concurrent misses).
    pub fn usage(&self) -> (u64, u64) {
        self.done.run_pending_tasks();
        (self.done.weighted_size(), self.done.entry_count())
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn complete_hit(entry: &Entry) -> Result<Option<(CacheMeta, HitHandler)>> {
        let meta = entry.meta.meta();
        let len = entry.body.len();
        let hit = CompleteHit {
            body: entry.body.clone(),
            start: 0,
            end: len,
            done: false,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    fn partial_hit(p: &Arc<Partial>) -> Result<Option<(CacheMeta, HitHandler)>> {
        let meta = CacheMeta::deserialize(&p.meta.0, &p.meta.1)?;
        let hit = PartialHit {
            object: p.clone(),
            progress: p.progress.subscribe(),
            next: 0,
        };
        Ok(Some((meta, Box::new(hit))))
    }
}

/// A hit on a complete object: `Bytes` slices of the stored body.
struct CompleteHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for CompleteHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done || self.start >= self.end {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start {start} beyond object of {len} bytes"),
            );
        }
        self.start = start;
        self.end = end.map_or(len, |e| e.min(len));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A hit on an object still arriving: each chunk as the origin read produced it.
struct PartialHit {
    object: Arc<Partial>,
    progress: watch::Receiver<Progress>,
    next: usize,
}

#[async_trait]
impl HandleHit for PartialHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let state = *self.progress.borrow_and_update();
            let available = match state {
                Progress::Failed => {
                    return Error::e_explain(
                        ErrorType::ReadError,
                        "origin fetch of a shared object failed",
                    )
                }
                Progress::Writing(n) | Progress::Done(n) => n,
            };
            if self.next < available {
                // A failed fill clears its chunks (see `SegmentMiss::abandon`).
                let Some(chunk) = self.object.chunks.read().get(self.next).cloned() else {
                    return Error::e_explain(
                        ErrorType::ReadError,
                        "origin fetch of a shared object failed",
                    );
                };
                self.next += 1;
                return Ok(Some(chunk));
            }
            if matches!(state, Progress::Done(_)) {
                return Ok(None);
            }
            if self.progress.changed().await.is_err() {
                // The writer is gone without saying Done: treat as a failure.
                return Error::e_explain(ErrorType::ReadError, "shared object writer gone");
            }
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Bodies this long or longer are laid out at [`BODY_PAGE_OFFSET`] (see [`stored_body`]).
const ALIGNED_BODY_MIN: usize = 32 * 1024;
/// Where in a 4 KiB page a long cached body starts: half way, as far as it can be from
/// where a TLS record's payload lands in the buffer rustls encrypts into.
const BODY_PAGE_OFFSET: usize = 2048;

/// A finished fill's body as one slice, so that every hit is a single `Bytes`: its chunks
/// copied once per miss (one chunk is kept as it is unless it is long and badly placed).
///
/// A long body starts half way into a page. rustls copies each TLS record's plaintext
/// into a fresh buffer just past the record's 5-byte header; mimalloc hands out those
/// 16 KiB buffers page-aligned, and a body page-aligned too makes every such copy one
/// whose destination is 5 bytes past its source modulo 4 KiB. glibc's `memmove` does
/// that copy with `rep movsb`, which on AMD Zen runs at ~3 GB/s instead of ~40 when the
/// destination is 1-24 bytes past the source modulo 4 KiB (measured: bench/README,
/// "the 4 KiB aliasing copy"): a cached 1 MiB segment over TLS HTTP/1.1 spent 38 % of the
/// edge's CPU in that copy. Up to 4 KiB more per long body; short ones are copied in
/// single `mov`s and left as they are.
fn stored_body(chunks: &[Bytes], len: usize) -> Bytes {
    let placed =
        |b: &Bytes| b.len() < ALIGNED_BODY_MIN || b.as_ptr() as usize % 4096 == BODY_PAGE_OFFSET;
    match chunks {
        [] => return Bytes::new(),
        [one] if placed(one) => return one.clone(),
        _ => {}
    }
    let long = len >= ALIGNED_BODY_MIN;
    let mut v = Vec::with_capacity(if long { len + 4096 } else { len });
    let pad = if long {
        (BODY_PAGE_OFFSET + 4096 - v.as_ptr() as usize % 4096) % 4096
    } else {
        0
    };
    v.resize(pad, 0);
    for c in chunks {
        v.extend_from_slice(c);
    }
    // `Bytes::from` a Vec with spare capacity keeps its allocation (no move).
    Bytes::from(v).slice(pad..)
}

struct SegmentMiss {
    store: &'static SegmentStore,
    key: HashBinary,
    object: Arc<Partial>,
    tag: [u8; 8],
    bytes: usize,
    /// Bytes reserved for this fill when it was admitted (its Content-Length, or
    /// [`UNKNOWN_LENGTH_RESERVE`]).
    reserved: u64,
    /// Bytes counted past `reserved`.
    extra: u64,
    finished: bool,
}

#[async_trait]
impl HandleMiss for SegmentMiss {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        self.bytes += data.len();
        // Bytes up to the reservation were counted when the fill was admitted; only what
        // a body of unknown length sends past it is counted here.
        let past = (self.bytes as u64).saturating_sub(self.reserved);
        let more = past - self.extra;
        self.extra = past;
        let total = self.store.inflight.fetch_add(more, Ordering::AcqRel) + more;
        if self.bytes as u64 > self.store.policy.max_object_bytes {
            self.abandon();
            return Error::e_explain(ErrorType::InternalError, "object too large to cache");
        }
        if more > 0 && total > self.store.inflight_budget {
            self.abandon();
            return Error::e_explain(
                ErrorType::InternalError,
                "objects arriving from origins hold their whole memory budget",
            );
        }
        let n = {
            let mut chunks = self.object.chunks.write();
            if !data.is_empty() {
                chunks.push(data);
            }
            chunks.len()
        };
        self.object.progress.send_replace(if eof {
            Progress::Done(n)
        } else {
            Progress::Writing(n)
        });
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let body = stored_body(&self.object.chunks.read(), self.bytes);
        self.release();
        let mut meta = CacheMeta::deserialize(&self.object.meta.0, &self.object.meta.1)?;
        self.store.policy.settle(&mut meta, &body);
        let meta = Fields::of(&meta);
        let size = body.len();
        self.store
            .done
            .insert(self.key, Arc::new(Entry::new(meta, body)));
        // Evict now rather than on moka's schedule, so the bound holds while misses pour
        // in (inserts are misses: rare next to hits).
        self.store.done.run_pending_tasks();
        self.finished = true;
        let n = self.object.chunks.read().len();
        self.object.progress.send_replace(Progress::Done(n));
        self.remove_partial();
        Ok(MissFinishType::Created(size))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }
}

impl SegmentMiss {
    /// Give the object up: its readers fail, its bytes are released at once (even while
    /// readers still hold the object), and nothing is stored.
    fn abandon(&mut self) {
        self.object.progress.send_replace(Progress::Failed);
        self.object.chunks.write().clear();
        self.release();
        self.remove_partial();
    }

    /// Take the bytes this fill counted past its reservation off the in-flight count
    /// (once; the reservation is the filling request's, see [`Reservation`]).
    fn release(&mut self) {
        let n = std::mem::take(&mut self.extra);
        self.store.inflight.fetch_sub(n, Ordering::AcqRel);
    }

    fn remove_partial(&self) {
        let mut partial = self.store.partial.lock();
        if partial
            .get(&self.key)
            .is_some_and(|p| p.id == self.object.id)
        {
            partial.remove(&self.key);
        }
    }
}

impl Drop for SegmentMiss {
    fn drop(&mut self) {
        if !self.finished {
            // The origin died mid-body (or the object was refused): nothing is stored and
            // the viewers streaming it get an error instead of a silently short segment.
            self.abandon();
        }
    }
}

#[async_trait]
impl Storage for SegmentStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let k = key_of(key);
        // An object being refetched is served from its fresh bytes as they arrive.
        let partial = self.partial.lock().get(&k).cloned();
        if let Some(p) = partial {
            return Self::partial_hit(&p);
        }
        match self.done.get(&k) {
            Some(e) => Self::complete_hit(&e),
            None => Ok(None),
        }
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let k = key_of(key);
        let id = streaming_write_tag
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes);
        let partial = self.partial.lock().get(&k).cloned();
        match (partial, id) {
            (Some(p), Some(id)) if p.id == id => Self::partial_hit(&p),
            _ => self.lookup(key, trace).await,
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let k = key_of(key);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (progress, _) = watch::channel(Progress::Writing(0));
        let object = Arc::new(Partial {
            id,
            meta: meta.serialize()?,
            chunks: RwLock::new(Vec::new()),
            progress,
        });
        self.partial.lock().insert(k, object.clone());
        Ok(Box::new(SegmentMiss {
            store: self,
            key: k,
            object,
            tag: id.to_be_bytes(),
            bytes: 0,
            reserved: reserve_len(meta.response_header()),
            extra: 0,
            finished: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let k = target.key().combined_bin();
        let was_partial = self.partial.lock().remove(&k).is_some();
        let was_done = self.done.remove(&k).is_some();
        Ok(if was_partial || was_done {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let k = key_of(key);
        let Some(old) = self.done.get(&k) else {
            return Ok(false);
        };
        let entry = Entry::new(Fields::of(meta), old.body.clone());
        self.done.insert(k, Arc::new(entry));
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_body_starts_half_way_into_a_page_and_keeps_its_bytes() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // from many chunks (as an origin sends them), and from one page-aligned chunk
        let chunks: Vec<Bytes> = bytes.chunks(16_000).map(Bytes::copy_from_slice).collect();
        let mut aligned = Vec::with_capacity(bytes.len() + 4096);
        let pad = (4096 - aligned.as_ptr() as usize % 4096) % 4096;
        aligned.resize(pad, 0);
        aligned.extend_from_slice(&bytes);
        let one = Bytes::from(aligned).slice(pad..);
        assert_eq!(one.as_ptr() as usize % 4096, 0);
        for input in [chunks, vec![one]] {
            let body = stored_body(&input, bytes.len());
            assert_eq!(body, bytes, "the same bytes");
            assert_eq!(body.as_ptr() as usize % 4096, BODY_PAGE_OFFSET, "placed");
        }
        // a short body is one copy (or the one chunk) as it comes
        let short = Bytes::from_static(b"#EXTM3U\n");
        assert_eq!(
            stored_body(std::slice::from_ref(&short), short.len()).as_ptr(),
            short.as_ptr()
        );
        let two = [
            Bytes::from_static(b"#EXTM3U\n"),
            Bytes::from_static(b"a.ts\n"),
        ];
        assert_eq!(stored_body(&two, 13), &b"#EXTM3U\na.ts\n"[..]);
        assert!(stored_body(&[], 0).is_empty());
    }

    #[test]
    fn fills_reserve_their_length_in_a_quarter_of_max_bytes() {
        let store = SegmentStore::leak(Policy {
            max_bytes: 4 << 20,
            ..Policy::default()
        });
        // a quarter (1 MiB) is the in-flight share; each fill reserves its length up front,
        // so a fill admitted is never cut for want of room
        let a = store.try_reserve(700 << 10).expect("fits");
        assert!(
            store.try_reserve(400 << 10).is_none(),
            "700 + 400 KiB > 1 MiB"
        );
        let b = store.try_reserve(300 << 10).expect("700 + 300 KiB fit");
        assert_eq!(store.inflight_bytes(), 1000 << 10);
        drop(a);
        assert_eq!(store.inflight_bytes(), 300 << 10);
        assert!(store.try_reserve(u64::MAX).is_none());
        drop(b);
        assert_eq!(store.inflight_bytes(), 0);
    }
}
