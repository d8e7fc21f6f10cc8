//! The in-memory segment cache behind Pingora's cache phase.
//!
//! [`SegmentStore`] is a `pingora_cache::Storage` over moka holding `Bytes`: bounded by
//! bytes (a weigher over body + header), a hit hands out `Bytes` slices of the stored body
//! (no copy in our code), and an object still arriving from the origin can be streamed by
//! the viewers who waited on the cache lock (`support_streaming_partial_write`): each
//! chunk is shared as the `Bytes` the origin read produced. An object whose origin fetch
//! fails half-way is never stored, and its waiting readers get an error, not a short body.
//!
//! [`Policy`] decides freshness per kind: segments, init segments and keys long; live
//! playlists about half a target duration; VOD playlists longer; an origin's
//! `Cache-Control` (`s-maxage`, `max-age`, `no-store`, `private`, `no-cache`) wins.

pub mod lock;
mod store;

pub use store::{Derived, FreshHit, Reservation, SegmentStore};

use crate::media::Kind;
use pingora_cache::cache_control::CacheControl;
use pingora_cache::{CacheMeta, RespCacheable};
use pingora_http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// Freshness settings (`cache.*` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub max_bytes: u64,
    /// Segments, init segments, keys, anything that is not a playlist.
    pub segment_ttl: Duration,
    /// Playlists with `#EXT-X-ENDLIST` or `#EXT-X-PLAYLIST-TYPE:VOD`.
    pub vod_playlist_ttl: Duration,
    /// Live playlists without a target duration; otherwise half of it.
    pub live_playlist_ttl: Duration,
    /// How long past its freshness an object may be served when the origin fails.
    pub stale_if_error: Duration,
    /// How long a failed origin fetch (a 5xx, a refused connection, a timeout) is
    /// remembered: meanwhile the object's viewers get the stale copy or the same error
    /// without another origin request (0: not remembered).
    pub error_ttl: Duration,
    /// Objects larger than this are passed through, not cached.
    pub max_object_bytes: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_bytes: 256 << 20,
            segment_ttl: Duration::from_secs(600),
            vod_playlist_ttl: Duration::from_secs(30),
            live_playlist_ttl: Duration::from_secs(1),
            stale_if_error: Duration::from_secs(60),
            error_ttl: Duration::from_secs(1),
            max_object_bytes: 64 << 20,
        }
    }
}

fn secs(d: Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64) as u32
}

/// The origin's own freshness (`s-maxage`, else `max-age`), or `Err` when it forbids a
/// shared cache.
fn origin_ttl(resp: &ResponseHeader) -> Result<Option<Duration>, &'static str> {
    let Some(cc) = CacheControl::from_resp_headers(resp) else {
        return Ok(None);
    };
    if cc.no_store() || cc.private() || cc.no_cache() {
        return Err("origin Cache-Control forbids caching");
    }
    let age = cc.s_maxage().ok().flatten().or(cc.max_age().ok().flatten());
    match age {
        Some(0) => Err("origin Cache-Control max-age=0"),
        Some(s) => Ok(Some(Duration::from_secs(s.into()))),
        None => Ok(None),
    }
}

/// Whether a response's `Vary` names anything but what the edge itself always sends the
/// same way (`Accept-Encoding`: never sent; `User-Agent`: the edge's own; `Host`): such an
/// answer may depend on who asked, so it is not shared between viewers.
fn varies_per_viewer(resp: &ResponseHeader) -> bool {
    resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|name| {
            let name = name.trim_ascii();
            !name.is_empty()
                && !name.eq_ignore_ascii_case(b"accept-encoding")
                && !name.eq_ignore_ascii_case(b"user-agent")
                && !name.eq_ignore_ascii_case(b"host")
        })
    })
}

