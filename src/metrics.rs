//! Every Prometheus metric of hlsgate, defined here and nowhere else, and the `/metrics`
//! service on `metrics.listen`. Names are prefixed `hlsgate_`.

use crate::cache::SegmentStore;
use crate::recent::Recent;
use async_trait::async_trait;
use parking_lot::RwLock;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

/// The `stream` label of every stream past `metrics.stream_labels`.
pub const OTHER_STREAMS: &str = "_other";

pub struct Metrics {
    pub registry: Registry,
    /// Edge requests by route kind (playlist, segment, key, other) and status.
    pub requests: IntCounterVec,
    /// Refused requests by reason (malformed, forged, expired, wrong_viewer, route, ...).
    pub denials: IntCounterVec,
    /// Cache lookups by result (hit, miss, stale, pass).
    pub cache_lookups: IntCounterVec,
    /// Body bytes sent to viewers from the cache (hits and stale hits).
    pub cache_served_bytes: IntCounter,
    pub cache_held_bytes: IntGauge,
    pub cache_objects: IntGauge,
    pub cache_inflight_bytes: IntGauge,
    pub store_up: IntGauge,
    pub store_stale_answers: IntCounter,
    /// Requests sent to origins, by route kind.
    pub origin_fetches: IntCounterVec,
    /// Origin failures (refused, timed out, died mid-body, 5xx), by route kind.
    pub origin_errors: IntCounterVec,
    /// Time from asking the origin to its response header.
    pub origin_seconds: Histogram,
    pub playlist_rewrites: IntCounter,
    /// Time spent rewriting one playlist (sum over its chunks).
    pub rewrite_seconds: Histogram,
    /// Distinct viewer sessions seen in the last minute.
    pub active_sessions: IntGauge,
    /// Queries the edge made to the store (what: session, stream; result: found,
    /// not_found, error): at most one per key per `store.cache_ttl`, however many viewers.
    pub store_queries: IntCounterVec,
    /// Streams being published now (as this process's publishing callbacks saw them).
    pub streams_live: IntGauge,
    /// Publishing callbacks by event (publish, publish_denied, publish_done, update_denied).
    pub publish_events: IntCounterVec,
    /// Calls to the external authorisation handler by result (ok, error, timeout, busy,
    /// bad_status, bad_answer).
    pub external_calls: IntCounterVec,
    /// Token sessions seen from more than `edge.token_max_ips` addresses.
    pub token_sharing: IntCounter,
    pub access_log_dropped: IntCounter,
    pub reloads: IntCounterVec,
    /// `cache.max_bytes`, so an alert can compare the cache's size with it.
    pub cache_max_bytes: IntGauge,
    /// Connections open on the edge's listeners now.
    pub edge_connections: IntGauge,
    /// The process's resident memory (from `/proc/self/statm`).
    pub resident_bytes: IntGauge,
    /// Per-stream series, bounded by `metrics.stream_labels`.
    pub streams: StreamSeries,
    /// Viewer sessions seen in the last minute, and the stream each watched last.
    sessions: Recent<Arc<str>>,
    /// Where `edge_connections` is read from (the edge's connection cap).
    connections: OnceLock<Arc<crate::edge::guard::Limits>>,
    /// `requests{kind, "200"}` of each kind and `cache_lookups{"hit"}`, looked up once
    /// (see [`Metrics::request`]).
    answered: [OnceLock<IntCounter>; 4],
    hits: OnceLock<IntCounter>,
}

impl Metrics {
    /// Count an edge request of `kind` answered `status` (`hlsgate_requests_total`). Most
    /// are 200s: theirs go through children looked up once, since `with_label_values`
    /// hashes its values and takes a lock on every call.
    pub fn request(&self, kind: crate::media::Kind, status: &'static str) {
        let kept = (status == "200").then(|| &self.answered[kind as usize]);
        inc(&self.requests, &[kind.label(), status], kept);
    }

    /// Count a cache lookup with `result` (`hlsgate_cache_requests_total`), hits (most
    /// of them) as [`Metrics::request`] counts 200s.
    pub fn cache_lookup(&self, result: &'static str) {
        inc(
            &self.cache_lookups,
            &[result],
            (result == "hit").then_some(&self.hits),
        );
    }
}

/// Increment `vec`'s child for `values`, through `kept` (looked up on its first use and
/// kept there) when given.
fn inc(vec: &IntCounterVec, values: &[&str], kept: Option<&OnceLock<IntCounter>>) {
    match kept {
        Some(cell) => cell.get_or_init(|| vec.with_label_values(values)).inc(),
        None => vec.with_label_values(values).inc(),
    }
}

/// Series labelled by stream, at most `limit` streams of them. A counter's label, once
/// given, stays for the life of the process (a counter that moved from one label to another
/// would break `rate()`): the first `limit` streams served get their own, every later one
/// is counted under `stream="_other"`. The viewer gauge is recomputed at each scrape: the
/// `limit` streams with the most viewers, the rest summed under `_other`. `limit` 0: no
/// per-stream series at all. However many streams users create, a scrape holds at most
/// `limit + 1` series of each.
pub struct StreamSeries {
    limit: AtomicUsize,
    requests: IntCounterVec,
    sent_bytes: IntCounterVec,
    viewers: IntGaugeVec,
    named: RwLock<HashMap<Box<str>, (IntCounter, IntCounter)>>,
}

