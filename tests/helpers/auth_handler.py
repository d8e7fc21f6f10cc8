#!/usr/bin/env python3
"""A stand-in for a platform's playback-authorisation handler (Nimble Streamer's external
auth protocol), for tests/external.rs.

    auth_handler.py PORT REDIRECT_URL

Answers POSTs by the stream in the request's "url": `deny` -> 403, `moved` -> 302 to
REDIRECT_URL (`{host}` in it becomes the message's host), `slow` -> 200 after 1.5 s, a URL
with `auth=bad` -> 403, anything else -> 200; after GET /deny_all, everything -> 403.
GET /stats answers {"calls": N, "max_in_flight": M, "in_flight": K, "last": <last message>}.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, REDIRECT = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
stats = {"calls": 0, "in_flight": 0, "max_in_flight": 0, "last": None}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            if self.path == "/deny_all":
                stats["deny_all"] = True
            self.answer(dict(stats))

    def do_POST(self):
        msg = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
            stats["calls"] += 1
            stats["in_flight"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
            stats["last"] = msg
        try:
            url = msg["url"]
            if "/slow/" in url:
                time.sleep(1.5)
            if "/deny/" in url or "auth=bad" in url or stats.get("deny_all"):
                self.answer({"return_code": 403})
            elif "/moved/" in url:
                self.answer({"return_code": 302,
                             "redirect_location": REDIRECT.replace("{host}", msg["host"])})
            else:
                self.answer({"return_code": 200})
        finally:
            with lock:
                stats["in_flight"] -= 1


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
