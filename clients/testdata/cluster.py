"""A small real geiger cluster on loopback for client tests: three voting
`geiger node` processes and one simulated `geiger-device`, configured as
docs/CONFIG.md describes, with the device's link registered and a customer
created through the admin API. Stdlib only."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional

from dev_records import free_port

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call(url: str, token: str, body: Optional[Dict[str, Any]] = None) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     method="POST" if body is not None else "GET")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with _OPENER.open(request, timeout=5) as reply:
        return json.loads(reply.read() or b"null")


class Cluster:
    def __init__(self, geiger: str, device_bin: str, size: int = 3) -> None:
        self.dir = tempfile.mkdtemp(prefix="geiger-clients-cluster-")
        os.chmod(self.dir, 0o700)
        self.admin_token = secrets.token_hex(24)
        secret = secrets.token_hex(24)
        self.nodes: Dict[int, Dict[str, Any]] = {}
        for node_id in range(1, size + 1):
            self.nodes[node_id] = {"api": f"127.0.0.1:{free_port()}", "rpc": f"127.0.0.1:{free_port()}"}
        bootstrap = "".join(
            f'\n[[bootstrap]]\nid = {i}\napi_addr = "{n["api"]}"\nrpc_addr = "{n["rpc"]}"\n'
            f'zone = "zone-{i}"\ncloud = "cloud-{i}"\nregion = "region-1"\n' for i, n in self.nodes.items())
        self.processes: Dict[int, subprocess.Popen] = {}
        self.geiger = geiger
        for node_id, n in self.nodes.items():
            config = os.path.join(self.dir, f"node-{node_id}.toml")
            with open(config, "w") as f:
                f.write(f'node_id = {node_id}\ndata_dir = "{self.dir}/node-{node_id}"\ncluster_name = "clients"\n\n'
                        f'[labels]\nzone = "zone-{node_id}"\ncloud = "cloud-{node_id}"\nregion = "region-1"\n\n'
                        f'[api]\nlisten = "{n["api"]}"\nadmin_token = "{self.admin_token}"\n\n'
                        f'[internal]\nlisten = "{n["rpc"]}"\nadvertise = "{n["rpc"]}"\ncluster_secret = "{secret}"\n'
                        + bootstrap)
            os.chmod(config, 0o600)  # it holds secrets: geiger refuses it otherwise
            n["config"] = config
        # The device serves only nodes whose link key it lists (docs/LINK.md).
        trusted = os.path.join(self.dir, "trusted-nodes")
        with open(trusted, "w") as f:
            for n in self.nodes.values():
                key = subprocess.run([geiger, "node", "--config", n["config"], "--print-link-key"],
                                     check=True, capture_output=True, text=True).stdout.strip()
                f.write(key + "\n")
        for node_id in self.nodes:
            self.start(node_id)
        self.device_log = open(os.path.join(self.dir, "device.log"), "wb")
        device_addr = f"127.0.0.1:{free_port()}"
        self.device = subprocess.Popen(
            [device_bin, "--state-dir", os.path.join(self.dir, "device"), "--listen", device_addr,
             "--trusted-nodes", trusted],
            stdout=subprocess.PIPE, stderr=self.device_log)
        assert self.device.stdout is not None
        banner = dict(field.split("=", 1) for field in self.device.stdout.readline().decode().split() if "=" in field)
        try:
            self._until(lambda: self.leader() is not None, "a leader")
            self._until(lambda: self.admin("/v1/admin/links", {"device": banner["device"], "address": device_addr,
                                                               "public_key": banner["public_key"]}) is not None,
                        "the device link registered")
            customer = self._until(lambda: self.admin("/v1/admin/customers", {"name": "clients-test"}), "a customer")
            self.api_key: str = customer["api_key"]
        except Exception:
            self.stop()
            raise

    def start(self, node_id: int) -> None:
        log = open(os.path.join(self.dir, f"node-{node_id}.log"), "ab")
        self.processes[node_id] = subprocess.Popen(
            [self.geiger, "node", "--config", self.nodes[node_id]["config"]],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, node_id: int) -> None:
        """SIGKILL: the node gets no chance to finish anything."""
        self.processes[node_id].send_signal(signal.SIGKILL)
        self.processes[node_id].wait()

    @property
    def endpoints(self) -> List[str]:
        return [f"http://{n['api']}" for n in self.nodes.values()]

    def admin(self, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        for node_id in self.processes:
            if self.processes[node_id].poll() is not None:
                continue
            try:
                return _call(f"http://{self.nodes[node_id]['api']}{path}", self.admin_token, body)
            except (urllib.error.URLError, OSError, ValueError):
                continue
        return None

    def leader(self) -> Optional[int]:
        status = self.admin("/v1/cluster/status")
        leader = status.get("leader") if isinstance(status, dict) else None
        return int(leader) if isinstance(leader, int) else None

    @staticmethod
    def _until(check: Any, what: str, seconds: float = 60) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got = check()
            except (urllib.error.URLError, OSError, ValueError):
                got = None
            if got:
                return got
            time.sleep(0.3)
        raise RuntimeError(f"the cluster did not get {what} in {seconds} s")

    def stop(self) -> None:
        for p in list(self.processes.values()) + [self.device]:
            if p.poll() is None:
                p.terminate()
        for p in list(self.processes.values()) + [self.device]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.device_log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    """Starts a cluster and leaves it running for another process's test:
    writes {endpoints, api_key, admin_token, pids: {node id: pid}, device_pid}."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--geiger", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cluster = Cluster(args.geiger, args.device)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"endpoints": cluster.endpoints, "api_key": cluster.api_key, "admin_token": cluster.admin_token,
                   "pids": {str(i): p.pid for i, p in cluster.processes.items()},
                   "device_pid": cluster.device.pid, "dir": cluster.dir}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
