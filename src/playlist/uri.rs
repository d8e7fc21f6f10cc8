//! Where each URI of a playlist goes: back through the edge with the viewer's token when it
//! names an object of the stream's origin, unchanged when it names anything else.
//!
//! - inside the stream's base folder: `{prefix}{path below the base}{?query}`
//! - elsewhere on the origin host (`/keys/k.bin`, `http://origin/other/seg.ts`, `../x`):
//!   `{prefix}~o/{signature}{absolute path}{?query}`, the signature covering the stream and
//!   that exact path, so the token opens only what a playlist named (file origins have no
//!   host to speak of: such URIs are left alone there)
//! - other hosts, other schemes (`skd://`, `data:`), and `https://` when the origin is
//!   `http://` (or the reverse): unchanged, so no token leaks to a third party.
//! - for a grant capped at a resolution ([`EdgeUris::capped`]), every URI inside the base
//!   is `{prefix}~r/{signature}/{path below the base}`: the signature covers the stream,
//!   the cap and the scope the URI opens (a playlist's exact path, or a segment's folder),
//!   so such a grant reaches only renditions a playlist rewritten for it named — the
//!   master's kept variants, and their segments.

use super::UriMap;
use crate::token::Keyring;
use memchr::{memchr, memchr2};
use std::sync::Arc;

/// The origin's address space as the rewriter needs it.
#[derive(Clone, Debug)]
pub struct OriginSpace {
    /// `http` or `https`; `None` for `file://` origins.
    pub scheme: Option<&'static str>,
    /// Lower-case `host[:port]`, the port left out when it is the scheme's default.
    pub authority: String,
    /// Absolute path of the stream's base folder, ending in `/`.
    pub base: String,
}

/// The [`UriMap`] of one playlist response for one viewer.
pub struct EdgeUris {
    origin: Arc<OriginSpace>,
    /// `/api/hls/{token}/{stream}/`
    prefix: Vec<u8>,
    /// `prefix` + the playlist's folder below the base: the whole rewrite of a plain
    /// relative URI. `None` when the playlist itself lies outside the base.
    fast: Option<Vec<u8>>,
    /// Absolute origin path of the playlist's folder, ending in `/`.
    dir: Vec<u8>,
    /// Signs out-of-base paths (`None`: leave them alone).
    signer: Option<(Arc<Keyring>, String)>,
    /// Plain relative URIs stay as they are: the viewer resolves them against the
    /// playlist's own edge URL, which already carries the right token.
    keep_plain: bool,
    /// A grant capped at this many lines: in-base URIs carry rendition signatures, and
    /// the last scope signed (a segment folder, usually the same for every line).
    capped: Option<Capped>,
}

struct Capped {
    cap: u32,
    keyring: Arc<Keyring>,
    stream: String,
    last: Option<(Vec<u8>, String)>,
}

impl EdgeUris {
    /// `playlist_path` is the absolute origin path of the playlist being rewritten;
    /// `prefix` is what every edge URI starts with (`/api/hls/{token}/{stream}/`).
    pub fn new(
        origin: Arc<OriginSpace>,
        prefix: Vec<u8>,
        playlist_path: &str,
        keyring: Arc<Keyring>,
        stream: &str,
    ) -> Self {
        let dir_end = playlist_path.rfind('/').map_or(0, |i| i + 1);
        let dir = playlist_path.as_bytes()[..dir_end].to_vec();
        let fast = dir.strip_prefix(origin.base.as_bytes()).map(|below| {
            let mut f = prefix.clone();
            f.extend_from_slice(below);
            f
        });
        let signer = origin.scheme.map(|_| (keyring, stream.to_owned()));
        EdgeUris {
            origin,
            prefix,
            fast,
            dir,
            signer,
            keep_plain: false,
            capped: None,
        }
    }

    /// Rewrite for a grant capped at `cap` lines (see the module doc): no URI inside the
    /// base is left plain, each carries the signature of the scope it opens.
    pub fn capped(mut self, cap: u32, keyring: Arc<Keyring>, stream: &str) -> Self {
        self.keep_plain = false;
        self.fast = None;
        self.capped = Some(Capped {
            cap,
            keyring,
            stream: stream.to_owned(),
            last: None,
        });
        self
    }

