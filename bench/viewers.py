#!/usr/bin/env python3
"""Simulated HLS players: each one refreshes a live playlist every target duration and
fetches the newest segment, through keep-alive connections, like a real player at the
live edge. Reports requests, errors and p50/p99 latency per kind.

    viewers.py URL [--players N] [--seconds S] [--urls FILE]

URL is a playback URL (an hlsgate token URL, or nginx's signed URL); with --urls, player i
uses line i (mod the number of lines) of FILE instead: one viewer session each. Stops by
itself."""
import argparse, http.client, re, threading, time, urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--players", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--urls")
    a = ap.parse_args()
    urls = [a.url]
    if a.urls:
        with open(a.urls) as f:
            urls = [l.strip() for l in f if l.strip()]
    u = urllib.parse.urlsplit(a.url)
    lock = threading.Lock()
    lat = {"playlist": [], "segment": []}
    errors = {"playlist": 0, "segment": 0}
    stop = time.monotonic() + a.seconds

    def get(conn, path, kind):
        t = time.monotonic()
        try:
            conn.request("GET", path, headers={"User-Agent": "hlsgate-viewer-sim"})
            r = conn.getresponse()
            body = r.read()
            ok = r.status == 200
        except Exception:
            ok, body = False, b""
        dt = time.monotonic() - t
        with lock:
            if ok:
                lat[kind].append(dt)
            else:
                errors[kind] += 1
        return body if ok else None

    def player(i):
        u = urllib.parse.urlsplit(urls[i % len(urls)])
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        path = u.path + ("?" + u.query if u.query else "")
        time.sleep((i % 100) / 50)  # players join over two seconds
        while time.monotonic() < stop:
            t0 = time.monotonic()
            body = get(conn, path, "playlist")
            if body is None:
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
                time.sleep(1)
                continue
            text = body.decode("utf-8", "replace")
            uris = [l for l in text.splitlines() if l and not l.startswith("#")]
            m = re.search(r"#EXT-X-TARGETDURATION:(\d+)", text)
            target = int(m.group(1)) if m else 2
            if uris:
                seg = urllib.parse.urljoin(u.path, uris[-1])
                if get(conn, seg, "segment") is None:
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            time.sleep(max(0.0, target - (time.monotonic() - t0)))

    threads = [threading.Thread(target=player, args=(i,)) for i in range(a.players)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(len(v) * p))] * 1000 if v else float("nan")

    print(f"{a.players} players, {a.seconds:.0f} s")
    print(f"{'kind':9} {'ok':>7} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for k in ("playlist", "segment"):
        print(f"{k:9} {len(lat[k]):7d} {errors[k]:7d} {pct(lat[k], .5):8.2f} {pct(lat[k], .99):8.2f}")
    return 1 if sum(errors.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
