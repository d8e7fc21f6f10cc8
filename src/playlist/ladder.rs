//! A master playlist's ladder cut at a height (a JWT's `aws:maximum-resolution`): every
//! `#EXT-X-STREAM-INF` whose `RESOLUTION` is taller than the cap is removed with its URI
//! line, and every `#EXT-X-I-FRAME-STREAM-INF` likewise. Streaming like the rewriter in
//! front of which it runs: complete lines out, the unfinished one kept.
//!
//! Variants without a `RESOLUTION` (audio-only) stay. If every variant is taller than the
//! cap, none is left: the viewer may not have any of them.

use super::{RewriteError, MAX_LINE};
use memchr::memchr;

pub struct Ladder {
    max_height: u32,
    partial: Vec<u8>,
    /// A removed `#EXT-X-STREAM-INF`'s URI line is still to come.
    skip_uri: bool,
    removed: u32,
}

impl Ladder {
    pub fn new(max_height: u32) -> Ladder {
        Ladder {
            max_height,
            partial: Vec::new(),
            skip_uri: false,
            removed: 0,
        }
    }

    /// Variants removed so far.
    pub fn removed(&self) -> u32 {
        self.removed
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mut rest = chunk;
        while let Some(nl) = memchr(b'\n', rest) {
            if self.partial.is_empty() {
                self.line(&rest[..=nl], out);
            } else {
                if self.partial.len() + nl > MAX_LINE {
                    return Err(RewriteError::LineTooLong);
                }
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..=nl]);
                self.line(&line, out);
                line.clear();
                self.partial = line;
            }
            rest = &rest[nl + 1..];
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            return Err(RewriteError::LineTooLong);
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let line = std::mem::take(&mut self.partial);
        if !line.is_empty() {
            self.line(&line, out);
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let body = line.trim_ascii();
        if body.is_empty() {
            out.extend_from_slice(line);
            return;
        }
        if body[0] != b'#' {
            if !std::mem::take(&mut self.skip_uri) {
                out.extend_from_slice(line);
            }
            return;
        }
        let variant = body.starts_with(b"#EXT-X-STREAM-INF:");
        let iframe = body.starts_with(b"#EXT-X-I-FRAME-STREAM-INF:");
        if (variant || iframe) && height(body).is_some_and(|h| h > self.max_height) {
            self.removed += 1;
            self.skip_uri = variant;
            return;
        }
        out.extend_from_slice(line);
    }
}

/// The height of a tag's `RESOLUTION=WxH` attribute (quoted values skipped).
fn height(tag: &[u8]) -> Option<u32> {
    let colon = memchr(b':', tag)?;
    let mut i = colon + 1;
    let mut attr = i;
    while i < tag.len() {
        match tag[i] {
            b'"' => i += 1 + memchr(b'"', &tag[i + 1..])?,
            b',' => attr = i + 1,
            b'=' if tag[attr..i].trim_ascii() == b"RESOLUTION" => {
                let v = &tag[i + 1..];
                let v = &v[..memchr(b',', v).unwrap_or(v.len())];
                let x = memchr(b'x', v)?;
                return std::str::from_utf8(&v[x + 1..]).ok()?.trim().parse().ok();
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:6\n\
#EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1920x1080,CODECS=\"avc1.640028,mp4a.40.2\"\nv1080/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=2800000,RESOLUTION=1280x720\r\nv720/index.m3u8\r\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,NAME=\"RESOLUTION=9x9999\",RESOLUTION=640x360\n\n# note\nv360/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS=\"mp4a.40.2\"\naudio/index.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=200000,RESOLUTION=1920x1080,URI=\"if1080.m3u8\"\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,RESOLUTION=640x360,URI=\"if360.m3u8\"\n";

    fn cut(max: u32, chunk: usize) -> (String, u32) {
        let mut l = Ladder::new(max);
        let mut out = Vec::new();
        for c in MASTER.as_bytes().chunks(chunk) {
            l.feed(c, &mut out).unwrap();
        }
        l.finish(&mut out);
        (String::from_utf8(out).unwrap(), l.removed())
    }

    #[test]
    fn taller_variants_go_with_their_uri_lines_however_the_body_is_cut() {
        for chunk in [1, 7, 4096] {
            let (sd, removed) = cut(480, chunk);
            assert_eq!(removed, 3);
            assert!(!sd.contains("v1080") && !sd.contains("v720") && !sd.contains("if1080"));
            assert!(sd.contains("v360/index.m3u8") && sd.contains("audio/index.m3u8"));
            assert!(sd.contains("if360.m3u8") && sd.contains("# note"));
            let (hd, removed) = cut(720, chunk);
            assert_eq!(removed, 2);
            assert!(hd.contains("v720/index.m3u8\r\n") && !hd.contains("v1080"));
            assert_eq!(cut(1080, chunk), (MASTER.to_owned(), 0));
        }
        assert_eq!(height(b"#EXT-X-STREAM-INF:RESOLUTION=640x360"), Some(360));
        assert_eq!(height(b"#EXT-X-STREAM-INF:NAME=\"RESOLUTION=1x2\""), None);
    }
}