    /// Leave plain relative URIs (`seg12.ts`, `v0/index.m3u8`) unchanged. Right when the
    /// playlist was requested as `{prefix}{folder below base}/...` with the token that
    /// `prefix` holds (not renewed): the player resolves them to exactly what the
    /// rewrite would write. Ignored for a playlist outside the base.
    pub fn keep_plain_relative(mut self) -> Self {
        self.keep_plain = self.fast.is_some();
        self
    }

    /// The absolute origin path (and the query/fragment that follows it) that `uri`
    /// names, or `None` when it is not on this origin.
    fn resolve<'u>(&self, uri: &'u [u8]) -> Option<(Vec<u8>, &'u [u8])> {
        let split = memchr2(b'?', b'#', uri).unwrap_or(uri.len());
        let (reference, query) = uri.split_at(split);
        let path_start;
        if let Some(scheme_len) = scheme_len(reference) {
            let scheme = &reference[..scheme_len];
            let want = self.origin.scheme?;
            if !scheme.eq_ignore_ascii_case(want.as_bytes()) {
                return None;
            }
            let rest = reference[scheme_len + 1..].strip_prefix(b"//")?;
            path_start = self.same_authority(rest)?;
            let path = &rest[path_start..];
            return Some((
                if path.is_empty() {
                    b"/".to_vec()
                } else {
                    path.to_vec()
                },
                query,
            ));
        }
        if let Some(rest) = reference.strip_prefix(b"//") {
            self.origin.scheme?;
            let p = self.same_authority(rest)?;
            let path = &rest[p..];
            return Some((
                if path.is_empty() {
                    b"/".to_vec()
                } else {
                    path.to_vec()
                },
                query,
            ));
        }
        if reference.first() == Some(&b'/') {
            return Some((reference.to_vec(), query));
        }
        let mut abs = self.dir.clone();
        abs.extend_from_slice(reference);
        Some((abs, query))
    }

    /// If `rest` (what follows `//`) starts with this origin's authority, the index where
    /// its path starts.
    fn same_authority(&self, rest: &[u8]) -> Option<usize> {
        let end = memchr(b'/', rest).unwrap_or(rest.len());
        let mut auth = &rest[..end];
        if memchr(b'@', auth).is_some() {
            return None; // userinfo: not how an origin is named; leave it alone
        }
        let default_port: &[u8] = match self.origin.scheme {
            Some("https") => b":443",
            _ => b":80",
        };
        if auth.ends_with(default_port) {
            auth = &auth[..auth.len() - default_port.len()];
        }
        auth.eq_ignore_ascii_case(self.origin.authority.as_bytes())
            .then_some(end)
    }
}

/// A relative reference with no scheme, no root, no dot segment, no query and no leading
/// blank: it resolves to the playlist's folder + itself. (A query needs a signature, so
/// such URIs take the general path.) This runs for
/// every segment line, so it looks at eight bytes at a time.
#[inline]
pub fn is_plain_relative(uri: &[u8]) -> bool {
    let Some(&first) = uri.first() else {
        return false;
    };
    if matches!(first, b'/' | b'.' | b' ' | b'\t' | b'#') {
        return false;
    }
    let mut carry = 0u64; // high bit set when the previous word ended in '/'
    let mut chunks = uri.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        if word_is_bad(w, &mut carry) {
            return false;
        }
    }
    let tail = chunks.remainder();
    if tail.is_empty() {
        return true;
    }
    // The last word: the final eight bytes (overlapping what was checked) shifted so only
    // the tail is left; a URI shorter than a word is gathered byte by byte.
    let last = if uri.len() >= 8 {
        let w = u64::from_le_bytes(uri[uri.len() - 8..].try_into().unwrap_or([0; 8]));
        w >> (8 * (8 - tail.len()))
    } else {
        tail.iter()
            .enumerate()
            .fold(0u64, |w, (i, &b)| w | (u64::from(b) << (8 * i)))
    };
    !word_is_bad(last, &mut carry)
}

