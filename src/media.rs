//! What an origin object is: its kind (from the path), its content type, and which
//! response types the edge passes at all (media only: an origin must not be able to serve
//! active content from the edge's address).

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

    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Playlist, Kind::Segment, Kind::Key, Kind::Other];

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
