"""The client against a small real cluster (three voters, one device):
it keeps drawing on one chain while the leader is killed mid-run, with no
draw lost, none doubled, and every draw verified with its link.

Needs GEIGER_BIN and GEIGER_DEVICE_BIN (default target/debug/geiger and
target/debug/geiger-device); skipped without them unless GEIGER_REQUIRE_LIVE=1."""

import os
import sys

import pytest

from geiger_client import Client
from helpers import REPO

GEIGER = os.environ.get("GEIGER_BIN", str(REPO / "target" / "debug" / "geiger"))
DEVICE = os.environ.get("GEIGER_DEVICE_BIN", str(REPO / "target" / "debug" / "geiger-device"))
sys.path.insert(0, str(REPO / "clients" / "testdata"))
from cluster import Cluster  # noqa: E402

if not (os.path.exists(GEIGER) and os.path.exists(DEVICE)):
    if os.environ.get("GEIGER_REQUIRE_LIVE") == "1":
        raise RuntimeError(f"GEIGER_REQUIRE_LIVE=1 but {GEIGER} or {DEVICE} is missing")
    pytest.skip("no geiger or geiger-device binary", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(GEIGER, DEVICE)
    yield c
    c.stop()


def test_the_client_keeps_drawing_while_the_leader_is_killed(cluster):
    client = Client(cluster.endpoints, api_key=cluster.api_key, attempt_timeout=2.0, deadline=30.0)
    chain = client.create_chain("killed mid-run")
    previous, issued = chain.id, []
    killed = None
    for n in range(40):
        if n == 15:
            killed = cluster.leader()
            assert killed is not None
            cluster.kill(killed)
        draw = client.draw(previous, f"round {n}", {"kind": "integers", "min": 1, "max": 6, "count": 1})
        issued.append(draw)
        previous = draw.id
    assert killed is not None
    # Read back through the survivors: contiguous, each linked and verified.
    survivors = [e for i, e in enumerate(cluster.endpoints, 1) if i != killed]
    reader = Client(survivors, deadline=30.0)
    drawn = list(reader.iter_chain(chain.id))
    assert [d["draw"]["id"] for d in drawn] == [d.id for d in issued]
    assert [d["draw"]["position"] for d in drawn] == list(range(1, 41))
