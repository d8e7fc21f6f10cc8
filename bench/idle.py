#!/usr/bin/env python3
"""Idle keep-alive connections: CONNS connections each send one request (PATH), read the
whole response and then say nothing. The edge must close each one once it has been idle
for its `edge.idle_timeout`; this reconnects it and starts over, so CONNS connections stay
open for the whole run. Reports requests, errors, how long the edge let a connection idle
before closing it (min / median / max), and samples of how many were open.

    idle.py HOST PORT PATH [--conns N] [--seconds S] [--ramp S] [--source ADDR]

--source: the local address to connect from (a loopback alias such as 127.0.0.2: one
client address holding many connections, bench/connflood.sh).

Stops by itself after S seconds."""
import argparse, asyncio, json, statistics, time


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--ramp", type=float, default=20)
    ap.add_argument("--source", default=None)
    a = ap.parse_args()
    req = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\nUser-Agent: hlsgate-idle\r\n\r\n".encode()
    stop = time.monotonic() + a.seconds
    st = {"requests": 0, "errors": 0, "error_kinds": {}, "idle_closes": [], "open": 0,
          "early_closes": 0, "samples": []}

    def err(kind):
        st["errors"] += 1
        st["error_kinds"][kind] = st["error_kinds"].get(kind, 0) + 1

    async def one(i):
        await asyncio.sleep(a.ramp * i / a.conns)
        while time.monotonic() < stop:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(
                    a.host, a.port, local_addr=(a.source, 0) if a.source else None), 10)
            except Exception as e:
                err(f"connect: {type(e).__name__}")
                await asyncio.sleep(1)
                continue
            st["open"] += 1
            try:
                w.write(req)
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
                status = int(head.split(b" ", 2)[1])
                length, chunked = 0, False
                for line in head.split(b"\r\n"):
                    l = line.lower()
                    if l.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                    elif l.startswith(b"transfer-encoding:") and b"chunked" in l:
                        chunked = True
                if chunked:
                    while True:
                        size = int((await asyncio.wait_for(r.readuntil(b"\r\n"), 10)).split(b";")[0], 16)
                        await asyncio.wait_for(r.readexactly(size + 2), 10)
                        if size == 0:
                            break
                else:
                    await asyncio.wait_for(r.readexactly(length), 10)
                if status != 200:
                    err(f"status {status}")
                    continue
                st["requests"] += 1
                idle_from = time.monotonic()
                # Now idle: wait for the edge to close (EOF) or the run to end.
                left = stop - idle_from
                try:
                    extra = await asyncio.wait_for(r.read(1), left)
                except asyncio.TimeoutError:
                    return  # still open at the end of the run: fine
                if extra:
                    err("unexpected bytes")
                else:
                    st["idle_closes"].append(time.monotonic() - idle_from)
            except Exception as e:
                err(type(e).__name__)
            finally:
                st["open"] -= 1
                w.close()

    async def sampler():
        while time.monotonic() < stop:
            st["samples"].append(st["open"])
            await asyncio.sleep(10)

    await asyncio.gather(sampler(), *(one(i) for i in range(a.conns)))
    c = sorted(st["idle_closes"])
    print(json.dumps({
        "conns": a.conns, "requests": st["requests"], "errors": st["errors"],
        "error_kinds": st["error_kinds"], "idle_closed": len(c),
        "idle_close_s": [round(c[0], 2), round(statistics.median(c), 2), round(c[-1], 2)] if c else None,
        "open_samples": st["samples"],
    }))


asyncio.run(main())
