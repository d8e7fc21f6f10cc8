#!/usr/bin/env python3
"""Writes hlsgate.json, the Grafana dashboard (schemaVersion 39), beside this file:
`python3 conf/grafana/make_dashboard.py`. Edit here, run, commit both."""
import json
import os
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'
panels = []
y = 0
pid = 0
def row(title):
    global y, pid
    pid += 1
    panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
    y += 1
def panel(kind, title, targets, x, w, h=8, unit=None, desc=None, extra=None):
    global pid
    pid += 1
    p = {"id": pid, "type": kind, "title": title, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": x, "y": y},
         "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": e, "legendFormat": l,
                      "range": True, "instant": False}
                     for i, (e, l) in enumerate(targets)],
         "fieldConfig": {"defaults": {"unit": unit or "short"}, "overrides": []},
         "options": {}}
    if desc:
        p["description"] = desc
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto", "justifyMode": "auto",
                        "orientation": "auto"}
    if extra:
        p.update(extra)
    panels.append(p)
def nexty(h=8):
    global y
    y += h

R = "$__rate_interval"
row("Overview")
panel("stat", "Requests / s", [(f'sum(rate(hlsgate_requests_total{{{I}}}[{R}]))', "requests/s")], 0, 4, 4, "reqps")
panel("stat", "Refused / s", [(f'sum(rate(hlsgate_auth_denials_total{{{I}}}[{R}]))', "refused/s")], 4, 4, 4, "reqps")
panel("stat", "Cache hit ratio", [(f'sum(rate(hlsgate_cache_requests_total{{{I},result=~"hit|stale|updating"}}[{R}])) / sum(rate(hlsgate_cache_requests_total{{{I}}}[{R}]))', "hit ratio")], 8, 4, 4, "percentunit")
panel("stat", "Viewers (last minute)", [(f'sum(hlsgate_active_sessions{{{I}}})', "viewers")], 12, 4, 4)
panel("stat", "Edge connections", [(f'sum(hlsgate_edge_connections{{{I}}})', "connections")], 16, 4, 4)
panel("stat", "Resident memory", [(f'max(process_resident_memory_bytes{{{I}}})', "RSS")], 20, 4, 4, "bytes")
nexty(4)
row("Requests")
panel("timeseries", "Requests by kind and status", [(f'sum by (kind, status) (rate(hlsgate_requests_total{{{I}}}[{R}]))', "{{kind}} {{status}}")], 0, 12, 8, "reqps")
panel("timeseries", "Refusals by reason", [(f'sum by (reason) (rate(hlsgate_auth_denials_total{{{I}}}[{R}]))', "{{reason}}")], 12, 12, 8, "reqps",
      desc="Every refusal the edge makes, by the reason in its JSON error: malformed/forged/expired tokens, wrong viewer or stream, route, limits, store_unavailable.")
nexty()
panel("timeseries", "Refused for where or how many: country, network, referer, screens", [(f'sum by (reason) (rate(hlsgate_auth_denials_total{{{I},reason=~"country|network|referer|screens"}}[{R}]))', "{{reason}}")], 0, 24, 6, "reqps",
      desc="Access rules (a stream's, or a token's or cookie's own: country from geoip.database, network), a stream's allowed Referer pages, and screens per account (admin.max_screens_per_user; with screens_full: end_oldest, the ended sessions' next requests).")
nexty(6)
row("Segment cache")
panel("timeseries", "Cache lookups by result", [(f'sum by (result) (rate(hlsgate_cache_requests_total{{{I}}}[{R}]))', "{{result}}")], 0, 8, 8, "reqps",
      desc="stale: answered from a stale copy because the origin failed (cache.stale_if_error); failed: the origin's remembered failure (cache.error_ttl) answered again; updating: a stale playlist answered while one background request refreshes it.")
panel("timeseries", "Hit ratio", [(f'sum(rate(hlsgate_cache_requests_total{{{I},result=~"hit|stale|updating"}}[{R}])) / sum(rate(hlsgate_cache_requests_total{{{I}}}[{R}]))', "hit ratio")], 8, 8, 8, "percentunit")
panel("timeseries", "Cache size", [(f'sum by (instance) (hlsgate_cache_held_bytes{{{I}}})', "held {{instance}}"),
                                    (f'sum by (instance) (hlsgate_cache_max_bytes{{{I}}})', "max_bytes {{instance}}"),
                                    (f'sum by (instance) (rate(hlsgate_cache_served_bytes_total{{{I}}}[{R}]))', "served/s {{instance}}")], 16, 8, 8, "bytes")
nexty()
row("Origins")
panel("timeseries", "Origin fetches and errors", [(f'sum by (kind) (rate(hlsgate_origin_fetches_total{{{I}}}[{R}]))', "fetches {{kind}}"),
                                                 (f'sum by (kind) (rate(hlsgate_origin_errors_total{{{I}}}[{R}]))', "errors {{kind}}")], 0, 12, 8, "reqps")
