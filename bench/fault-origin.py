"""A loopback HLS origin that fails on demand, for bench/faults.sh.

Serves DIR on 127.0.0.1:PORT (HTTP/1.1, keep-alive), one line per request in
DIR/../origin-requests.log. The file DIR/../fault says how to answer paths that contain
its second word: `500 PATH` (an error), `hang PATH` (no answer for 30 s), `drip PATH`
(the body in eight pieces, 250 ms apart); no file, or `ok`, is a healthy origin.

    python3 fault-origin.py DIR PORT
"""

import http.server
import os
import sys
import threading
import time

ROOT, PORT = sys.argv[1], int(sys.argv[2])
FAULT = os.path.join(os.path.dirname(os.path.abspath(ROOT)), "fault")
LOG = open(os.path.join(os.path.dirname(os.path.abspath(ROOT)), "origin-requests.log"), "a", buffering=1)
LOCK = threading.Lock()


def fault_for(path):
    try:
        with open(FAULT) as f:
            how, _, where = f.read().strip().partition(" ")
    except OSError:
        return None
    return how if how != "ok" and where and where in path else None


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        with LOCK:
            LOG.write(f"GET {path}\n")
        how = fault_for(path)
        if how == "500":
            self.send_response(500)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"oops")
            return
        if how == "hang":
            time.sleep(30)
            self.close_connection = True
            return
        full = os.path.join(ROOT, path.lstrip("/"))
        if ".." in path or not os.path.isfile(full):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(full, "rb") as f:
            body = f.read()
        self.send_response(200)
        ct = "application/vnd.apple.mpegurl" if path.endswith(".m3u8") else "video/mp2t"
        self.send_header("Content-Type", ct)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if how == "drip":
            step = max(1, -(-len(body) // 8))
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                time.sleep(0.25)
        else:
            self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


Server(("127.0.0.1", PORT), Origin).serve_forever()
