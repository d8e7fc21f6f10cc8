//! Viewer caps and token sharing, run for real: `hlsgate serve` in front of a loopback
//! origin with ffmpeg-made HLS, tokens from `hlsgate token`.

mod common;

use common::*;
use std::time::Duration;

fn status(port: u16, path: &str, headers: &[(&str, &str)]) -> u16 {
    get(port, path, headers).unwrap().status
}

/// `hlsgate serve` with one stream `id` on the `ts` test stream (`stream_opts` added to
/// its entry) and `edge_opts` under `edge:`. The folder and origin live as long as it.
fn serve(
    id: &str,
    stream_opts: &str,
    edge_opts: &str,
) -> (Hlsgate, EdgePorts, tempfile::TempDir, Origin) {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::with_streams(dir.path().join("origin"));
    let streams = format!(
        "streams:\n  {id}: {{ url: \"http://127.0.0.1:{}/ts/index.m3u8\"{stream_opts} }}\n",
        origin.port
    );
    let (config, ports) = write_config(dir.path(), "2s", &streams);
    add_config_keys(&config, "edge", edge_opts);
    let h = Hlsgate::start("serve", &config, ports.edge);
    (h, ports, dir, origin)
}

#[test]
fn a_stream_admits_at_most_max_viewers_sessions() {
    let (serve, ports, _dir, _origin) = serve("capped", ", max_viewers: 2", "");
    let e = ports.edge;
    let paths: Vec<String> = (0..3)
        .map(|_| path_of(&serve.token_url(&["--stream", "capped"])))
        .collect();
    assert_eq!(status(e, &paths[0], &[]), 200);
    assert_eq!(status(e, &paths[1], &[]), 200);
    // The edge reports its viewers each second and reads the count through
    // `store.cache_ttl` (2 s): past that, a third session is refused.
    std::thread::sleep(Duration::from_millis(3500));
    let r = get(e, &paths[2], &[]).unwrap();
    assert_eq!(
        (r.status, r.text()),
        (403, r#"{"error":"too many viewers of this stream"}"#.into())
    );
    // the viewers already watching keep watching
    assert_eq!(status(e, &paths[0], &[]), 200);
    assert_eq!(status(e, &paths[1], &[]), 200);
}

#[test]
fn a_token_used_from_too_many_addresses_is_counted_and_refused() {
    let (serve, ports, _dir, _origin) = serve(
        "s",
        "",
        "  trusted_proxies: [\"127.0.0.1/32\"]\n  token_max_ips: 2\n  token_block_shared: true\n",
    );
    let e = ports.edge;
    // an unbound token (no --ip): it works from anywhere, so sharing it is possible
    let path = path_of(&serve.token_url(&["--stream", "s"]));
    let from = |ip: &str| status(e, &path, &[("X-Forwarded-For", ip)]);
    assert_eq!(from("198.51.100.1"), 200);
    assert_eq!(from("198.51.100.2"), 200);
    assert_eq!(from("198.51.100.1"), 200);
    let r = get(e, &path, &[("X-Forwarded-For", "198.51.100.3")]).unwrap();
    assert_eq!(
        (r.status, r.text()),
        (
            403,
            r#"{"error":"token used from too many addresses"}"#.into()
        )
    );
    assert_eq!(
        from("198.51.100.2"),
        200,
        "the first addresses keep working"
    );
    let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
    assert_eq!(sample(&m, "hlsgate_token_sharing_total"), 1.0);
    assert!(sample(&m, "hlsgate_auth_denials_total{reason=\"token_shared\"}") >= 1.0);
}