const LO7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// High bit of each byte of `w` that equals `b`, exactly (no borrow between bytes).
#[inline(always)]
pub(super) fn bytes_eq(w: u64, b: u8) -> u64 {
    let x = w ^ (u64::from(b) * 0x0101_0101_0101_0101);
    !(((x & LO7) + LO7) | x | LO7)
}

/// A `:` or `?` anywhere, or a `.` right after a `/` (`carry`: the word before ended in
/// `/`).
#[inline(always)]
fn word_is_bad(w: u64, carry: &mut u64) -> bool {
    let slash = bytes_eq(w, b'/');
    let after_slash = (slash << 8) | *carry;
    *carry = slash >> 56;
    (bytes_eq(w, b':') | bytes_eq(w, b'?') | (after_slash & bytes_eq(w, b'.'))) != 0
}

/// Length of the URI scheme if `r` starts with one (`ALPHA *( ALPHA / DIGIT / + - . ) :`).
fn scheme_len(r: &[u8]) -> Option<usize> {
    if !r.first()?.is_ascii_alphabetic() {
        return None;
    }
    for (i, &b) in r.iter().enumerate().skip(1) {
        match b {
            b':' => return Some(i),
            b if b.is_ascii_alphanumeric() || b"+-.".contains(&b) => {}
            _ => return None,
        }
    }
    None
}

