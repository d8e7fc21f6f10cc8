//! The edge's URL grammar, built and parsed here only: the playback path
//! `/api/hls/{token}/{stream}/{path}` (with `~o/{sig}/{abs path}` for exact origin paths
//! outside the stream's folder that a playlist named, and `~r/{sig}/{path}` for the
//! renditions a capped grant may have), the path checks that keep `{path}`
//! inside the stream's origin base, and the query rules (a playlist-named query carries a
//! signature; a viewer's own query is dropped except LL-HLS delivery directives). Pure: no
//! `Session`, no I/O.

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
    /// `/hls/{stream}/{path}?token=...`: a foreign token in the query (JWT, IVS style).
    Query { stream: &'a str, target: Target<'a> },
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
    /// `~r/{sig}/{path below the base}`: an object of a rendition that a grant with a
    /// resolution cap may have (see `Keyring::sign_rendition`); `rel` is checked like
    /// `InBase`.
    Rendition { sig: &'a str, rel: &'a str },
}

/// Why a request path was refused.
#[derive(Debug, PartialEq, Eq, Clone, Copy, thiserror::Error)]
#[error("{}", self.message())]
pub enum RouteError {
    NotFound,
    BadPath,
    MissingToken,
    BadQuery,
}

impl RouteError {
    pub fn status(self) -> u16 {
        match self {
            RouteError::NotFound => 404,
            RouteError::BadPath | RouteError::BadQuery => 400,
            RouteError::MissingToken => 401,
        }
    }

    /// What the viewer is told.
    pub fn message(self) -> &'static str {
        match self {
            RouteError::NotFound => "not found",
            RouteError::BadPath => "invalid path",
            RouteError::MissingToken => "missing token",
            RouteError::BadQuery => "invalid query",
        }
    }
}

/// The prefix that marks a signed out-of-base path.
pub const SIGNED: &str = "~o/";

/// The prefix that marks a path of a rendition a capped grant may have.
pub const RENDITION: &str = "~r/";

/// The query parameter that carries the signature of a query a playlist named.
pub const QUERY_SIG: &str = "hlsq";

/// `/api/hls/{token}/{stream}/`: what every edge URI of a stream starts with.
pub fn prefix(token: &str, stream: &str) -> String {
    format!("/api/hls/{token}/{stream}/")
}

/// A whole playback URL: `{base}/api/hls/{token}/{stream}/{path}`; `base` has no trailing `/`.
pub fn url(base: &str, token: &str, stream: &str, path: &str) -> String {
    format!("{base}{}{path}", prefix(token, stream))
}

/// `/api/hls/{token}/...` with the token replaced, for logs.
pub fn redact(path: &str) -> String {
    match path.strip_prefix("/api/hls/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, after)) => format!("/api/hls/<token>/{after}"),
            None => "/api/hls/<token>".into(),
        },
        None => path.to_owned(),
    }
}

