"""A TCP relay to PostgreSQL that fails on demand, for bench/store-outage.sh.

    python3 store-relay.py LISTEN_PORT TARGET_HOST:PORT CONTROL_FILE

CONTROL_FILE holds `ok` (pass bytes), `freeze` (keep every connection open and pass
nothing either way: a PostgreSQL stopped with SIGSTOP, a partition) or `down` (close
every connection and refuse new ones: a PostgreSQL stopped).
"""

import asyncio
import sys

PORT, TARGET, CONTROL = int(sys.argv[1]), sys.argv[2], sys.argv[3]
HOST, TPORT = TARGET.rsplit(":", 1)
conns = set()


def mode():
    try:
        with open(CONTROL) as f:
            return f.read().strip() or "ok"
    except OSError:
        return "ok"


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            while mode() == "freeze":
                await asyncio.sleep(0.05)
            if mode() == "down":
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(creader, cwriter):
    if mode() == "down":
        cwriter.close()
        return
    try:
        sreader, swriter = await asyncio.open_connection(HOST, int(TPORT))
    except OSError:
        cwriter.close()
        return
    pair = (cwriter, swriter)
    conns.add(pair)
    try:
        await asyncio.gather(pipe(creader, swriter), pipe(sreader, cwriter))
    finally:
        conns.discard(pair)


async def watch():
    # `down`: every open connection is cut at once, as when the server stops.
    while True:
        if mode() == "down":
            for c, s in list(conns):
                c.close()
                s.close()
        await asyncio.sleep(0.05)


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT)
    asyncio.create_task(watch())
    async with server:
        await server.serve_forever()


asyncio.run(main())
