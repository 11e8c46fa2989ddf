#!/usr/bin/env python3
"""Starts a real `geiger dev` node, issues a chain and draws of every spec
kind on it, and writes what a verifier needs as one JSON bundle:

    {"keys": <GET /v1/keys>, "chain": <the chain's 201 body>,
     "lookups": [<GET /v1/draws/{id}> in chain order],
     "responses": [<the 201 bodies, byte for byte, as text>]}

Used by the Python, TypeScript and page tests (clients/check.sh), so every
verifier sees the same real records, and `geiger verify` is run on each.

    python3 dev_records.py --geiger target/debug/geiger --out records.json [--keep-running FILE]

Stdlib only, independent of the libraries it feeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

API_KEY = "gk_clients_test_key_0123456789abcdef"

#: One draw of every kind, and the edges of each (full i64 range, unique
#: integers filling their range, a large selection, one-value permutation).
SPECS: List[Dict[str, Any]] = [
    {"kind": "integers", "min": 1, "max": 6, "count": 2},
    {"kind": "integers", "min": 1, "max": 6, "count": 5, "unique": True},
    {"kind": "integers", "min": -9223372036854775808, "max": 9223372036854775807, "count": 3, "unique": False},
    {"kind": "integers", "min": -1000, "max": -990, "count": 11, "unique": True},
    {"kind": "permutation", "n": 52},
    {"kind": "permutation", "n": 1},
    {"kind": "selection", "k": 6, "n": 49},
    {"kind": "selection", "k": 3, "n": 1000000000000},
    {"kind": "bytes", "count": 32},
    {"kind": "bytes", "count": 1},
]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, body: Optional[Dict[str, Any]] = None) -> Tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {API_KEY}")
    try:
        with _OPENER.open(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class DevNode:
    """A `geiger dev` process on a free loopback port, in a fresh data dir."""

    def __init__(self, geiger: str) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="geiger-clients-dev-")
        os.chmod(self.data_dir, 0o700)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.data_dir, "dev.log"), "wb")
        env = dict(os.environ, GEIGER_DEV_API_KEY=API_KEY, RUST_LOG="warn")
        self.process = subprocess.Popen(
            [geiger, "dev", "--listen", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(self.data_dir, "d")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"geiger dev exited with {self.process.returncode}; see {self.log.name}")
            try:
                if call(self.url + "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("geiger dev did not become ready in 60 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def issue(url: str) -> Dict[str, Any]:
    """A chain and one draw of each of SPECS on it, as a bundle."""
    status, body = call(url + "/v1/chains", {"tag": "clients test table"})
    if status != 201:
        raise RuntimeError(f"POST /v1/chains: {status} {body!r}")
    chain = json.loads(body)
    previous, responses, lookups = chain["id"], [], []
    for n, spec in enumerate(SPECS):
        request = {"previous": previous, "tag": f"round {n + 1} ✓ \"quoted\"", "spec": spec}
        if n % 2 == 0:
            request["request_id"] = f"clients-test-{n}"
        for _ in range(50):  # the simulated device may still be filling the pool
            status, body = call(url + "/v1/draws", request)
            if status != 503:
                break
            time.sleep(0.2)
        if status != 201:
            raise RuntimeError(f"POST /v1/draws {spec}: {status} {body!r}")
        draw = json.loads(body)
        responses.append(body.decode())
        previous = draw["draw"]["id"]
        status, body = call(url + f"/v1/draws/{previous}")
        if status != 200:
            raise RuntimeError(f"GET /v1/draws/{previous}: {status}")
        lookups.append(json.loads(body))
    keys = json.loads(call(url + "/v1/keys")[1])
    return {"keys": keys, "chain": chain, "lookups": lookups, "responses": responses}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geiger", required=True, help="the geiger binary")
    parser.add_argument("--out", required=True, help="where to write the bundle")
    parser.add_argument("--keep-running", metavar="FILE",
                        help="leave the node running and write its URL and pid to FILE")
    args = parser.parse_args()
    node = DevNode(args.geiger)
    try:
        bundle = issue(node.url)
        bundle["url"] = node.url
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(bundle, f, indent=1, ensure_ascii=False)
        if args.keep_running:
            with open(args.keep_running, "w", encoding="utf-8") as f:
                json.dump({"url": node.url, "pid": node.process.pid, "data_dir": node.data_dir}, f)
            return 0
    finally:
        if not args.keep_running:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
