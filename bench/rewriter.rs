//! Rewriter throughput on a 5,000-segment VOD playlist, fed in 64 KiB chunks as it arrives
//! from an origin. `cargo bench --bench rewriter`
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hlsgate::playlist::{EdgeUris, OriginSpace, Rewriter};
use hlsgate::token::Keyring;
use std::sync::Arc;

/// The same shape ffmpeg's HLS muxer writes for a VOD.
pub fn vod_playlist(segments: usize) -> Vec<u8> {
    let mut p = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for i in 0..segments {
        p.push_str(&format!("#EXTINF:2.000000,\nindex{i}.ts\n"));
    }
    p.push_str("#EXT-X-ENDLIST\n");
    p.into_bytes()
}

/// One whole rewrite of `input` in 64 KiB chunks into `out` (cleared first), as the edge
/// does it: a fresh `EdgeUris`, relative URIs kept or every URI prefixed.
fn rewrite(
    input: &[u8],
    out: &mut Vec<u8>,
    origin: &Arc<OriginSpace>,
    prefix: &[u8],
    keyring: &Arc<Keyring>,
    keep: bool,
) -> usize {
    let uris = EdgeUris::new(
        origin.clone(),
        prefix.to_vec(),
        "/vod/movie/index.m3u8",
        keyring.clone(),
        "movie",
    );
    let mut rw = Rewriter::new(if keep {
        uris.keep_plain_relative()
    } else {
        uris
    });
    out.clear();
    for chunk in input.chunks(64 * 1024) {
        rw.feed(chunk, out).unwrap();
    }
    rw.finish(out).unwrap();
    out.len()
}

fn bench(c: &mut Criterion) {
    let keyring = Arc::new(
        Keyring::from_text("1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n")
            .unwrap(),
    );
    let origin = Arc::new(OriginSpace {
        scheme: Some("http"),
        authority: "127.0.0.1:8000".into(),
        base: "/vod/movie/".into(),
    });
    // A real token's length (87 characters).
    let prefix = format!("/api/hls/{}/movie/", "A".repeat(87)).into_bytes();
    let input = vod_playlist(5000);
    let mut g = c.benchmark_group("rewriter");
    g.throughput(Throughput::Bytes(input.len() as u64));
    // `keep`: the usual case, the viewer's token not renewed, so relative URIs stay as
    // they are (they resolve against the playlist's own URL). Otherwise every URI gets the
    // full `/api/hls/{token}/{stream}/` prefix: the worst case, after a renewal.
    for (name, keep) in [
        ("vod_5000_segments_64KiB_chunks", false),
        ("vod_5000_segments_64KiB_chunks_relative_kept", true),
    ] {
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(input.len() * 5);
            b.iter(|| {
                criterion::black_box(rewrite(&input, &mut out, &origin, &prefix, &keyring, keep))
            })
        });
    }
    // The ceiling of the prefixed case on this machine: writing its 655,003 output bytes
    // at all (one memcpy into a reused buffer), per input byte like the benches above.
    let mut output_len = Vec::new();
    rewrite(&input, &mut output_len, &origin, &prefix, &keyring, false);
    g.bench_function("reference_memcpy_of_the_prefixed_output", |b| {
        let mut out = Vec::with_capacity(output_len.len());
        b.iter(|| {
            out.clear();
            out.extend_from_slice(criterion::black_box(&output_len));
            criterion::black_box(out.len())
        })
    });
    g.finish();

    // How the cost grows with the playlist (bench/scale.sh divides by the entries): the
    // same shape at 50, 5,000 and 50,000 segments, whole, in 64 KiB chunks.
    let mut g = c.benchmark_group("rewriter_entries");
    for n in [50usize, 5_000, 50_000] {
        let input = vod_playlist(n);
        g.throughput(Throughput::Elements(n as u64));
        for (mode, keep) in [("prefixed", false), ("kept", true)] {
            g.bench_function(format!("{mode}_{n}"), |b| {
                let mut out = Vec::with_capacity(input.len() * 5);
                b.iter(|| {
                    criterion::black_box(rewrite(
                        &input, &mut out, &origin, &prefix, &keyring, keep,
                    ))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
