"""The registry benchmark's client: one TLS 1.3 connection with a client certificate, the
same for both registries. Pushes and pulls one big blob and many small ones; prints JSON."""

import hashlib
import http.client
import json
import os
import ssl
import sys
import time

host, cert, key, ca, big_path, repo, small_count, small_size, salt = sys.argv[1:10]
small_count, small_size = int(small_count), int(small_size)

ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert, key)


def connect():
    return http.client.HTTPSConnection(host, 443, context=ctx, blocksize=1 << 20, timeout=300)


def path_of(location):
    # distribution answers with absolute URLs, the agent with paths.
    if location.startswith("https://"):
        return "/" + location.split("/", 3)[3]
    return location


def push(conn, name, body, digest, size):
    conn.request("POST", f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
    response = conn.getresponse()
    response.read()
    if response.status != 202:
        raise SystemExit(f"POST {name}: {response.status}")
    location = path_of(response.getheader("Location"))
    sep = "&" if "?" in location else "?"
    conn.request(
        "PUT",
        f"{location}{sep}digest={digest}",
        body=body,
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    response = conn.getresponse()
    response.read()
    if response.status != 201:
        raise SystemExit(f"PUT {name}: {response.status}")


def pull(conn, name, digest):
    conn.request("GET", f"/v2/{name}/blobs/{digest}")
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"GET {name} {digest}: {response.status}")
    total = 0
    while True:
        chunk = response.read(1 << 20)
        if not chunk:
            return total
        total += len(chunk)


sha = hashlib.sha256()
with open(big_path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        sha.update(block)
big_digest = "sha256:" + sha.hexdigest()
big_size = os.path.getsize(big_path)

conn = connect()
conn.request("GET", "/v2/")
conn.getresponse().read()

start = time.monotonic()
with open(big_path, "rb") as f:
    push(conn, f"{repo}/big", f, big_digest, big_size)
big_push = big_size / (time.monotonic() - start)

start = time.monotonic()
got = pull(conn, f"{repo}/big", big_digest)
big_pull = got / (time.monotonic() - start)
if got != big_size:
    raise SystemExit(f"pulled {got} bytes of {big_size}")

smalls = []
for i in range(small_count):
    # Each run its own content (`salt`): nothing it pushes is stored already.
    data = (int(salt) << 32 | i).to_bytes(8, "big") * (small_size // 8)
    smalls.append((data, "sha256:" + hashlib.sha256(data).hexdigest()))
start = time.monotonic()
for data, digest in smalls:
    push(conn, f"{repo}/small", data, digest, len(data))
small_push = small_count / (time.monotonic() - start)
start = time.monotonic()
for _, digest in smalls:
    pull(conn, f"{repo}/small", digest)
small_pull = small_count / (time.monotonic() - start)

print(json.dumps({
    "big_push_mb_s": big_push / 1e6,
    "big_pull_mb_s": big_pull / 1e6,
    "small_push_per_s": small_push,
    "small_pull_per_s": small_pull,
}))
