//! Request paths → routes, with the path checks that keep `{path}` inside the stream's
//! origin base. Pure: no `Session`, no I/O.

use percent_encoding::percent_decode_str;

/// What an edge request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/api/hls/{token}/{stream}/{path}`
    Hls {
        token: &'a str,
        stream: &'a str,
        target: Target<'a>,
    },
    /// `/healthz`
    Health,
}

/// Which origin object.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A path below the stream's base folder, as sent (still percent-encoded), checked.
    InBase(&'a str),
    /// `~o/{sig}/{abs path}`: an exact origin path outside the base that a playlist named;
    /// `path` starts with `/`.
    Signed { sig: &'a str, path: &'a str },
}

/// Why a request path was refused.
#[derive(Debug, PartialEq, Eq, Clone, Copy, thiserror::Error)]
pub enum RouteError {
    #[error("not found")]
    NotFound,
    #[error("invalid path")]
    BadPath,
    #[error("missing token")]
    MissingToken,
}

impl RouteError {
    pub fn status(self) -> u16 {
        match self {
            RouteError::NotFound => 404,
            RouteError::BadPath => 400,
            RouteError::MissingToken => 401,
        }
    }
}

/// The prefix that marks a signed out-of-base path.
pub const SIGNED: &str = "~o/";

/// Parse the path part of a request URI (no query).
pub fn parse(path: &str) -> Result<Route<'_>, RouteError> {
    if path == "/healthz" {
        return Ok(Route::Health);
    }
    if path.starts_with("/hls/") {
        // The query-token and cookie modes of this route are not built yet: whatever
        // arrives here carries no token this edge accepts.
        return Err(RouteError::MissingToken);
    }
    let rest = path.strip_prefix("/api/hls/").ok_or(RouteError::NotFound)?;
    let (token, rest) = rest.split_once('/').ok_or(RouteError::MissingToken)?;
    if token.is_empty() {
        return Err(RouteError::MissingToken);
    }
    let (stream, rest) = rest.split_once('/').ok_or(RouteError::NotFound)?;
    if stream.is_empty() {
        return Err(RouteError::NotFound);
    }
    let target = match rest.strip_prefix(SIGNED) {
        Some(signed) => {
            let slash = signed.find('/').ok_or(RouteError::BadPath)?;
            let (sig, path) = signed.split_at(slash);
            check_path(&path[1..])?;
            Target::Signed { sig, path }
        }
        None => {
            check_path(rest)?;
            Target::InBase(rest)
        }
    };
    Ok(Route::Hls {
        token,
        stream,
        target,
    })
}

/// A relative object path must name a file strictly below its base: no empty, `.` or `..`
/// segment (raw or percent-encoded), no backslash, no encoded `/`, no NUL or control
/// character, no scheme (`http:`), and valid UTF-8 once decoded.
pub fn check_path(p: &str) -> Result<(), RouteError> {
    if p.is_empty() || p.len() > 2048 {
        return Err(RouteError::BadPath);
    }
    let bytes = p.as_bytes();
    // Encoded separators would be decoded into new segments by some origins.
    for w in bytes.windows(3) {
        if w[0] == b'%' {
            let enc = [w[1].to_ascii_lowercase(), w[2].to_ascii_lowercase()];
            if enc == *b"2f" || enc == *b"5c" || enc == *b"00" {
                return Err(RouteError::BadPath);
            }
        }
    }
    let decoded = percent_decode_str(p)
        .decode_utf8()
        .map_err(|_| RouteError::BadPath)?;
    for (i, seg) in decoded.split('/').enumerate() {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(RouteError::BadPath);
        }
        if seg.bytes().any(|b| b == b'\\' || b.is_ascii_control()) {
            return Err(RouteError::BadPath);
        }
        if i == 0 && seg.contains(':') {
            return Err(RouteError::BadPath); // an absolute URL, `c:`, ...
        }
    }
    Ok(())
}

/// What kind of object a path names, from its extension (for content types, caching and
/// metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Playlist,
    Segment,
    Key,
    Other,
}

impl Kind {
    pub fn of(path: &str) -> Kind {
        let name = path.rsplit('/').next().unwrap_or(path);
        let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
        match ext.to_ascii_lowercase().as_str() {
            "m3u8" | "m3u" => Kind::Playlist,
            "ts" | "m4s" | "mp4" | "m4a" | "m4v" | "aac" | "ac3" | "ec3" | "mp3" | "vtt"
            | "webvtt" | "cmfv" | "cmfa" => Kind::Segment,
            "key" | "bin" => Kind::Key,
            _ => Kind::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Playlist => "playlist",
            Kind::Segment => "segment",
            Kind::Key => "key",
            Kind::Other => "other",
        }
    }