/// RFC 3986 remove_dot_segments on an absolute path. A `..` at the root stays at the
/// root, as every player resolves it (`/a/../../b` is `/b`).
pub(crate) fn normalize(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<&[u8]> = Vec::new();
    let segs: Vec<&[u8]> = path.split(|&b| b == b'/').skip(1).collect();
    let last = segs.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segs.iter().enumerate() {
        match *seg {
            b"." => trailing_slash = i == last,
            b".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut p = Vec::with_capacity(path.len());
    for s in &out {
        p.push(b'/');
        p.extend_from_slice(s);
    }
    if trailing_slash || p.is_empty() {
        p.push(b'/');
    }
    p
}

impl UriMap for EdgeUris {
    fn plain_prefix(&self) -> Option<&[u8]> {
        if self.keep_plain {
            return Some(b"");
        }
        self.fast.as_deref()
    }

    fn map(&mut self, uri: &[u8], out: &mut Vec<u8>) {
        // An empty URI (`URI=""`) names nothing: it stays exactly as it is.
        if uri.is_empty() {
            return;
        }
        // The common case: a plain relative name (`seg12.ts`, `v0/index.m3u8`).
        if let Some(fast) = &self.fast {
            if is_plain_relative(uri) {
                if !self.keep_plain {
                    out.extend_from_slice(fast);
                }
                out.extend_from_slice(uri);
                return;
            }
        }
        let Some((abs, query)) = self.resolve(uri) else {
            out.extend_from_slice(uri);
            return;
        };
        let path = normalize(&abs);
        if let Some(below) = path.strip_prefix(self.origin.base.as_bytes()) {
            out.extend_from_slice(&self.prefix);
            if let Some(c) = &mut self.capped {
                c.mark(below, out);
            }
            out.extend_from_slice(below);
            self.query(&path, query, out);
            return;
        }
        match &self.signer {
            Some((keyring, stream)) => {
                let sig = keyring.sign_path(stream, &String::from_utf8_lossy(&path));
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(b"~o/");
                out.extend_from_slice(sig.as_bytes());
                out.extend_from_slice(&path);
                self.query(&path, query, out);
            }
            None => out.extend_from_slice(uri),
        }
    }
}

impl Capped {
    /// Append `~r/{signature}/` for the object at `below` (its path below the base).
    fn mark(&mut self, below: &[u8], out: &mut Vec<u8>) {
        let scope = rendition_scope(below);
        let sig = match &self.last {
            Some((s, sig)) if s.as_slice() == scope => sig,
            _ => {
                let text = String::from_utf8_lossy(scope);
                let sig = self.keyring.sign_rendition(&self.stream, self.cap, &text);
                &self.last.insert((scope.to_vec(), sig)).1
            }
        };
        out.extend_from_slice(crate::playback::RENDITION.as_bytes());
        out.extend_from_slice(sig.as_bytes());
        out.push(b'/');
    }
}

/// The scope a rendition signature gives an object at `below` (its path below the base):
/// a playlist its exact path (a variant playlist opens itself, not its siblings: in a flat
/// layout the taller variants lie beside it), anything else its folder (`""` for the base).
pub fn rendition_scope(below: &[u8]) -> &[u8] {
    if below.ends_with(b".m3u8") {
        return below;
    }
    let end = below.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    &below[..end]
}

impl EdgeUris {
    /// Append `query` (`?...`, `#...` or empty) of a URI for origin path `path`. A query
    /// the playlist named reaches the origin only with a signature of it
    /// ([`crate::playback::QUERY_SIG`]): the edge drops queries viewers make up.
    fn query(&self, path: &[u8], query: &[u8], out: &mut Vec<u8>) {
        let split = memchr(b'#', query).unwrap_or(query.len());
        let (q, fragment) = query.split_at(split);
        let named = match (q.strip_prefix(b"?"), &self.signer) {
            (Some(q), Some(_)) if !q.is_empty() => {
                crate::playback::named_query(&String::from_utf8_lossy(q))
            }
            _ => String::new(),
        };
        out.extend_from_slice(q);
        if let (false, Some((keyring, stream))) = (named.is_empty(), &self.signer) {
            let sig = keyring.sign_query(stream, &String::from_utf8_lossy(path), &named);
            if !q.ends_with(b"&") {
                out.push(b'&');
            }
            out.extend_from_slice(crate::playback::QUERY_SIG.as_bytes());
            out.push(b'=');
            out.extend_from_slice(sig.as_bytes());
        }
        out.extend_from_slice(fragment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::from_text("1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n")
            .unwrap()
    }

    fn http() -> OriginSpace {
        OriginSpace {
            scheme: Some("http"),
            authority: "origin.example:8000".into(),
            base: "/live/s1/".into(),
        }
    }

    #[test]
    fn a_capped_grants_uris_carry_the_signature_of_their_rendition_scope() {
        let k = Arc::new(ring());
        let mut m = EdgeUris::new(
            Arc::new(http()),
            b"/api/hls/TOK/s1/".to_vec(),
            "/live/s1/master.m3u8",
            k.clone(),
            "s1",
        )
        .capped(480, k.clone(), "s1");
        assert_eq!(m.plain_prefix(), None, "no URI is left plain");
        let mut map = |uri: &str| {
            let mut out = Vec::new();
            m.map(uri.as_bytes(), &mut out);
            String::from_utf8(out).unwrap()
        };
        let variant = map("v1/index.m3u8");
        let sig = k.sign_rendition("s1", 480, "v1/index.m3u8");
        assert_eq!(variant, format!("/api/hls/TOK/s1/~r/{sig}/v1/index.m3u8"));
        // segments: their folder's signature, the same for every one of them
        let folder = k.sign_rendition("s1", 480, "v1/");
        assert_eq!(
            map("v1/a.ts"),
            format!("/api/hls/TOK/s1/~r/{folder}/v1/a.ts")
        );
        assert_eq!(
            map("/live/s1/v1/b.ts"),
            format!("/api/hls/TOK/s1/~r/{folder}/v1/b.ts")
        );
        // a scope is signed for one cap and one stream
        assert!(k.verify_rendition("s1", 480, "v1/", &folder));
        assert!(!k.verify_rendition("s1", 720, "v1/", &folder));
        assert!(!k.verify_rendition("s2", 480, "v1/", &folder));
        assert!(!k.verify_rendition("s1", 480, "v0/", &folder));
        // other hosts are still left alone
        assert_eq!(map("https://cdn.other/x.ts"), "https://cdn.other/x.ts");
        assert_eq!(rendition_scope(b"a.ts"), b"");
        assert_eq!(rendition_scope(b"v0/hi.m3u8"), b"v0/hi.m3u8");
    }

    fn map_one(origin: &OriginSpace, playlist: &str, uri: &str) -> String {
        let k = Arc::new(ring());
        let mut m = EdgeUris::new(
            Arc::new(origin.clone()),
            b"/api/hls/TOK/s1/".to_vec(),
            playlist,
            k,
            "s1",
        );
        let mut out = Vec::new();
        m.map(uri.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn in_base_uris() {
        let o = http();
        let p = "/live/s1/v0/index.m3u8";
        for (uri, want) in [
            ("seg1.ts", "/api/hls/TOK/s1/v0/seg1.ts"),
            (
                "seg1.ts?_HLS_msn=3&_HLS_part=1",
                "/api/hls/TOK/s1/v0/seg1.ts?_HLS_msn=3&_HLS_part=1",
            ),
            ("sub/seg1.ts", "/api/hls/TOK/s1/v0/sub/seg1.ts"),
            ("../v1/index.m3u8", "/api/hls/TOK/s1/v1/index.m3u8"),
            ("./seg.ts", "/api/hls/TOK/s1/v0/seg.ts"),
            ("/live/s1/init.mp4", "/api/hls/TOK/s1/init.mp4"),
            (
                "http://origin.example:8000/live/s1/a.ts",
                "/api/hls/TOK/s1/a.ts",
            ),
            (
                "HTTP://ORIGIN.example:8000/live/s1/a.ts?_HLS_skip=YES",
                "/api/hls/TOK/s1/a.ts?_HLS_skip=YES",
            ),
            ("//origin.example:8000/live/s1/a.ts", "/api/hls/TOK/s1/a.ts"),
            ("seg1.ts?", "/api/hls/TOK/s1/v0/seg1.ts?"),
            ("seg1.ts#t=1", "/api/hls/TOK/s1/v0/seg1.ts#t=1"),
        ] {
            assert_eq!(map_one(&o, p, uri), want, "{uri}");
        }
    }

    #[test]
    fn out_of_base_on_origin_is_signed_per_path() {
        let o = http();
        let k = ring();
        let got = map_one(&o, "/live/s1/index.m3u8", "/keys/k.bin?v=2");
        let sig = k.sign_path("s1", "/keys/k.bin");
        let qsig = k.sign_query("s1", "/keys/k.bin", "v=2");
        assert_eq!(
            got,
            format!("/api/hls/TOK/s1/~o/{sig}/keys/k.bin?v=2&hlsq={qsig}")
        );
        let got = map_one(&o, "/live/s1/index.m3u8", "../../other/seg.ts");
        let sig = k.sign_path("s1", "/other/seg.ts");
        assert_eq!(got, format!("/api/hls/TOK/s1/~o/{sig}/other/seg.ts"));
        let got = map_one(
            &o,
            "/live/s1/index.m3u8",
            "http://origin.example:8000/x/y.ts",
        );
        assert!(
            got.starts_with("/api/hls/TOK/s1/~o/") && got.ends_with("/x/y.ts"),
            "{got}"
        );
        // a playlist outside the base: its relative URIs are out-of-base too
        let got = map_one(&o, "/other/index.m3u8", "a.ts");
        let sig = k.sign_path("s1", "/other/a.ts");
        assert_eq!(got, format!("/api/hls/TOK/s1/~o/{sig}/other/a.ts"));
    }

    #[test]
    fn foreign_uris_are_left_alone() {
        let o = http();
        for uri in [
            "https://origin.example:8000/live/s1/a.ts", // other scheme
            "http://origin.example/live/s1/a.ts",       // other port
            "http://cdn.example/live/s1/a.ts",
            "http://user@origin.example:8000/live/s1/a.ts",
            "//cdn.example/a.ts",
            "skd://key-id",
            "data:text/plain;base64,AAAA",
            "",
        ] {
            assert_eq!(map_one(&o, "/live/s1/index.m3u8", uri), uri, "{uri}");
        }
    }

    #[test]
    fn named_queries_are_signed_and_climbing_uris_stay_on_the_edge() {
        let o = http();
        let k = ring();
        let got = map_one(&o, "/live/s1/index.m3u8", "a.ts?x=1&_HLS_msn=3");
        let sig = k.sign_query("s1", "/live/s1/a.ts", "x=1");
        assert_eq!(
            got,
            format!("/api/hls/TOK/s1/a.ts?x=1&_HLS_msn=3&hlsq={sig}")
        );
        let got = map_one(&o, "/live/s1/index.m3u8", "a.ts?x=1#f");
        assert_eq!(got, format!("/api/hls/TOK/s1/a.ts?x=1&hlsq={sig}#f"));
        // climbing above the root resolves at the root, on the origin: signed
        let got = map_one(&o, "/live/s1/index.m3u8", "../../../hls/seg.ts");
        let sig = k.sign_path("s1", "/hls/seg.ts");
        assert_eq!(got, format!("/api/hls/TOK/s1/~o/{sig}/hls/seg.ts"));
        let got = map_one(&o, "/live/s1/index.m3u8", "../../../../etc/passwd");
        assert!(got.starts_with("/api/hls/TOK/s1/~o/") && got.ends_with("/etc/passwd"));
    }

    #[test]
    fn default_ports_match() {
        let o = OriginSpace {
            scheme: Some("https"),
            authority: "origin.example".into(),
            base: "/".into(),
        };
        assert_eq!(
            map_one(&o, "/i.m3u8", "https://origin.example:443/a.ts"),
            "/api/hls/TOK/s1/a.ts"
        );
    }

    #[test]
    fn file_origins_never_leave_their_folder() {
        let o = OriginSpace {
            scheme: None,
            authority: String::new(),
            base: "/srv/hls/demo/".into(),
        };
        let p = "/srv/hls/demo/index.m3u8";
        assert_eq!(map_one(&o, p, "a.ts"), "/api/hls/TOK/s1/a.ts");
        assert_eq!(map_one(&o, p, "/etc/passwd"), "/etc/passwd");
        assert_eq!(map_one(&o, p, "../x.ts"), "../x.ts");
        assert_eq!(map_one(&o, p, "file:///etc/passwd"), "file:///etc/passwd");
    }

    #[test]
    fn normalize_paths() {
        for (p, want) in [
            ("/a/b/../c", Some("/a/c")),
            ("/a/./b/.", Some("/a/b/")),
            ("/a/..", Some("/")),
            ("/..", Some("/")),
            ("/a/../../b", Some("/b")),
            ("/live/s1/../../../hls/seg.ts", Some("/hls/seg.ts")),
            ("/", Some("/")),
        ] {
            assert_eq!(
                Some(String::from_utf8(normalize(p.as_bytes())).unwrap()),
                want.map(String::from),
                "{p}"
            );
        }
    }

    /// The word-at-a-time check agrees with the plain definition on every placement of
    /// the interesting bytes, across word boundaries included.
    #[test]
    fn plain_relative_matches_the_definition() {
        fn naive(u: &[u8]) -> bool {
            !u.is_empty()
                && !matches!(u[0], b'/' | b'.' | b' ' | b'\t' | b'#')
                && !u.contains(&b':')
                && !u.contains(&b'?')
                && !u.windows(2).any(|w| w == b"/.")
        }
        let alphabet = [
            b'a',
            b'/',
            b'.',
            b':',
            b'#',
            b' ',
            b'?',
            0x80,
            0xFF,
            0x2E ^ 0x80,
        ];
        let mut checked = 0;
        for len in 0..=20usize {
            for i in 0..len.max(1) {
                for j in 0..len.max(1) {
                    for &x in &alphabet {
                        for &y in &alphabet {
                            let mut u = vec![b'x'; len];
                            if len > 0 {
                                u[i] = x;
                                u[j] = y;
                            }
                            assert_eq!(is_plain_relative(&u), naive(&u), "{u:?}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000);
        assert!(is_plain_relative(b"index0.ts"));
        assert!(!is_plain_relative(b"seg/sub/0001.ts?a=b"));
        assert!(!is_plain_relative(b"segments/./0001.ts"));
        assert!(!is_plain_relative(b"abcdefg/.hidden")); // the "/." straddles two words
        assert!(!is_plain_relative(b"http://x/y.ts"));
    }
}
