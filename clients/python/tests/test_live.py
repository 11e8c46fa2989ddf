"""Against a real `geiger dev` node: fresh records of every spec kind verify
and the verdicts agree with `geiger verify`, tampered or not; the client
fails over, retries a lost answer with the same request_id and gets the
original draw back, and raises typed errors; the library's wire fields are
those of the node's OpenAPI document.

Needs the geiger binary: GEIGER_BIN, or target/debug/geiger. Without it
these tests are skipped, unless GEIGER_REQUIRE_LIVE=1 (clients/check.sh)
makes that a failure.
"""

import copy
import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.parse

import pytest

from geiger_client import (ApiError, Client, PreviousAlreadyUsed, Unavailable, VerifyError, verify_chain,
                           verify_record)
from geiger_client import verify as verify_module
from helpers import REPO, changed, get_path, leaves, set_path

GEIGER = os.environ.get("GEIGER_BIN", str(REPO / "target" / "debug" / "geiger"))
sys.path.insert(0, str(REPO / "clients" / "testdata"))
import dev_records  # noqa: E402

if not os.path.exists(GEIGER):
    if os.environ.get("GEIGER_REQUIRE_LIVE") == "1":
        raise RuntimeError(f"GEIGER_REQUIRE_LIVE=1 but {GEIGER} does not exist: cargo build -p geiger-node first")
    pytest.skip(f"no geiger binary at {GEIGER}", allow_module_level=True)


@pytest.fixture(scope="module")
def node():
    dev = dev_records.DevNode(GEIGER)
    yield dev
    dev.stop()


@pytest.fixture(scope="module")
def bundle(node):
    return dev_records.issue(node.url)