    /// Content type for objects served from a file origin.
    pub fn content_type(path: &str) -> &'static str {
        let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
        match ext.to_ascii_lowercase().as_str() {
            "m3u8" | "m3u" => "application/vnd.apple.mpegurl",
            "ts" => "video/mp2t",
            "m4s" => "video/iso.segment",
            "mp4" | "m4v" | "cmfv" => "video/mp4",
            "m4a" | "cmfa" => "audio/mp4",
            "aac" => "audio/aac",
            "mp3" => "audio/mpeg",
            "vtt" | "webvtt" => "text/vtt",
            "json" => "application/json",
            _ => "application/octet-stream",
        }
    }
}

/// Whether a response content type is an HLS playlist.
pub fn is_playlist_type(ct: &[u8]) -> bool {
    let ct = ct.split(|&b| b == b';').next().unwrap_or(ct).trim_ascii();
    [
        &b"application/vnd.apple.mpegurl"[..],
        b"application/x-mpegurl",
        b"audio/mpegurl",
        b"audio/x-mpegurl",
    ]
    .iter()
    .any(|t| ct.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            parse("/api/hls/TOK/demo/v0/index.m3u8"),
            Ok(Route::Hls {
                token: "TOK",
                stream: "demo",
                target: Target::InBase("v0/index.m3u8")
            })
        );
        assert_eq!(
            parse("/api/hls/TOK/demo/~o/SIG/keys/k.bin"),
            Ok(Route::Hls {
                token: "TOK",
                stream: "demo",
                target: Target::Signed {
                    sig: "SIG",
                    path: "/keys/k.bin"
                }
            })
        );
        assert_eq!(parse("/healthz"), Ok(Route::Health));
        for nf in ["/", "/api/hls/TOK/demo", "/api/hls/TOK//x", "/other"] {
            assert_eq!(parse(nf), Err(RouteError::NotFound), "{nf}");
        }
        for missing in [
            "/api/hls/",
            "/api/hls/TOK",
            "/api/hls//demo/x",
            "/hls/demo/i.m3u8",
        ] {
            assert_eq!(parse(missing), Err(RouteError::MissingToken), "{missing}");
        }
    }

    #[test]
    fn traversal_and_friends_are_400() {
        for bad in [
            "..",
            "../x.ts",
            "a/../../x.ts",
            "a/..",
            "%2e%2e/x.ts",
            "%2E%2E/x.ts",
            ".%2e/x.ts",
            "a/%2e%2e/%2e%2e/x",
            "a%2f..%2fx",
            "a%2F..",
            "a\\..\\x",
            "a%5c..%5cx",
            "./x.ts",
            "a//b.ts",
            "http://evil/x.ts",
            "http:%2f%2fevil",
            "c:/x",
            "x%00.ts",
            "x\u{1}.ts",
            "%ff.ts",
            "",
            "a/",
        ] {
            assert_eq!(check_path(bad), Err(RouteError::BadPath), "{bad:?}");
            let p = format!("/api/hls/T/s/{bad}");
            if !bad.is_empty() {
                assert_eq!(parse(&p), Err(RouteError::BadPath), "{p}");
            }
        }
        assert_eq!(
            parse("/api/hls/T/s/~o/SIG/../etc/passwd"),
            Err(RouteError::BadPath)
        );
        for good in [
            "x.ts",
            "v0/seg%20one.ts",
            "a.b/..c.ts",
            "seg...ts",
            "%7Euser/x.ts",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::of("v0/index.m3u8"), Kind::Playlist);
        assert_eq!(Kind::of("seg.TS"), Kind::Segment);
        assert_eq!(Kind::of("init.mp4"), Kind::Segment);
        assert_eq!(Kind::of("enc.key"), Kind::Key);
        assert_eq!(Kind::of("readme"), Kind::Other);
        assert!(is_playlist_type(
            b"application/vnd.apple.mpegurl; charset=utf-8"
        ));
        assert!(is_playlist_type(b"Application/X-MpegURL"));
        assert!(!is_playlist_type(b"video/mp2t"));
    }
}