/// A response's `Content-Length`, when it has a valid one.
pub fn content_length(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

impl Policy {
    /// Whether and how long an origin response is kept. Only complete `200`s are cached:
    /// errors, redirects and partial answers go to the viewer as they are.
    pub fn cacheable(&self, kind: Kind, resp: &ResponseHeader) -> Result<CacheMeta, &'static str> {
        if resp.status != http::StatusCode::OK {
            return Err("status is not 200");
        }
        match content_length(resp) {
            Some(len) if len > self.max_object_bytes => return Err("object too large"),
            Some(_) => {}
            // A segment of unknown length may turn out larger than the cache takes; a fill
            // cut off there would cut the viewer's body too. It passes through whole.
            // (Playlists are small; one that is not is invalid and fails.)
            None if kind != Kind::Playlist
                && !resp
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|v| crate::media::is_playlist_type(v.as_bytes())) =>
            {
                return Err("length unknown")
            }
            None => {}
        }
        if resp.headers.contains_key(http::header::SET_COOKIE) || varies_per_viewer(resp) {
            return Err("origin response is per client");
        }
        let ttl = match origin_ttl(resp)? {
            Some(t) => t,
            None if kind == Kind::Playlist => self.live_playlist_ttl, // refined in `settle`
            None => self.segment_ttl,
        };
        let now = SystemTime::now();
        // A playlist past its freshness is answered stale while one request refreshes it
        // in the background (see `settle` for playlists known only by their body).
        let swr = if kind == Kind::Playlist {
            secs(self.stale_if_error)
        } else {
            0
        };
        Ok(CacheMeta::new(
            now + ttl,
            now,
            swr,
            secs(self.stale_if_error),
            resp.clone(),
        ))
    }

    /// As [`Policy::cacheable`], in the form Pingora's `response_cache_filter` wants.
    pub fn resp_cacheable(&self, kind: Kind, resp: &ResponseHeader) -> RespCacheable {
        match self.cacheable(kind, resp) {
            Ok(meta) => RespCacheable::Cacheable(meta),
            Err(why) => RespCacheable::Uncacheable(pingora_cache::NoCacheReason::Custom(why)),
        }
    }

    /// Once a playlist's body is complete, its freshness when the origin did not give one:
    /// a VOD playlist does not change, a live one changes about every target duration.
    pub fn playlist_ttl(&self, body: &[u8]) -> Duration {
        let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
        if has(b"#EXT-X-ENDLIST") || has(b"#EXT-X-PLAYLIST-TYPE:VOD") {
            return self.vod_playlist_ttl;
        }
        // LL-HLS: parts appear every PART-TARGET, so a live low-latency playlist is only
        // fresh for half of that.
        if let Some(part) = decimal_after(body, b"PART-TARGET=") {
            return (part / 2).max(Duration::from_millis(100));
        }
        decimal_after(body, b"#EXT-X-TARGETDURATION:")
            .map(|t| (t / 2).max(Duration::from_millis(500)))
            .unwrap_or(self.live_playlist_ttl)
    }

    /// Adjust a just-completed object's freshness (see [`Policy::playlist_ttl`]): a
    /// playlist is answered stale while it is refreshed in the background (within
    /// `stale_if_error`), as nginx's `proxy_cache_use_stale updating` with
    /// `proxy_cache_background_update`.
    pub(crate) fn settle(&self, meta: &mut CacheMeta, body: &[u8]) {
        let header = meta.response_header();
        let is_playlist = header
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| crate::media::is_playlist_type(v.as_bytes()))
            || body.starts_with(b"#EXTM3U")
            || body.starts_with(b"\xEF\xBB\xBF#EXTM3U");
        if !is_playlist {
            return;
        }
        let fresh_until = match origin_ttl(header) {
            Ok(Some(_)) => meta.fresh_until(),
            _ => meta.created() + self.playlist_ttl(body),
        };
        let sie = meta.stale_if_error_sec();
        meta.update_freshness(fresh_until, sie, sie);
    }
}