@pytest.fixture(scope="module")
def files(bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    (root / "keys.json").write_text(json.dumps(bundle["keys"]))
    return root


def rust_verifies(files, record, name="record.json", previous=None):
    (files / name).write_text(json.dumps(record, ensure_ascii=False))
    args = [GEIGER, "verify", str(files / name), "--keys", str(files / "keys.json")]
    if previous is not None:
        (files / "previous.json").write_text(json.dumps(previous))
        args += ["--previous", str(files / "previous.json")]
    out = subprocess.run(args, capture_output=True, text=True, env={"RUST_BACKTRACE": "0"})
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return out.returncode == 0


def python_verifies(record, keys, previous=None):
    try:
        verify_record(record, keys, previous)
        return True
    except VerifyError:
        return False


def test_fresh_records_of_every_kind_verify_here_and_with_geiger_verify(bundle, files):
    kinds = {l["response"]["draw"]["spec"]["kind"] for l in bundle["lookups"]}
    assert kinds == {"integers", "permutation", "selection", "bytes"}
    assert python_verifies(bundle["chain"], bundle["keys"])
    assert rust_verifies(files, bundle["chain"])
    previous = bundle["chain"]
    for lookup in bundle["lookups"]:
        assert python_verifies(lookup, bundle["keys"], previous)
        assert rust_verifies(files, lookup, previous=previous)
        previous = lookup["response"]


def test_verdicts_on_tampered_records_agree_with_geiger_verify(bundle, files):
    # One draw of each kind, every leaf changed in turn: both verifiers must
    # reject each (a changed leaf is never harmless in a signed record).
    seen, compared = set(), 0
    for lookup in bundle["lookups"]:
        kind = lookup["response"]["draw"]["spec"]["kind"]
        if kind in seen:
            continue
        seen.add(kind)
        for path in leaves(lookup["response"]):
            tampered = set_path(lookup["response"], path, changed(get_path(lookup["response"], path)))
            ours = python_verifies(tampered, bundle["keys"])
            theirs = rust_verifies(files, tampered)
            assert (ours, theirs) == (False, False), f"{kind} {path}: python {ours}, geiger verify {theirs}"
            compared += 1
    assert compared > 100


def test_the_client_draws_every_kind_and_reads_the_chain_back_verified(node):
    client = Client([node.url], api_key=dev_records.API_KEY)
    chain = client.create_chain("python client")
    previous = chain.id
    for spec in dev_records.SPECS:
        issued = client.draw(previous, "py", spec)
        assert not issued.replayed
        lookup = client.get_draw(issued.id)
        assert lookup.response == issued.response
        previous = issued.id
    drawn = list(client.iter_chain(chain.id))
    assert [d["draw"]["position"] for d in drawn] == list(range(1, len(dev_records.SPECS) + 1))
    assert client.get_chain(chain.id)["head"] == previous


def test_a_retry_with_the_same_request_id_gets_the_original_draw(node):
    client = Client([node.url], api_key=dev_records.API_KEY)
    chain = client.create_chain("replays")
    spec = {"kind": "integers", "min": 1, "max": 6, "count": 1}
    first = client.draw(chain.id, "r", spec, request_id="same-id-1")
    again = client.draw(chain.id, "r", spec, request_id="same-id-1")
    assert again.replayed and again.raw == first.raw
    with pytest.raises(PreviousAlreadyUsed) as e:
        client.draw(chain.id, "r", spec, request_id="another-id")
    assert e.value.existing_id == first.id and e.value.status == 409


def test_unknown_draws_and_bad_specs_are_typed_api_errors(node):
    client = Client([node.url], api_key=dev_records.API_KEY)
    with pytest.raises(ApiError) as e:
        client.get_draw("dr_" + "a" * 40)
    assert (e.value.status, e.value.code) == (404, "not_found")
    chain = client.create_chain("bad spec")
    with pytest.raises(ApiError) as e:
        client.draw(chain.id, "r", {"kind": "permutation", "n": 0})
    assert e.value.status == 422 and e.value.code == "invalid_request"


def test_the_client_fails_over_from_a_dead_address(node):
    dead = f"http://127.0.0.1:{dev_records.free_port()}"
    client = Client([dead, node.url], api_key=dev_records.API_KEY)
    chain = client.create_chain("failover")
    previous = chain.id
    for _ in range(4):  # both starting points are taken in turn
        previous = client.draw(previous, "f", {"kind": "bytes", "count": 4}).id
    with pytest.raises(Unavailable):
        Client([dead], deadline=0.5).keys()


class _LosingProxy(http.server.ThreadingHTTPServer):
    """Forwards to a node, but drops the first `lose` answers to POST
    /v1/draws after the node has committed them: a lost answer."""

    def __init__(self, upstream, lose):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.lose = lose
        self.seen_request_ids = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        conn = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        if self.command == "POST" and self.path == "/v1/draws":
            self.server.seen_request_ids.append(json.loads(body)["request_id"])
            if self.server.lose > 0:
                self.server.lose -= 1
                self.close_connection = True
                return  # committed upstream, answer never sent
        self.send_response(reply.status)
        for k, v in reply.getheaders():
            if k.lower() not in ("transfer-encoding", "connection"):
                self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward


def test_a_lost_answer_is_retried_with_the_same_request_id_and_replayed(node):
    proxy = _LosingProxy(node.url, lose=1)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        client = Client([f"http://127.0.0.1:{proxy.server_address[1]}"], api_key=dev_records.API_KEY)
        chain = client.create_chain("lost answers")
        issued = client.draw(chain.id, "lost", {"kind": "selection", "k": 6, "n": 49})
        assert issued.replayed, "the second attempt must be answered with the original draw"
        assert len(proxy.seen_request_ids) == 2 and len(set(proxy.seen_request_ids)) == 1
        assert client.get_draw(issued.id).response == issued.response
    finally:
        proxy.shutdown()


def test_the_wire_fields_are_those_of_the_nodes_openapi_document(node):
    doc = json.loads(dev_records.call(node.url + "/v1/openapi.json")[1])
    schemas = doc["components"]["schemas"]

    def props(name):
        return set(schemas[name]["properties"])

    assert props("DrawBody") == set(verify_module.DRAW_BODY_FIELDS)
    assert props("ChainBody") == set(verify_module.CHAIN_BODY_FIELDS)
    assert props("EntropyUse") == set(verify_module.ENTROPY_FIELDS)
    assert props("EntropySegment") == set(verify_module.SEGMENT_FIELDS)
    assert props("Signature") == set(verify_module.SIGNATURE_FIELDS)
    assert props("KeyInfo") == set(verify_module.KEY_FIELDS)
    variants = {v["properties"]["kind"]["enum"][0]: set(v["properties"]) for v in schemas["Spec"]["oneOf"]}
    assert variants == {k: set(v) for k, v in verify_module.SPEC_FIELDS.items()}
    assert set(schemas["DrawRequest"]["properties"]) == {"previous", "tag", "spec", "request_id"}


def test_a_chain_read_through_the_client_verifies_offline_too(node):
    client = Client([node.url], api_key=dev_records.API_KEY)
    chain = client.create_chain("offline")
    genesis = client.get_chain(chain.id)["genesis"]
    verify_chain(copy.deepcopy(genesis), client.keys())