impl StreamSeries {
    /// Set `metrics.stream_labels` (labels already given are kept).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// An admitted request of `stream` was answered with `bytes` of body.
    pub fn served(&self, stream: &str, bytes: u64) {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return;
        }
        if let Some((r, b)) = self.named.read().get(stream) {
            r.inc();
            b.inc_by(bytes);
            return;
        }
        let mut named = self.named.write();
        let label = if named.len() < limit || named.contains_key(stream) {
            stream
        } else {
            OTHER_STREAMS
        };
        let (r, b) = named.entry(label.into()).or_insert_with(|| {
            (
                self.requests.with_label_values(&[label]),
                self.sent_bytes.with_label_values(&[label]),
            )
        });
        r.inc();
        b.inc_by(bytes);
    }

    /// Set the viewer gauge from each session's stream: the top `limit` and `_other`.
    /// `per` counts each stream's sessions.
    fn count_viewers(&self, per: HashMap<Arc<str>, i64>) {
        self.viewers.reset();
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return;
        }
        let mut per: Vec<(Arc<str>, i64)> = per.into_iter().collect();
        per.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut other = 0;
        for (i, (stream, n)) in per.into_iter().enumerate() {
            if i < limit && &*stream != OTHER_STREAMS {
                self.viewers.with_label_values(&[&*stream]).set(n);
            } else {
                other += n;
            }
        }
        if other > 0 {
            self.viewers.with_label_values(&[OTHER_STREAMS]).set(other);
        }
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let m = Metrics {
        requests: counter_vec(
            &r,
            "hlsgate_requests_total",
            "Edge requests by route kind and HTTP status.",
            &["kind", "status"],
        ),
        denials: counter_vec(
            &r,
            "hlsgate_auth_denials_total",
            "Requests refused by the edge's checks, by reason.",
            &["reason"],
        ),
        streams_live: gauge(
            &r,
            "hlsgate_streams_live",
            "Streams being published now (publishing callbacks this process answered).",
        ),
        publish_events: counter_vec(
            &r,
            "hlsgate_publish_events_total",
            "Publishing callbacks by event (publish, publish_denied, publish_done, update_denied).",
            &["event"],
        ),
        token_sharing: counter(
            &r,
            "hlsgate_token_sharing_total",
            "Token sessions seen from more addresses than edge.token_max_ips.",
        ),
        access_log_dropped: counter(
            &r,
            "hlsgate_access_log_dropped_total",
            "Access log lines dropped because the writer fell 64Ki lines behind.",
        ),
        reloads: counter_vec(
            &r,
            "hlsgate_config_reloads_total",
            "SIGHUP config reloads, by result (ok, refused).",
            &["result"],
        ),
        external_calls: counter_vec(
            &r,
            "hlsgate_external_auth_calls_total",
            "Calls to the external playback-authorisation handler, by result.",
            &["result"],
        ),
        store_queries: counter_vec(
            &r,
            "hlsgate_store_queries_total",
            "Store queries made by the edge (cache misses), by what and result.",
            &["what", "result"],
        ),
        cache_lookups: counter_vec(
            &r,
            "hlsgate_cache_requests_total",
            "Cacheable requests by cache result: hit, miss, pass; stale (the origin failed: cache.stale_if_error), updating (stale while one background request refreshes it), failed (the origin's failure remembered for cache.error_ttl answered again).",
            &["result"],
        ),
        cache_served_bytes: counter(
            &r,
            "hlsgate_cache_served_bytes_total",
            "Body bytes sent to viewers from the segment cache.",
        ),
        cache_held_bytes: gauge(
            &r,
            "hlsgate_cache_held_bytes",
            "Bytes held by the segment cache (bodies, headers, keys).",
        ),
        cache_inflight_bytes: gauge(
            &r,
            "hlsgate_cache_inflight_bytes",
            "Bytes of the segment cache's in-flight share (a quarter of cache.max_bytes) reserved by fills arriving from origins.",
        ),
        store_up: gauge(
            &r,
            "hlsgate_store_up",
            "1 while the store answers, 0 from a failed query until a probe succeeds.",
        ),
        store_stale_answers: counter(
            &r,
            "hlsgate_store_stale_answers_total",
            "Store answers given from the last good one while the store failed (store.stale_if_error).",
        ),
        cache_objects: gauge(
            &r,
            "hlsgate_cache_objects",
            "Objects held by the segment cache.",
        ),
        origin_fetches: counter_vec(
            &r,
            "hlsgate_origin_fetches_total",
            "Requests sent to origins, by route kind.",
            &["kind"],
        ),
        origin_errors: counter_vec(
            &r,
            "hlsgate_origin_errors_total",
            "Origin failures (refused, timed out, broken body, 5xx), by route kind.",
            &["kind"],
        ),
        origin_seconds: histogram(
            &r,
            "hlsgate_origin_response_seconds",
            "Time from asking an origin to its response header.",
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        ),
        playlist_rewrites: counter(
            &r,
            "hlsgate_playlist_rewrites_total",
            "Playlists rewritten for a viewer.",
        ),
        rewrite_seconds: histogram(
            &r,
            "hlsgate_playlist_rewrite_seconds",
            "Time spent rewriting one playlist.",
            vec![
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                0.05,
            ],
        ),
        active_sessions: gauge(
            &r,
            "hlsgate_active_sessions",
            "Distinct viewer sessions seen in the last minute.",
        ),
        cache_max_bytes: gauge(
            &r,
            "hlsgate_cache_max_bytes",
            "The segment cache's bound (cache.max_bytes).",
        ),
        edge_connections: gauge(
            &r,
            "hlsgate_edge_connections",
            "Connections open on the edge's listeners (plain and TLS).",
        ),
        resident_bytes: gauge(
            &r,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        ),
        streams: StreamSeries {
            limit: AtomicUsize::new(0),
            requests: counter_vec(
                &r,
                "hlsgate_stream_requests_total",
                "Admitted edge requests by stream (the first metrics.stream_labels streams; the rest as _other).",
                &["stream"],
            ),
            sent_bytes: counter_vec(
                &r,
                "hlsgate_stream_sent_bytes_total",
                "Body bytes sent to viewers by stream (labels as hlsgate_stream_requests_total).",
                &["stream"],
            ),
            viewers: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "hlsgate_stream_viewers",
                        "Viewer sessions seen in the last minute by the stream they watched last (the top metrics.stream_labels streams; the rest as _other).",
                    ),
                    &["stream"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            named: RwLock::new(HashMap::new()),
        },
        connections: OnceLock::new(),
        answered: [const { OnceLock::new() }; 4],
        hits: OnceLock::new(),
        sessions: Recent::new(Duration::from_secs(60), 1_000_000),
        registry: r,
    };
    m.zero_series();
    m
});

