//! The playlist rewriter: however a playlist is cut into chunks, the output is the same
//! (and so is an error); the output is a line-for-line rewrite of the input (same number
//! of lines, every line either unchanged or the same line with some URIs replaced); the
//! real edge mapping (`EdgeUris`) never panics, is chunk-invariant too, and its fast path
//! (block scanner, prefixed copy) gives what the line-by-line path gives.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hlsgate::playlist::{EdgeUris, OriginSpace, Rewriter, UriMap};
use hlsgate::token::Keyring;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

/// Wraps every URI in two bytes inputs containing them are skipped for.
struct Mark;
const OPEN: u8 = 0x01;
const CLOSE: u8 = 0x02;
impl UriMap for Mark {
    fn map(&mut self, uri: &[u8], out: &mut Vec<u8>) {
        out.push(OPEN);
        out.extend_from_slice(uri);
        out.push(CLOSE);
    }
}

static KEYRING: LazyLock<Arc<Keyring>> = LazyLock::new(|| {
    Arc::new(
        Keyring::from_text("1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n")
            .unwrap(),
    )
});

/// `EdgeUris` without its plain prefix: every line goes the general, line-by-line way.
struct General(EdgeUris);
impl UriMap for General {
    fn map(&mut self, uri: &[u8], out: &mut Vec<u8>) {
        self.0.map(uri, out)
    }
}

fn run<M: UriMap>(mut rw: Rewriter<M>, input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let c = c.clamp(at, input.len());
        rw.feed(&input[at..c], &mut out)
            .map_err(|e| e.to_string())?;
        at = c;
    }
    rw.feed(&input[at..], &mut out).map_err(|e| e.to_string())?;
    rw.finish(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn edge(mode: u8) -> EdgeUris {
    let origin = Arc::new(OriginSpace {
        scheme: Some("http"),
        authority: "127.0.0.1:8000".into(),
        base: "/vod/movie/".into(),
    });
    let prefix = format!("/api/hls/{}/movie/", "A".repeat(87)).into_bytes();
    let playlist = if mode & 2 == 0 {
        "/vod/movie/v0/index.m3u8"
    } else {
        "/other/index.m3u8"
    };
    let uris = EdgeUris::new(origin, prefix, playlist, KEYRING.clone(), "movie");
    if mode & 1 == 0 {
        uris
    } else {
        uris.keep_plain_relative()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(mut cuts), Ok(mode)) = (Vec::<u16>::arbitrary(&mut u), u8::arbitrary(&mut u)) else {
        return;
    };
    let input = u.take_rest();
    let mut cuts: Vec<usize> = cuts.drain(..).map(usize::from).collect();
    cuts.sort_unstable();
    if mode & 4 != 0 {
        // The real mapping: chunking changes nothing, and nothing panics.
        let whole = run(Rewriter::new(edge(mode)), input, &[]);
        let split = run(Rewriter::new(edge(mode)), input, &cuts);
        assert_eq!(whole, split, "EdgeUris output depends on chunking");
        let general = run(Rewriter::new(General(edge(mode))), input, &cuts);
        assert_eq!(whole, general, "the fast path differs from the general path");
        return;
    }
    if input.contains(&OPEN) || input.contains(&CLOSE) {
        return;
    }
    let whole = run(Rewriter::new(Mark), input, &[]);
    let split = run(Rewriter::new(Mark), input, &cuts);
    assert_eq!(whole, split, "output depends on chunking");
    let Ok(out) = whole else { return };
    let lines_in: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let lines_out: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert_eq!(lines_in.len(), lines_out.len(), "lines added or lost");
    for (i, o) in lines_in.iter().zip(&lines_out) {
        let unmarked: Vec<u8> = o
            .iter()
            .copied()
            .filter(|&b| b != OPEN && b != CLOSE)
            .collect();
        assert_eq!(&unmarked[..], *i, "a line changed beyond its URIs");
    }
});