/// The decimal number of seconds after the first `tag` (`#EXT-X-TARGETDURATION:6`,
/// `PART-TARGET=0.334`).
fn decimal_after(body: &[u8], tag: &[u8]) -> Option<Duration> {
    let at = memchr::memmem::find(body, tag)? + tag.len();
    let rest = &body[at..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'.'))
        .unwrap_or(rest.len());
    let v: f64 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    (v.is_finite() && v > 0.0 && v < 86_400.0).then(|| Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response of `status` with a Content-Length (unless `headers` give one or say
    /// `Transfer-Encoding`), and `headers`.
    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        if !headers
            .iter()
            .any(|(k, _)| *k == "Content-Length" || *k == "Transfer-Encoding")
        {
            r.insert_header("Content-Length", "1880").unwrap();
        }
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn fresh_secs(m: &CacheMeta) -> u64 {
        m.fresh_until()
            .duration_since(m.created())
            .unwrap()
            .as_secs()
    }

    fn ttl(p: &Policy, kind: Kind, r: &ResponseHeader) -> Option<u64> {
        p.cacheable(kind, r).ok().map(|m| fresh_secs(&m))
    }

    #[test]
    fn freshness_by_kind_and_origin_cache_control() {
        let p = Policy::default();
        assert_eq!(ttl(&p, Kind::Segment, &resp(200, &[])), Some(600));
        assert_eq!(ttl(&p, Kind::Playlist, &resp(200, &[])), Some(1));
        let cc = |v| resp(200, &[("Cache-Control", v)]);
        assert_eq!(ttl(&p, Kind::Segment, &cc("max-age=30")), Some(30));
        assert_eq!(
            ttl(&p, Kind::Segment, &cc("max-age=30, s-maxage=7")),
            Some(7)
        );
        for no in ["no-store", "private", "no-cache", "max-age=0"] {
            assert_eq!(ttl(&p, Kind::Segment, &cc(no)), None, "{no}");
        }
        for status in [206, 301, 404, 500, 503] {
            assert_eq!(ttl(&p, Kind::Segment, &resp(status, &[])), None, "{status}");
        }
        assert_eq!(
            ttl(&p, Kind::Segment, &resp(200, &[("Set-Cookie", "a=b")])),
            None
        );
        let big = resp(200, &[("Content-Length", "99999999999")]);
        assert_eq!(ttl(&p, Kind::Segment, &big), None);
        // unknown length: segments pass through (a cut fill would cut the viewer's body),
        // playlists are cached
        let chunked = resp(200, &[("Transfer-Encoding", "chunked")]);
        assert_eq!(ttl(&p, Kind::Segment, &chunked), None);
        assert_eq!(ttl(&p, Kind::Playlist, &chunked), Some(1));
        // Vary on what a viewer could send: not shared; on what the edge sends: shared
        for (vary, shared) in [
            ("Accept-Encoding", true),
            ("accept-encoding, User-Agent", true),
            ("X-Forwarded-Host", false),
            ("Accept-Encoding, Cookie", false),
            ("*", false),
        ] {
            let r = resp(200, &[("Vary", vary)]);
            assert_eq!(ttl(&p, Kind::Segment, &r).is_some(), shared, "{vary}");
        }
    }

    #[test]
    fn playlist_freshness_follows_its_body() {
        let p = Policy::default();
        let live = b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\na.ts\n";
        assert_eq!(p.playlist_ttl(live), Duration::from_secs(3));
        let vod = b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\na.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(p.playlist_ttl(vod), p.vod_playlist_ttl);
        assert_eq!(p.playlist_ttl(b"#EXTM3U\n"), p.live_playlist_ttl);
        assert_eq!(
            p.playlist_ttl(b"#EXT-X-TARGETDURATION:1\n"),
            Duration::from_millis(500)
        );
        assert_eq!(
            p.playlist_ttl(b"#EXT-X-TARGETDURATION:-5\n"),
            p.live_playlist_ttl
        );
        let ll = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1.002\n";
        assert_eq!(p.playlist_ttl(ll), Duration::from_millis(501));
        let ll = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=0.1\n";
        assert_eq!(p.playlist_ttl(ll), Duration::from_millis(100));

        let mut m = p.cacheable(Kind::Playlist, &resp(200, &[])).unwrap();
        p.settle(&mut m, vod);
        assert_eq!(fresh_secs(&m), 30);
        // The origin's max-age is kept.
        let mut m = p
            .cacheable(
                Kind::Playlist,
                &resp(200, &[("Cache-Control", "max-age=2")]),
            )
            .unwrap();
        p.settle(&mut m, vod);
        assert_eq!(fresh_secs(&m), 2);
    }
}
