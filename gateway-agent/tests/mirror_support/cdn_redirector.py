#!/usr/bin/python3
"""A registry front that sends blob downloads to a CDN on another host, as Docker Hub does,
for the mirror's loopback tests. Two listeners on 127.0.0.1:

- FRONT_PORT, the registry: every request is passed to the real registry (docker-registry on
  UPSTREAM_PORT) with its Authorization and Accept, and its answer relayed, except a blob GET
  or HEAD: that is checked with a HEAD at the registry, with the client's Authorization (so a
  client without a token still gets the registry's 401 and its challenge), and then answered
  `307` to `http://CDN_HOST:CDN_PORT/hop/HOPS/<digest>` (repositories named `.../loop`: 50
  hops, more than any client should follow).
- CDN_PORT, the CDN: `/hop/N/<digest>` redirects to `/hop/N-1/…` on CDN_HOST until N is 0,
  then serves the blob's bytes straight from the registry's storage (STORAGE_ROOT), as a CDN
  in front of object storage does. It needs no credentials and must never get any.

Every request is logged to LOG, one JSON line: `side` ("front" or "cdn"), `method`, `path`,
`host` (the Host header) and `authorization`: "none", "basic", "bearer" or "other".

Usage:
  cdn_redirector.py FRONT_PORT CDN_PORT UPSTREAM_PORT STORAGE_ROOT CDN_HOST HOPS LOG
"""

import http.client
import http.server
import json
import os
import re
import socketserver
import sys
import threading

BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
HOP = re.compile(r"^/hop/(?P<n>[0-9]+)/(?P<digest>sha256:[0-9a-f]{64})$")
# Relayed from the registry, compared without case (Go writes `Www-Authenticate`).
RELAYED = ("content-type", "docker-content-digest", "www-authenticate", "location", "etag")


def main(front_port, cdn_port, upstream_port, storage_root, cdn_host, hops, log_path):
    front_port, cdn_port, upstream_port, hops = (
        int(front_port),
        int(cdn_port),
        int(upstream_port),
        int(hops),
    )
    lock = threading.Lock()

    def log(side, handler):
        auth = handler.headers.get("Authorization")
        kind = "none"
        if auth:
            scheme = auth.split(" ", 1)[0].lower()
            kind = scheme if scheme in ("basic", "bearer") else "other"
        line = {
            "side": side,
            "method": handler.command,
            "path": handler.path,
            "host": handler.headers.get("Host", ""),
            "authorization": kind,
        }
        with lock, open(log_path, "a") as f:
            f.write(json.dumps(line) + "\n")

    def upstream(method, path, headers):
        connection = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response, body

    class Quiet(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, headers, body, head):
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(body)
            self.close_connection = True

    class Front(Quiet):
        def do_GET(self):
            self.handle_any(head=False)

        def do_HEAD(self):
            self.handle_any(head=True)

        def handle_any(self, head):
            log("front", self)
            passed = {
                key: self.headers[key]
                for key in ("Authorization", "Accept")
                if self.headers.get(key) is not None
            }
            blob = BLOB.match(self.path.split("?", 1)[0])
            if blob:
                response, _ = upstream("HEAD", self.path, passed)
                if response.status != 200:
                    relayed = [(k, v) for k, v in response.getheaders() if k.lower() in RELAYED]
                    self.answer(response.status, relayed, b"", True)
                    return
                n = 50 if blob.group("name").endswith("/loop") else hops
                location = f"http://{cdn_host}:{cdn_port}/hop/{n}/{blob.group('digest')}"
                self.answer(307, [("Location", location)], b"", head)
                return
            response, body = upstream(self.command, self.path, passed)
            relayed = [(k, v) for k, v in response.getheaders() if k.lower() in RELAYED]
            self.answer(response.status, relayed, body, head)

    class Cdn(Quiet):
        def do_GET(self):
            self.handle_any(head=False)

        def do_HEAD(self):
            self.handle_any(head=True)

        def handle_any(self, head):
            log("cdn", self)
            hop = HOP.match(self.path.split("?", 1)[0])
            if not hop:
                self.answer(404, [], b"", head)
                return
            n, digest = int(hop.group("n")), hop.group("digest")
            if n > 0:
                location = f"http://{cdn_host}:{cdn_port}/hop/{n - 1}/{digest}"
                self.answer(307, [("Location", location)], b"", head)
                return
            hexdigest = digest.split(":", 1)[1]
            path = os.path.join(
                storage_root,
                "docker/registry/v2/blobs/sha256",
                hexdigest[:2],
                hexdigest,
                "data",
            )
            try:
                with open(path, "rb") as f:
                    body = f.read()
            except FileNotFoundError:
                self.answer(404, [], b"", head)
                return
            self.answer(200, [("Content-Type", "application/octet-stream")], body, head)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    cdn = Server(("127.0.0.1", cdn_port), Cdn)
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    Server(("127.0.0.1", front_port), Front).serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    main(*sys.argv[1:])
