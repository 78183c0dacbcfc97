"""The mirror benchmark's client: one TLS 1.3 connection with a client certificate, the same
for the gateway's mirror and for distribution as a pull-through proxy. Pulls an image by
digest (its manifest, then every blob, each read to the end and checked against its digest);
prints JSON: seconds, bytes, blobs."""

import hashlib
import http.client
import json
import ssl
import sys
import time

host, port, cert, key, ca, repo, digest = sys.argv[1:8]

ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert, key)
conn = http.client.HTTPSConnection(host, int(port), context=ctx, blocksize=1 << 20, timeout=600)


def get(path, accept=None):
    headers = {"Accept": accept} if accept else {}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {response.read()[:300]!r}")
    sha = hashlib.sha256()
    total = 0
    while True:
        chunk = response.read(1 << 20)
        if not chunk:
            break
        sha.update(chunk)
        total += len(chunk)
    return total, "sha256:" + sha.hexdigest(), sha


start = time.monotonic()
conn.request("GET", f"/v2/{repo}/manifests/{digest}",
             headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
response = conn.getresponse()
body = response.read()
if response.status != 200:
    raise SystemExit(f"manifest: {response.status} {body[:300]!r}")
manifest = json.loads(body)
blobs = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
total = len(body)
for blob in blobs:
    size, got, _ = get(f"/v2/{repo}/blobs/{blob}")
    if got != blob:
        raise SystemExit(f"{blob}: the bytes hash to {got}")
    total += size
seconds = time.monotonic() - start
print(json.dumps({"seconds": seconds, "bytes": total, "blobs": len(blobs)}))
