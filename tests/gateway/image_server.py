#!/usr/bin/env python3
"""A tiny HTTP server on 127.0.0.1 for the gateway's image-fetch tests.

usage: image_server.py IMAGE_FILE PORT_FILE
Serves  /img.png       the image
        /big.png       more bytes than the gateway's test limit
        /redir-same    302 to /img.png on this host
        /redir-other   302 to the same image under the name "localhost" (another host)
        /redir-file    302 to file:///etc/passwd
        /slow.png      answers after 5 s
        /missing.png   404
and counts requests per path in /count (JSON), so a test can check that a refused URL was never
fetched. Writes its port to PORT_FILE when it listens."""
import http.server
import json
import sys
import threading
import time

image = open(sys.argv[1], "rb").read()
counts = {}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway gave up on this fetch (size or time limit): what the test wants

    def do_GET(self):
        path = self.path.split("?")[0]
        with lock:
            counts[path] = counts.get(path, 0) + 1
        port = self.server.server_address[1]
        if path == "/img.png":
            self.send(200, image, [("Content-Type", "image/png")])
        elif path == "/big.png":
            self.send(200, image + b"\0" * 200000, [("Content-Type", "image/png")])
        elif path == "/redir-same":
            self.send(302, headers=[("Location", "/img.png")])
        elif path == "/redir-other":
            self.send(302, headers=[("Location", f"http://localhost:{port}/img.png")])
        elif path == "/redir-file":
            self.send(302, headers=[("Location", "file:///etc/passwd")])
        elif path == "/slow.png":
            time.sleep(5)
            self.send(200, image)
        elif path == "/count":
            with lock:
                self.send(200, json.dumps(counts).encode())
        else:
            self.send(404, b"not here")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402

os.rename(sys.argv[2] + ".tmp", sys.argv[2])
server.serve_forever()
