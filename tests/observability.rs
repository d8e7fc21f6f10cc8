//! What operators look at: the Prometheus alert rules (`conf/prometheus/`) pass `promtool
//! check rules` and their unit tests (`promtool test rules`); the Grafana dashboard
//! (`conf/grafana/hlsgate.json`) is a dashboard model Grafana imports as it is (it
//! type-checks as Grafana's own `Dashboard` type), and every query in it parses as PromQL
//! (checked by promtool); every metric a rule or a panel names
//! is one a running hlsgate exports; per-stream series stay within `metrics.stream_labels`.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const UA: &str = "observability-test";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus) must be installed: scripts/test.sh does");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("conf/grafana/hlsgate.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard's panels, Grafana's variables replaced by what
/// Grafana would put there.
fn dashboard_exprs() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let concrete = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "3h")
                .replace("$instance", ".*");
            out.push((p["title"].as_str().unwrap().to_owned(), concrete));
        }
    }
    out
}

fn rules_text() -> String {
    std::fs::read_to_string(root().join("conf/prometheus/hlsgate.rules.yml")).unwrap()
}

/// The metric names (`hlsgate_*`, `process_*`) in `text`, histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let at_word =
            i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b':');
        if at_word && (text[i..].starts_with("hlsgate_") || text[i..].starts_with("process_")) {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(b.len(), |n| i + n);
            let name = &text[i..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
                .unwrap_or(name);
            names.insert(base.to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = root().join("conf/prometheus");
    let out = promtool(&["check", "rules", "hlsgate.rules.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "hlsgate.rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    // The alerts the issue names are there.
    let rules = rules_text();
    for alert in [
        "HlsgateOriginErrors",
        "HlsgateCacheHitRatioCollapse",
        "HlsgateDenialSpike",
        "HlsgateStoreDown",
        "HlsgateCacheNearFull",
        "HlsgateMemoryHigh",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
        let tests = std::fs::read_to_string(dir.join("hlsgate.rules.test.yml")).unwrap();
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }
}

#[test]
fn dashboard_is_a_grafana_model_and_every_query_parses() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert!(d["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        d["id"].is_null(),
        "an exported dashboard has id null (Grafana assigns one)"
    );
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    assert!(vars
        .iter()
        .any(|v| v["name"] == "instance" && v["type"] == "query"));
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut covered = String::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(g[k].as_u64().is_some(), "{title}: gridPos.{k}");
        }
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the grid"
        );
        let kind = p["type"].as_str().unwrap();
        assert!(
            ["row", "timeseries", "stat"].contains(&kind),
            "{title}: panel type {kind}"
        );
        if kind == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: datasource"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().unwrap().to_owned()),
                "{title}: refId"
            );
            let e = t["expr"].as_str().unwrap();
            assert!(
                e.contains("$instance"),
                "{title}: {e} ignores the instance picker"
            );
            covered.push_str(e);
        }
    }
    for metric in [
        "hlsgate_requests_total",
        "hlsgate_auth_denials_total",
        "hlsgate_cache_requests_total",
        "hlsgate_origin_response_seconds_bucket",
        "hlsgate_origin_errors_total",
        "hlsgate_playlist_rewrites_total",
        "hlsgate_active_sessions",
        "hlsgate_store_queries_total",
        "process_resident_memory_bytes",
    ] {
        assert!(covered.contains(metric), "no panel shows {metric}");
    }
    // Every query parses: promtool checks them as recording rules.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, e)) in dashboard_exprs().iter().enumerate() {
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    std::fs::write(dir.path().join("q.yml"), rules).unwrap();
    let out = promtool(&["check", "rules", "q.yml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The dashboard type-checks as Grafana's own `Dashboard` type (npm `@grafana/schema`,
/// generated from Grafana's schema) with `tsc --strict`, written as an object literal so
/// that a property Grafana does not know is an error too.
#[test]
fn dashboard_type_checks_against_grafanas_own_schema() {
    let browser = root().join("tests/browser");
    let tsc = browser.join("node_modules/.bin/tsc");
    assert!(
        tsc.exists() && browser.join("node_modules/@grafana/schema").exists(),
        "tests/browser's npm packages are missing: scripts/test.sh installs them (npm ci)"
    );
    let json = std::fs::read_to_string(root().join("conf/grafana/hlsgate.json")).unwrap();
    // Beside node_modules, so that the import resolves; removed afterwards.
    let file = browser.join(format!("dashboard-check-{}.ts", std::process::id()));
    std::fs::write(
        &file,
        format!("import type {{ Dashboard }} from '@grafana/schema';\nexport const d: Dashboard = {json};\n"),
    )
    .unwrap();
    let out = Command::new(&tsc)
        .args([
            "--noEmit",
            "--strict",
            "--skipLibCheck",
            "--moduleResolution",
            "node",
        ])
        .args(["--module", "commonjs", "--target", "es2020"])
        .arg(&file)
        .current_dir(&browser)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "tsc: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scrape a running `hlsgate serve` after traffic: the metric families it exports.
fn exported(stream_labels: usize) -> (String, Hlsgate, EdgePorts, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::with_streams(dir.path().join("origin"));
    let (config, ports) = write_config(
        dir.path(),
        "2s",
        &format!("streams:\n{}", origin.streams_yaml()),
    );
    add_config_keys(
        &config,
        "metrics",
        &format!("  stream_labels: {stream_labels}\n"),
    );
    let h = Hlsgate::start("serve", &config, ports.edge);
    // Every stream once, the first three by two viewers (UAs) each, `ts` by three.
    for (stream, viewers) in [
        ("ts", 3),
        ("fmp4", 2),
        ("aes", 2),
        ("single", 1),
        ("ladder", 1),
    ] {
        for v in 0..viewers {
            let ua = format!("{UA}-{v}");
            let url = h.token_url(&["--stream", stream, "--ua", &ua, "--ip", "127.0.0.1"]);
            let r = get(h.port, &path_of(&url), &[("User-Agent", &ua)]).unwrap();
            assert_eq!(r.status, 200, "{stream}");
        }
    }
    assert_eq!(
        get(h.port, "/api/hls/AAAA/ts/index.m3u8", &[])
            .unwrap()
            .status,
        401
    );
    let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
    (m, h, ports, dir)
}

#[test]
fn every_metric_a_rule_or_a_panel_names_is_exported() {
    let (scrape, h, ports, _dir) = exported(20);
    let families: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let mut named = metric_names(&rules_text());
    for (_, e) in dashboard_exprs() {
        named.extend(metric_names(&e));
    }
    assert!(named.len() >= 20, "{named:?}");
    let missing: Vec<&String> = named.iter().filter(|n| !families.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named by a rule or a panel but not exported: {missing:?}\nexported: {families:?}"
    );
    // The gauges the rules divide by have values.
    assert!(sample(&scrape, "hlsgate_cache_max_bytes") >= (1 << 20) as f64);
    assert!(sample(&scrape, "process_resident_memory_bytes") > (1 << 20) as f64);
    // A connection held open (a request header begun) is counted.
    let _open = std::net::TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    let counted = (0..40).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
        sample(&m, "hlsgate_edge_connections") >= 1.0
    });
    assert!(
        counted,
        "an open edge connection is not in hlsgate_edge_connections"
    );
}

/// The `stream` label values of `metric`'s series.
fn stream_labels(scrape: &str, metric: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{metric}{{stream=\"")))
        .filter_map(|l| l.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn per_stream_series_are_bounded_by_stream_labels() {
    let (scrape, h, ports, _dir) = exported(2);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    // Counters: the first two streams served keep their label; the other three are _other.
    let req = stream_labels(&scrape, "hlsgate_stream_requests_total");
    assert_eq!(req, set(&["ts", "fmp4", "_other"]), "{scrape}");
    assert_eq!(
        sample(&scrape, "hlsgate_stream_requests_total{stream=\"ts\"}"),
        3.0
    );
    assert_eq!(
        sample(&scrape, "hlsgate_stream_requests_total{stream=\"_other\"}"),
        4.0
    );
    assert_eq!(
        stream_labels(&scrape, "hlsgate_stream_sent_bytes_total"),
        req
    );
    assert!(sample(&scrape, "hlsgate_stream_sent_bytes_total{stream=\"ts\"}") > 100.0);
    // The viewer gauge: the top two by viewers (ts 3, then fmp4 and aes with 2: the name
    // breaks the tie), the rest summed.
    assert_eq!(
        stream_labels(&scrape, "hlsgate_stream_viewers"),
        set(&["ts", "aes", "_other"])
    );
    assert_eq!(
        sample(&scrape, "hlsgate_stream_viewers{stream=\"ts\"}"),
        3.0
    );
    assert_eq!(
        sample(&scrape, "hlsgate_stream_viewers{stream=\"_other\"}"),
        4.0
    );
    // Many more streams do not add series: every one of a hundred fake stream ids is
    // refused before it is counted, and the store-less streams beyond two stay _other.
    for i in 0..100 {
        let _ = get(h.port, &format!("/api/hls/AAAA/s{i}/index.m3u8"), &[]);
    }
    let again = get(ports.metrics, "/metrics", &[]).unwrap().text();
    assert_eq!(stream_labels(&again, "hlsgate_stream_requests_total"), req);
    assert!(
        again
            .lines()
            .filter(|l| l.starts_with("hlsgate_stream_"))
            .count()
            <= 9
    );
}

#[test]
fn stream_labels_zero_exports_no_per_stream_series() {
    let (scrape, _h, _ports, _dir) = exported(0);
    assert!(
        !scrape.lines().any(|l| l.starts_with("hlsgate_stream_")),
        "{scrape}"
    );
    assert!(sample(&scrape, "hlsgate_active_sessions") >= 9.0);
}