panel("timeseries", "Origin response time (to header)", [
    (f'histogram_quantile(0.5, sum by (le) (rate(hlsgate_origin_response_seconds_bucket{{{I}}}[{R}])))', "p50"),
    (f'histogram_quantile(0.9, sum by (le) (rate(hlsgate_origin_response_seconds_bucket{{{I}}}[{R}])))', "p90"),
    (f'histogram_quantile(0.99, sum by (le) (rate(hlsgate_origin_response_seconds_bucket{{{I}}}[{R}])))', "p99")], 12, 12, 8, "s")
nexty()
row("Playlists and viewers")
panel("timeseries", "Playlist rewrites", [(f'sum(rate(hlsgate_playlist_rewrites_total{{{I}}}[{R}]))', "rewrites/s")], 0, 6, 8, "ops")
panel("timeseries", "Rewrite time", [
    (f'histogram_quantile(0.99, sum by (le) (rate(hlsgate_playlist_rewrite_seconds_bucket{{{I}}}[{R}])))', "p99"),
    (f'sum(rate(hlsgate_playlist_rewrite_seconds_sum{{{I}}}[{R}])) / sum(rate(hlsgate_playlist_rewrite_seconds_count{{{I}}}[{R}]))', "mean")], 6, 6, 8, "s")
panel("timeseries", "Viewers by stream (top 10)", [(f'topk(10, sum by (stream) (hlsgate_stream_viewers{{{I}}}))', "{{stream}}")], 12, 6, 8, "short",
      desc="Sessions seen in the last minute by stream; streams past metrics.stream_labels are summed as _other.")
panel("timeseries", "Egress by stream (top 10)", [(f'topk(10, sum by (stream) (rate(hlsgate_stream_sent_bytes_total{{{I}}}[{R}])))', "{{stream}}")], 18, 6, 8, "Bps")
nexty()
row("Store, publishing, operation")
panel("stat", "Store up", [(f'min(hlsgate_store_up{{{I}}})', "store up")], 0, 6, 4, "short",
      desc="0 while the store does not answer: viewers already seen play on for store.stale_if_error (answers from the last good ones below), new ones are refused 503.")
panel("timeseries", "Origin failures answered stale", [(f'sum by (instance) (rate(hlsgate_cache_requests_total{{{I},result=~"stale|failed"}}[{R}]))', "stale+failed {{instance}}"),
                                                      (f'sum by (instance) (rate(hlsgate_store_stale_answers_total{{{I}}}[{R}]))', "store answers from last good {{instance}}")], 6, 18, 4, "ops")
nexty(4)
panel("timeseries", "Store queries by result", [(f'sum by (what, result) (rate(hlsgate_store_queries_total{{{I}}}[{R}]))', "{{what}} {{result}}")], 0, 6, 8, "ops",
      desc="Queries the edge makes to the store on a cache miss (at most one per key per store.cache_ttl); result=error means viewers are refused with 503.")
panel("timeseries", "Publishing", [(f'sum(hlsgate_streams_live{{{I}}})', "live streams"),
                                   (f'sum by (event) (rate(hlsgate_publish_events_total{{{I}}}[{R}]))', "{{event}}/s")], 6, 6, 8, "short")
panel("timeseries", "External auth calls", [(f'sum by (result) (rate(hlsgate_external_auth_calls_total{{{I}}}[{R}]))', "{{result}}")], 12, 6, 8, "ops")
panel("timeseries", "Memory", [(f'process_resident_memory_bytes{{{I}}}', "RSS {{instance}}"),
                               (f'hlsgate_cache_held_bytes{{{I}}}', "cache {{instance}}")], 18, 6, 8, "bytes")
nexty()
panel("timeseries", "Config reloads, token sharing, dropped log lines", [
    (f'sum by (result) (increase(hlsgate_config_reloads_total{{{I}}}[$__range]))', "reloads {{result}}"),
    (f'sum(rate(hlsgate_token_sharing_total{{{I}}}[{R}]))', "shared tokens/s"),
    (f'sum(rate(hlsgate_access_log_dropped_total{{{I}}}[{R}]))', "log lines dropped/s")], 0, 24, 6, "short")
nexty(6)

dash = {
    "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                              "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                              "name": "Annotations & Alerts", "type": "dashboard"}]},
    "description": "hlsgate, the secure HLS edge: requests, refusals, segment cache, origins, playlist rewrites, viewers, store, memory. Metrics from conf/hlsgate.yaml's metrics.listen.",
    "editable": True,
    "fiscalYearStartMonth": 0,
    "graphTooltip": 1,
    "id": None,
    "links": [],
    "panels": panels,
    "refresh": "30s",
    "schemaVersion": 39,
    "tags": ["hlsgate", "hls", "edge"],
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "", "skipUrlSync": False},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,

         "query": {"query": "label_values(hlsgate_requests_total, instance)", "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "options": [], "refresh": 2,
         "regex": "", "skipUrlSync": False, "sort": 1}]},
    "time": {"from": "now-3h", "to": "now"},
    "timepicker": {},
    "timezone": "",
    "title": "hlsgate",
    "uid": "hlsgate-edge",
    "version": 1,
    "weekStart": ""
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hlsgate.json')
with open(out, 'w') as f:
    json.dump(dash, f, indent=2)
    f.write('\n')