impl Metrics {
    /// A viewer session was seen (a valid token) watching `stream`.
    pub fn saw_session(&self, session: [u8; 16], stream: &str) {
        self.sessions.touch(session, stream, crate::store::now_ms());
    }

    /// Read `hlsgate_edge_connections` from the edge's connection counter.
    pub fn count_connections(&self, limits: Arc<crate::edge::guard::Limits>) {
        let _ = self.connections.set(limits);
    }

    /// Pre-create the series of the labels every deployment has, so that a rule's `rate()`
    /// sees them at zero before the first event instead of not at all.
    fn zero_series(&self) {
        for kind in crate::media::Kind::ALL.map(crate::media::Kind::label) {
            self.origin_fetches.with_label_values(&[kind]);
            self.origin_errors.with_label_values(&[kind]);
        }
        for result in ["hit", "miss", "stale", "updating", "pass", "failed"] {
            self.cache_lookups.with_label_values(&[result]);
        }
        for (what, result) in [("session", "error"), ("stream", "error")] {
            self.store_queries.with_label_values(&[what, result]);
        }
        for result in ["ok", "refused"] {
            self.reloads.with_label_values(&[result]);
        }
        for result in ["ok", "error", "timeout", "busy"] {
            self.external_calls.with_label_values(&[result]);
        }
        for event in ["publish", "publish_denied", "publish_done"] {
            self.publish_events.with_label_values(&[event]);
        }
    }

    /// A playlist was rewritten for a viewer, taking `spent` in the rewriter.
    pub fn rewrote(&self, spent: Duration) {
        self.playlist_rewrites.inc();
        self.rewrite_seconds.observe(spent.as_secs_f64());
    }

    /// The text exposition, with the gauges that are computed brought up to date.
    pub fn render(&self, store: Option<&SegmentStore>) -> Vec<u8> {
        let mut per: HashMap<Arc<str>, i64> = HashMap::new();
        let active = self.sessions.sweep(crate::store::now_ms(), |stream| {
            *per.entry(stream.clone()).or_default() += 1;
        });
        self.active_sessions.set(active as i64);
        self.streams.count_viewers(per);
        if let Some(store) = store {
            let (bytes, objects) = store.usage();
            self.cache_held_bytes.set(bytes as i64);
            self.cache_objects.set(objects as i64);
            self.cache_inflight_bytes.set(store.inflight_bytes() as i64);
            self.cache_max_bytes.set(store.policy().max_bytes as i64);
        }
        if let Some(l) = self.connections.get() {
            self.edge_connections.set(l.open() as i64);
        }
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss as i64);
        }
        let mut out = Vec::with_capacity(8192);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to a Vec cannot fail");
        out
    }
}

/// The resident set size from `/proc/self/statm` (its second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// `GET /metrics` on `metrics.listen`.
pub struct MetricsApp {
    pub store: Option<&'static SegmentStore>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, ctype, body) = if path == "/metrics" {
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                METRICS.render(self.store),
            )
        } else {
            (404, "text/plain", b"not found\n".to_vec())
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, ctype)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("valid response")
    }
}
