//! The incremental m3u8 rewriter: bytes in, bytes out, only an unfinished line kept between
//! chunks, so memory does not grow with the playlist and the first lines leave the edge
//! before the last ones arrive.
//!
//! What is rewritten (through a [`UriMap`]):
//! - URI lines: every line that is neither blank nor starts with `#` (the URI after
//!   `#EXTINF`, `#EXT-X-STREAM-INF`, ...);
//! - `URI="..."` and `SERVER-URI="..."` attributes of any `#EXT` tag (`EXT-X-KEY`,
//!   `EXT-X-SESSION-KEY`, `EXT-X-MAP`, `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`,
//!   `EXT-X-SESSION-DATA`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`, `EXT-X-RENDITION-REPORT`,
//!   `EXT-X-CONTENT-STEERING`, and any tag a later HLS version adds).
//!
//! Everything else is copied byte for byte: line endings (LF or CRLF), a UTF-8 BOM,
//! blank space around a URI line, comments, unknown tags, attribute order and spacing.

mod emit;
mod ladder;
mod scan;
mod uri;

pub use ladder::Ladder;

pub use uri::{is_plain_relative, rendition_scope, EdgeUris, OriginSpace};

use memchr::{memchr, memmem};
use std::sync::LazyLock;

static URI_ATTR: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"URI=\""));

/// Longest line accepted; a longer one makes the playlist invalid (a DoS guard: without a
/// bound, a playlist with no newline would be buffered whole).
pub const MAX_LINE: usize = 64 * 1024;

/// Decides what a URI found in a playlist becomes.
pub trait UriMap {
    /// Append the rewritten form of `uri` (or `uri` itself when it is to be left alone).
    fn map(&mut self, uri: &[u8], out: &mut Vec<u8>);