/// A request's query, sorted into what it may carry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query<'a> {
    /// Parameters that are neither delivery directives nor the signature, in order: the
    /// query a playlist named, if `sig` proves it; else the viewer's own, dropped.
    pub named: Vec<&'a str>,
    /// LL-HLS delivery directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`), validated.
    pub directives: Vec<&'a str>,
    /// The value of `hlsq`.
    pub sig: Option<&'a str>,
    /// The value of `token` (query-token modes): the edge's, never the origin's.
    pub token: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Sort `q` (without the `?`). A malformed delivery directive is an error (400): an
    /// LL-HLS origin would otherwise block on it or be asked for nonsense.
    pub fn parse(q: &'a str) -> Result<Query<'a>, RouteError> {
        let mut out = Query::default();
        if q.len() > 2048 {
            return Err(RouteError::BadQuery);
        }
        for p in q.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            if !is_edge_param(name) {
                // Other `_HLS_` names are not directives: named, like anything else.
                out.named.push(p);
                continue;
            }
            match name {
                "_HLS_msn" | "_HLS_part" => {
                    if value.is_empty()
                        || value.len() > 10
                        || !value.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(RouteError::BadQuery);
                    }
                    out.directives.push(p);
                }
                "_HLS_skip" => {
                    if value != "YES" && value != "v2" {
                        return Err(RouteError::BadQuery);
                    }
                    out.directives.push(p);
                }
                // the signature or the token, each at most once
                _ => {
                    let slot = if name == QUERY_SIG {
                        &mut out.sig
                    } else {
                        &mut out.token
                    };
                    if slot.replace(value).is_some() {
                        return Err(RouteError::BadQuery);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The named part as it was signed: its parameters joined by `&`.
    pub fn named_text(&self) -> String {
        self.named.join("&")
    }
}

/// The parameters the edge itself reads (LL-HLS delivery directives, the query signature,
/// a query token); every other parameter is "named" (a playlist's, or a viewer's own).
fn is_edge_param(name: &str) -> bool {
    matches!(
        name,
        "_HLS_msn" | "_HLS_part" | "_HLS_skip" | "token" | QUERY_SIG
    )
}

/// The named part of a query found in a playlist URI (without `?`), joined by `&`: what
/// [`Query::named_text`] gives back when the viewer presents it.
pub fn named_query(q: &str) -> String {
    let named: Vec<&str> = q
        .split('&')
        .filter(|p| !p.is_empty() && !is_edge_param(p.split_once('=').map_or(*p, |(n, _)| n)))
        .collect();
    named.join("&")
}

/// Parse the path part of a request URI (no query).
pub fn parse(path: &str) -> Result<Route<'_>, RouteError> {
    if path == "/healthz" {
        return Ok(Route::Health);
    }
    if let Some(rest) = path.strip_prefix("/hls/") {
        let (stream, rel) = rest.split_once('/').ok_or(RouteError::NotFound)?;
        if stream.is_empty() {
            return Err(RouteError::NotFound);
        }
        check_path(rel)?;
        return Ok(Route::Query {
            stream,
            target: Target::InBase(rel),
        });
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
    let target = if let Some(signed) = rest.strip_prefix(SIGNED) {
        let slash = signed.find('/').ok_or(RouteError::BadPath)?;
        let (sig, path) = signed.split_at(slash);
        check_path(&path[1..])?;
        Target::Signed { sig, path }
    } else if let Some(marked) = rest.strip_prefix(RENDITION) {
        let (sig, rel) = marked.split_once('/').ok_or(RouteError::BadPath)?;
        check_path(rel)?;
        Target::Rendition { sig, rel }
    } else {
        check_path(rest)?;
        Target::InBase(rest)
    };
    Ok(Route::Hls {
        token,
        stream,
        target,
    })
}

/// A relative object path must name a file strictly below its base: no empty, `.` or `..`
/// segment (raw, percent-encoded, double-encoded, or with a `;parameter` as servlet
/// containers read `..;/`), no backslash, no encoded `/`, no NUL or control character, no
/// scheme (`http:`), and valid UTF-8 once decoded.
pub fn check_path(p: &str) -> Result<(), RouteError> {
    if p.is_empty() || p.len() > 2048 {
        return Err(RouteError::BadPath);
    }
    // An origin may decode what it receives again (and again): every decoding of the path
    // must be a path below the base. Each round removes at least one `%`, so this ends.
    let mut text = std::borrow::Cow::Borrowed(p);
    for _ in 0..4 {
        check_segments(&text)?;
        let decoded = percent_decode_str(&text)
            .decode_utf8()
            .map_err(|_| RouteError::BadPath)?;
        if decoded == text {
            return Ok(());
        }
        text = std::borrow::Cow::Owned(decoded.into_owned());
    }
    Err(RouteError::BadPath) // encoded four times over: nobody's real segment name
}

/// One decoding level of [`check_path`]: the raw separators and segment names.
fn check_segments(p: &str) -> Result<(), RouteError> {
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
    for (i, seg) in p.split('/').enumerate() {
        // `..;x` is `..` to servlet containers (path parameters).
        let name = seg.split(';').next().unwrap_or(seg);
        let dotted = name.trim_matches(|c| c == '.').is_empty()
            || name.eq_ignore_ascii_case("%2e")
            || name.eq_ignore_ascii_case("%2e%2e")
            || name.eq_ignore_ascii_case(".%2e")
            || name.eq_ignore_ascii_case("%2e.");
        if seg.is_empty() || dotted {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendition_paths_are_parsed_and_checked() {
        assert_eq!(
            parse("/api/hls/TOK/demo/~r/SIG/v1/a.ts"),
            Ok(Route::Hls {
                token: "TOK",
                stream: "demo",
                target: Target::Rendition {
                    sig: "SIG",
                    rel: "v1/a.ts"
                }
            })
        );
        assert_eq!(
            parse("/api/hls/TOK/demo/~r/SIG/../../etc/passwd"),
            Err(RouteError::BadPath)
        );
        assert_eq!(parse("/api/hls/TOK/demo/~r/SIG"), Err(RouteError::BadPath));
    }

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
        assert_eq!(
            parse("/hls/demo/v0/i.m3u8"),
            Ok(Route::Query {
                stream: "demo",
                target: Target::InBase("v0/i.m3u8")
            })
        );
        assert_eq!(parse("/hls/demo/../x"), Err(RouteError::BadPath));
        assert_eq!(parse("/hls/demo"), Err(RouteError::NotFound));
        for nf in ["/", "/api/hls/TOK/demo", "/api/hls/TOK//x", "/other"] {
            assert_eq!(parse(nf), Err(RouteError::NotFound), "{nf}");
        }
        for missing in ["/api/hls/", "/api/hls/TOK", "/api/hls//demo/x"] {
            assert_eq!(parse(missing), Err(RouteError::MissingToken), "{missing}");
        }
    }

    #[test]
    fn queries_sort_into_named_directives_and_signature() {
        let q =
            Query::parse("a=1&_HLS_msn=12&b&hlsq=SIG&_HLS_part=3&_HLS_skip=YES&_HLS_x=1").unwrap();
        assert_eq!(q.named, vec!["a=1", "b", "_HLS_x=1"]);
        assert_eq!(
            q.directives,
            vec!["_HLS_msn=12", "_HLS_part=3", "_HLS_skip=YES"]
        );
        assert_eq!(q.sig, Some("SIG"));
        assert_eq!(named_query("a=1&_HLS_msn=12&b&_HLS_x=1"), "a=1&b&_HLS_x=1");
        for bad in [
            "_HLS_msn=x",
            "_HLS_msn=",
            "_HLS_msn=12345678901",
            "_HLS_part=-1",
            "_HLS_skip=yes",
            "hlsq=a&hlsq=b",
        ] {
            assert_eq!(Query::parse(bad), Err(RouteError::BadQuery), "{bad}");
        }
        assert_eq!(Query::parse(&"a".repeat(3000)), Err(RouteError::BadQuery));
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
            "..;/x.ts",
            "a/..;/..;/x.ts",
            "a/..;jsessionid=1/x.ts",
            "%252e%252e/x.ts",
            "a/%252e%252e/%252e%252e/x",
            "%25252e%25252e/x",
            "a%252fb",
            "...",
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
            "seg;v=2.ts",
            "100%25.ts",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
    }
}