    /// When every plain relative URI (see [`uri::is_plain_relative`]) is rewritten by
    /// putting the same bytes before it, those bytes. Lets the rewriter handle the common
    /// segment line without a call per URI; `map` must give the same result for such URIs.
    fn plain_prefix(&self) -> Option<&[u8]> {
        None
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("playlist line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// Streaming rewriter. Feed chunks in order with [`Rewriter::feed`], then call
/// [`Rewriter::finish`] once at the end of the body.
pub struct Rewriter<M> {
    map: M,
    /// `map.plain_prefix()`, kept here so the hot loop can borrow it beside `self`.
    fast: Option<emit::Prefix>,
    partial: Vec<u8>,
    first_line: bool,
    uris: u64,
    /// Bytes fed and written so far, for [`Rewriter::output_hint`].
    bytes_in: u64,
    bytes_out: u64,
    /// Some URI came out different from how it went in.
    changed: bool,
    /// A ladder cut the lines pass through first, and its output buffer.
    ladder: Option<(Ladder, Vec<u8>)>,
    /// The block scanner's buffers (fast path).
    scan: scan::Scan,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<M: UriMap> Rewriter<M> {
    pub fn new(map: M) -> Self {
        Rewriter {
            fast: map.plain_prefix().map(emit::Prefix::new),
            map,
            partial: Vec::new(),
            first_line: true,
            uris: 0,
            bytes_in: 0,
            bytes_out: 0,
            changed: false,
            ladder: None,
            scan: scan::Scan::default(),
        }
    }

    /// Remove variants taller than `max_height` lines (see [`Ladder`]) before rewriting.
    pub fn cut_ladder(mut self, max_height: u32) -> Self {
        self.ladder = Some((Ladder::new(max_height), Vec::new()));
        self
    }

    /// Whether the output so far differs from the input. `false` at the end means the
    /// playlist went through byte for byte (the edge then remembers that for the cached
    /// object and skips the rewriter for the next viewers).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// How many URIs were handed to the map so far.
    pub fn uris(&self) -> u64 {
        self.uris
    }

    /// A capacity for the output of a `chunk_len`-byte chunk that is rarely too small, from
    /// how much the playlist grew so far (a URI line can grow several times over), so the
    /// output buffer is not reallocated and copied while it fills.
    pub fn output_hint(&self, chunk_len: usize) -> usize {
        let grown = (chunk_len as u64)
            .saturating_mul(self.bytes_out)
            .checked_div(self.bytes_in)
            .unwrap_or(chunk_len as u64 * 2);
        (grown as usize).saturating_add(chunk_len / 8 + 1024)
    }

    /// Rewrite every line completed by `chunk`, appending to `out`; keep the unfinished
    /// last line for the next call.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let before = out.len();
        let result = match self.ladder.take() {
            None => self.feed_lines(chunk, out),
            Some((mut ladder, mut kept)) => {
                kept.clear();
                let r = ladder
                    .feed(chunk, &mut kept)
                    .and_then(|()| self.feed_lines(&kept, out));
                self.changed |= ladder.removed() > 0;
                self.ladder = Some((ladder, kept));
                r
            }
        };
        self.bytes_in += chunk.len() as u64;
        self.bytes_out += (out.len() - before) as u64;
        result
    }

    fn feed_lines(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            match memchr(b'\n', rest) {
                None => return self.keep(rest),
                Some(nl) => {
                    let mut line = std::mem::take(&mut self.partial);
                    if line.len() + nl > MAX_LINE {
                        return Err(RewriteError::LineTooLong);
                    }
                    line.extend_from_slice(&rest[..=nl]);
                    self.line(&line, out);
                    line.clear();
                    self.partial = line; // keep the allocation
                    rest = &rest[nl + 1..];
                }
            }
        }
        if self.first_line {
            // The first line goes the careful way: it may start with a BOM.
            let Some(nl) = memchr(b'\n', rest) else {
                return self.keep(rest);
            };
            if nl > MAX_LINE {
                return Err(RewriteError::LineTooLong);
            }
            self.line(&rest[..=nl], out);
            rest = &rest[nl + 1..];
        }
        if let Some(prefix) = self.fast.take() {
            let r = self.feed_plain(rest, &prefix, out);
            self.fast = Some(prefix);
            return r;
        }
        out.reserve(self.output_hint(rest.len()));
        // Lines that stay as they are accumulate in a run copied with one memcpy.
        let mut run = 0; // rest[run..start] is still to be copied
        let mut start = 0;
        while let Some(nl) = find_newline(rest, start) {
            // One rule however the body was cut into chunks: a line over the cap is an
            // error here too, not only when it straddles two chunks.
            if nl - start > MAX_LINE {
                return Err(RewriteError::LineTooLong);
            }
            let end = if nl > start && rest[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            let body = &rest[start..end];
            let verbatim = match body.first() {
                None => true,
                Some(b'#') => !needs_tag_rewrite(body),
                Some(_) => false,
            };
            if !verbatim {
                out.extend_from_slice(&rest[run..start]);
                self.line(&rest[start..=nl], out);
                run = nl + 1;
            }
            start = nl + 1;
        }
        out.extend_from_slice(&rest[run..start]);
        self.keep(&rest[start..])
    }

    /// The fast path, when every plain relative URI gets the same `prefix` (empty: kept as
    /// it is): the complete lines of `rest` are classified by the block scanner; the lines
    /// between those it flagged are copied with `prefix` put before each plain URI line
    /// ([`emit::emit`]), and only the flagged lines go through [`Rewriter::line`]. The
    /// output is sized once.
    fn feed_plain(
        &mut self,
        rest: &[u8],
        prefix: &emit::Prefix,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let Some(last) = memchr::memrchr(b'\n', rest) else {
            return self.keep(rest);
        };
        let (lines, tail) = rest.split_at(last + 1);
        let mut sc = std::mem::take(&mut self.scan);
        sc.starts.clear();
        sc.slow.clear();
        if scan::scan(lines, &mut sc).is_err() {
            self.scan = sc;
            return Err(RewriteError::LineTooLong);
        }
        let uri_lines: u64 = sc.starts.iter().map(|m| u64::from(m.count_ones())).sum();
        out.reserve(lines.len() + uri_lines as usize * prefix.len() + 1024);
        let mut done = 0; // lines[..done] is in `out`
        let mut slow_uris = 0;
        for &s in &sc.slow {
            emit::emit(lines, &sc.starts, done, s, prefix, out);
            let nl = s + memchr(b'\n', &lines[s..]).unwrap_or(lines.len() - s - 1);
            self.line(&lines[s..=nl], out);
            // (`line` counts its own URIs; a line starting `\r` is flagged as one.)
            slow_uris += u64::from(!matches!(lines[s], b'#' | b'\n'));
            done = nl + 1;
        }
        emit::emit(lines, &sc.starts, done, lines.len(), prefix, out);
        let plain = uri_lines - slow_uris;
        self.uris += plain;
        self.changed |= plain > 0 && !prefix.is_empty();
        self.scan = sc;
        self.keep(tail)
    }

    /// Rewrite the last line if the body did not end with a newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if let Some((mut ladder, mut kept)) = self.ladder.take() {
            kept.clear();
            ladder.finish(&mut kept);
            self.changed |= ladder.removed() > 0;
            self.feed_lines(&kept, out)?;
        }
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out);
        }
        Ok(())
    }

    fn keep(&mut self, rest: &[u8]) -> Result<(), RewriteError> {
        if self.partial.len() + rest.len() > MAX_LINE {
            return Err(RewriteError::LineTooLong);
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    fn map_uri(&mut self, uri: &[u8], out: &mut Vec<u8>) {
        let before = out.len();
        self.map.map(uri, out);
        self.changed |= out[before..] != *uri;
    }

    /// One line, terminator included when present.
    fn line(&mut self, mut line: &[u8], out: &mut Vec<u8>) {
        if self.first_line {
            self.first_line = false;
            if let Some(rest) = line.strip_prefix(BOM) {
                out.extend_from_slice(BOM);
                line = rest;
            }
        }
        let mut end = line.len();
        if end > 0 && line[end - 1] == b'\n' {
            end -= 1;
            if end > 0 && line[end - 1] == b'\r' {
                end -= 1;
            }
        }
        let (body, eol) = line.split_at(end);
        match body.first() {
            None => out.extend_from_slice(line),
            Some(b'#') => {
                if needs_tag_rewrite(body) {
                    self.tag(body, out);
                    out.extend_from_slice(eol);
                } else {
                    out.extend_from_slice(line);
                }
            }
            Some(_) => {
                let start = body
                    .iter()
                    .position(|b| !b" \t".contains(b))
                    .unwrap_or(body.len());
                let stop = body
                    .iter()
                    .rposition(|b| !b" \t".contains(b))
                    .map_or(start, |p| p + 1);
                if start == stop {
                    out.extend_from_slice(line);
                    return;
                }
                out.extend_from_slice(&body[..start]);
                self.uris += 1;
                self.map_uri(&body[start..stop], out);
                out.extend_from_slice(&body[stop..]);
                out.extend_from_slice(eol);
            }
        }
    }

    /// A tag line with attributes: rewrite the quoted value of every `URI` / `SERVER-URI`
    /// attribute; copy all else. Quoted strings are skipped as a whole, so a `URI="` inside
    /// another attribute's value is not mistaken for one.
    fn tag(&mut self, body: &[u8], out: &mut Vec<u8>) {
        let Some(colon) = memchr(b':', body) else {
            out.extend_from_slice(body);
            return;
        };
        let mut copied = 0; // body[..copied] is already in `out`
        let mut attr_start = colon + 1;
        let mut i = colon + 1;
        while i < body.len() {
            match body[i] {
                b',' => attr_start = i + 1,
                b'"' => {
                    let Some(len) = memchr(b'"', &body[i + 1..]) else {
                        break; // unterminated quote: leave the rest as it is
                    };
                    let close = i + 1 + len;
                    let name = body[attr_start..i].trim_ascii();
                    if name == b"URI=" || name == b"SERVER-URI=" {
                        out.extend_from_slice(&body[copied..=i]);
                        self.uris += 1;
                        self.map_uri(&body[i + 1..close], out);
                        copied = close;
                    }
                    i = close;
                }
                _ => {}
            }
            i += 1;
        }
        out.extend_from_slice(&body[copied..]);
    }
}

/// Index in `buf` of the first `\n` at or after `from`. Playlist lines are short, so a
/// few words are looked at directly before handing over to `memchr` (whose set-up costs
/// more than a short line).
#[inline(always)]
fn find_newline(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    for _ in 0..4 {
        let Some(word) = buf.get(i..i + 8) else {
            break;
        };
        let hit = uri::bytes_eq(u64::from_le_bytes(word.try_into().ok()?), b'\n');
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr(b'\n', buf.get(i..)?).map(|p| i + p)
}

/// A tag line that may carry `URI="..."` attributes (`#EXTINF` titles are free text).
#[inline]
fn needs_tag_rewrite(body: &[u8]) -> bool {
    body.starts_with(b"#EXT") && !body.starts_with(b"#EXTINF:") && URI_ATTR.find(body).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks every URI so tests can see exactly what was treated as one.
    struct Mark;
    impl UriMap for Mark {
        fn map(&mut self, uri: &[u8], out: &mut Vec<u8>) {
            out.extend_from_slice(b"<");
            out.extend_from_slice(uri);
            out.extend_from_slice(b">");
        }
    }

    fn rewrite_in(chunks: &[&[u8]]) -> Vec<u8> {
        let mut r = Rewriter::new(Mark);
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        out
    }

    const LL_HLS: &str = "\u{feff}#EXTM3U\r\n\
#EXT-X-VERSION:9\r\n\
#EXT-X-TARGETDURATION:4\r\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\r\n\
#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer?x=1\",PATHWAY-ID=\"A\"\r\n\
#EXT-X-SESSION-DATA:DATA-ID=\"com.x\",URI=\"data.json\"\r\n\
#EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"k.bin\"\r\n\
#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://key\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\r\n\
#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"\r\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"say, URI=\",URI=\"audio/en.m3u8\"\r\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"iframe.m3u8\"\r\n\
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS=\"avc1.4d401f\"\r\n\
\x20\tlow/index.m3u8\x20\x20\r\n\
\r\n\
# a comment with URI=\"x\"\r\n\
#EXTINF:4.0,title with URI=\"x\"\r\n\
seg1.ts?_HLS_msn=1\r\n\
#EXT-X-PART:DURATION=1.0,URI=\"part1.mp4\",INDEPENDENT=YES\r\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part2.mp4\"\r\n\
#EXT-X-RENDITION-REPORT:URI=\"../hi/index.m3u8\",LAST-MSN=1\r\n\
#EXT-X-UNKNOWN-FUTURE:URI=\"future.bin\"\r\n\
last.ts";

    const LL_HLS_OUT: &str = "\u{feff}#EXTM3U\r\n\
#EXT-X-VERSION:9\r\n\
#EXT-X-TARGETDURATION:4\r\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\r\n\
#EXT-X-CONTENT-STEERING:SERVER-URI=\"</steer?x=1>\",PATHWAY-ID=\"A\"\r\n\
#EXT-X-SESSION-DATA:DATA-ID=\"com.x\",URI=\"<data.json>\"\r\n\
#EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"<k.bin>\"\r\n\
#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"<skd://key>\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\r\n\
#EXT-X-MAP:URI=\"<init.mp4>\",BYTERANGE=\"720@0\"\r\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"say, URI=\",URI=\"<audio/en.m3u8>\"\r\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"<iframe.m3u8>\"\r\n\
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS=\"avc1.4d401f\"\r\n\
\x20\t<low/index.m3u8>\x20\x20\r\n\
\r\n\
# a comment with URI=\"x\"\r\n\
#EXTINF:4.0,title with URI=\"x\"\r\n\
<seg1.ts?_HLS_msn=1>\r\n\
#EXT-X-PART:DURATION=1.0,URI=\"<part1.mp4>\",INDEPENDENT=YES\r\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"<part2.mp4>\"\r\n\
#EXT-X-RENDITION-REPORT:URI=\"<../hi/index.m3u8>\",LAST-MSN=1\r\n\
#EXT-X-UNKNOWN-FUTURE:URI=\"<future.bin>\"\r\n\
<last.ts>";

    #[test]
    fn rewrites_every_uri_and_nothing_else() {
        let out = rewrite_in(&[LL_HLS.as_bytes()]);
        assert_eq!(String::from_utf8(out).unwrap(), LL_HLS_OUT);
    }

    #[test]
    fn identical_output_at_every_split_point() {
        let input = LL_HLS.as_bytes();
        let whole = rewrite_in(&[input]);
        for i in 0..=input.len() {
            assert_eq!(
                rewrite_in(&[&input[..i], &input[i..]]),
                whole,
                "split at {i}"
            );
        }
        // and fed one byte at a time
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(rewrite_in(&bytes), whole);
        // every pair of split points, for a shorter input
        let short = &input[..120];
        let whole = rewrite_in(&[short]);
        for i in 0..=short.len() {
            for j in i..=short.len() {
                assert_eq!(
                    rewrite_in(&[&short[..i], &short[i..j], &short[j..]]),
                    whole,
                    "splits at {i},{j}"
                );
            }
        }
    }

    /// A map with a plain prefix, and the same map without it: the fast path taken for
    /// plain URI lines must give what the general path gives, at every split point.
    /// Plain relative URIs get `.1` put before them (empty: kept as they are), others are
    /// bracketed; `.0` says whether the map offers the fast path.
    struct Prefixed(bool, &'static [u8]);
    impl UriMap for Prefixed {
        fn map(&mut self, uri: &[u8], out: &mut Vec<u8>) {
            if is_plain_relative(uri) {
                out.extend_from_slice(self.1);
                out.extend_from_slice(uri);
            } else {
                out.extend_from_slice(b"<");
                out.extend_from_slice(uri);
                out.extend_from_slice(b">");
            }
        }
        fn plain_prefix(&self) -> Option<&[u8]> {
            self.0.then_some(self.1)
        }
    }

    #[test]
    fn fast_path_agrees_with_the_general_path() {
        let tricky = "\u{feff}#EXTM3U\n\n\r\n  \n a.ts\nb.ts \r\nc.ts\r\n\
            segment_with_a_long_name_0001.ts?x=1&y=2\nsub/dir/seg.ts\nsub/./x.ts\n\
            sub/../x.ts\nhttp://h/x.ts\nx:y\n/abs.ts\n.hidden\n\rodd\nlongname/.x/abcdefgh\n\
            abcdefg/.h\nabcdefgh:\n#EXTINF:1,\nq.ts\nlast-no-newline.ts";
        let input = [tricky.as_bytes(), LL_HLS.as_bytes()].concat();
        let run = |fast: bool, prefix: &'static [u8], parts: &[&[u8]]| {
            let mut r = Rewriter::new(Prefixed(fast, prefix));
            let mut out = Vec::new();
            for p in parts {
                r.feed(p, &mut out).unwrap();
            }
            r.finish(&mut out).unwrap();
            (out, r.uris())
        };
        // With a prefix (short; as long as an edge's, several 16-byte moves), and with none
        // (relative URIs kept, the edge's usual case).
        const LONG: &[u8] = b"/api/hls/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/movie/";
        let long_want = format!(
            "{0}b.ts \r\n{0}c.ts\r\n",
            std::str::from_utf8(LONG).unwrap()
        );
        for (prefix, want) in [
            (&b"P/"[..], "P/b.ts \r\nP/c.ts\r\n"),
            (LONG, long_want.as_str()),
            (b"", "\nb.ts \r\nc.ts\r\n"),
        ] {
            let general = run(false, prefix, &[&input]);
            assert!(String::from_utf8_lossy(&general.0).contains(want));
            assert!(String::from_utf8_lossy(&general.0).contains("\n<sub/./x.ts>\n"));
            assert!(String::from_utf8_lossy(&general.0).contains("\n</abs.ts>\n"));
            for i in 0..=input.len() {
                assert_eq!(
                    run(true, prefix, &[&input[..i], &input[i..]]),
                    general,
                    "split at {i}"
                );
            }
        }
    }

    #[test]
    fn changed_says_whether_any_byte_differs() {
        let input = b"#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin\"\n#EXTINF:2,\na.ts\n";
        for (fast, prefix, want) in [
            (true, &b""[..], false),
            (false, b"", false),
            (true, b"P/", true),
            (false, b"P/", true),
        ] {
            let mut r = Rewriter::new(Prefixed(fast, prefix));
            let mut out = Vec::new();
            r.feed(input, &mut out).unwrap();
            r.finish(&mut out).unwrap();
            assert_eq!(r.changed(), want, "{fast} {prefix:?}");
            assert_eq!(r.changed(), out != input);
        }
        // A URI the map rewrites (not plain relative) is a change whatever the prefix.
        let mut r = Rewriter::new(Prefixed(true, b""));
        let mut out = Vec::new();
        r.feed(b"#EXTM3U\n/abs.ts\n", &mut out).unwrap();
        assert!(r.changed());
    }

    #[test]
    fn memory_is_one_line_not_the_playlist() {
        let mut r = Rewriter::new(Mark);
        let mut out = Vec::new();
        let line = b"#EXTINF:2.0,\nsegment_000000.ts\n";
        for _ in 0..100_000 {
            r.feed(line, &mut out).unwrap();
            out.clear();
        }
        assert!(r.partial.capacity() <= 64, "{}", r.partial.capacity());
        // a half line is all that is kept
        r.feed(b"seg", &mut out).unwrap();
        assert_eq!(r.partial, b"seg");
    }

    #[test]
    fn the_line_cap_does_not_depend_on_chunking() {
        let mut body = b"#EXTM3U\n#EXTINF:2,\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
        body.extend_from_slice(b".ts\n#EXT-X-ENDLIST\n");
        for split in [body.len(), 20, MAX_LINE / 2, body.len() - 5] {
            let mut rw = Rewriter::new(Prefixed(true, b"/p/"));
            let mut out = Vec::new();
            let (a, b) = body.split_at(split);
            let r = rw.feed(a, &mut out).and_then(|_| rw.feed(b, &mut out));
            assert_eq!(r, Err(RewriteError::LineTooLong), "split at {split}");
        }
        // a long first line too
        let mut rw = Rewriter::new(Prefixed(true, b"/p/"));
        let long = vec![b'#'; MAX_LINE + 2];
        let mut body = long.clone();
        body.push(b'\n');
        assert_eq!(
            rw.feed(&body, &mut Vec::new()),
            Err(RewriteError::LineTooLong)
        );
    }

    #[test]
    fn an_endless_line_is_an_error() {
        let mut r = Rewriter::new(Mark);
        let mut out = Vec::new();
        let chunk = vec![b'a'; 16 * 1024];
        let mut res = Ok(());
        for _ in 0..5 {
            res = r.feed(&chunk, &mut out);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(RewriteError::LineTooLong));
    }

    #[test]
    fn lone_bom_and_empty_body() {
        assert_eq!(rewrite_in(&[b""]), b"");
        assert_eq!(rewrite_in(&[BOM]), BOM);
        assert_eq!(rewrite_in(&[b"\n\n"]), b"\n\n");
        assert_eq!(rewrite_in(&[b"  \t \n"]), b"  \t \n");
        // a BOM only counts at the very start
        assert_eq!(
            rewrite_in(&[b"#EXTM3U\n\xEF\xBB\xBFa\n"]),
            b"#EXTM3U\n<\xEF\xBB\xBFa>\n"
        );
    }

    #[test]
    fn unterminated_quote_is_left_alone() {
        let out = rewrite_in(&[b"#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin\n"]);
        assert_eq!(out, b"#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin\n");
    }
}
