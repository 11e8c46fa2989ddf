"""schemathesis hooks for check.sh: the rules of geiger's API that JSON
Schema cannot state, applied to schema-valid (positive) requests before they
are sent, and the chain head kept current so that valid draws really draw.

What is adjusted, and why each is not a looser spec:

- `integers`: `min <= max`, and with `unique`, `count <= max - min + 1`;
  `selection`: `k <= n`. Rules between two fields have no JSON Schema form;
  the spec states them in each variant's description.
- `tag`: at most 256 bytes of UTF-8. JSON Schema's `maxLength` counts
  characters; the spec says so in the tag's description.
- Integers written as `3.0`: JSON Schema counts them as integers, the server
  (serde) refuses them with 400 `invalid_json`, and the document says so
  (integers are written without a fraction or exponent). Accepting them
  would let a client's `1e17` stand for a different integer than it meant.
- `request_id`: every positive request gets a fresh one, so that two cases
  never share an idempotency key (a repeat is a replay, a stateful answer
  rather than a property of one request).
- `previous`: a schema-valid ID is replaced by the test chain's head for
  small draws (so the draw is made: 201) and by the chain's genesis for
  large ones (validation passes, then 409 `previous_already_used`, with no
  entropy spent), so the run never waits for the entropy pool.
- Lookups (`GET /v1/chains/{id}`, `.../draws`, `/v1/draws/{id}`,
  `/v1/customers/{id}/chains`): every other schema-valid ID is replaced by
  one that exists, so 200 bodies are checked against their schemas too, not
  only 404s. Likewise `GET /v1/chunks/{device}/{seq}`: every other lookup
  names the node's device and one of its first chunks, so the answers are
  200 (an exhausted chunk) and 409 `chunk_not_exhausted`, not only 404s.

Negative (schema-violating) requests are sent as generated. schemathesis
re-checks every case after this hook, so a case it changes is judged by
what was actually sent.
"""

import os
import re
import uuid

import schemathesis

CHAIN = os.environ["GEIGER_CHAIN"]
CUSTOMER = os.environ.get("GEIGER_CUSTOMER")
TALLY = os.environ.get("GEIGER_DRAWS_TALLY")
DEVICE = os.environ.get("GEIGER_DEVICE")
ID = re.compile(r"^(ch|dr)_[a-z2-7]{40}$")
MAX_TAG_BYTES = 256
# Draws up to this many entropy bytes (roughly) are made for real.
SMALL_DRAW_BYTES = 2048

state = {"head": CHAIN, "draws_made": 0, "lookups": 0, "chunk_lookups": 0}


def _known_draw():
    if state["head"].startswith("dr_"):
        return state["head"]
    if TALLY and os.path.exists(TALLY):
        with open(TALLY) as tally:
            first = tally.readline().strip()
            if first:
                return first
    return None


def _point_at_existing(case):
    """Every other lookup asks for a record that exists."""
    params = case.path_parameters
    path = case.operation.path
    if not isinstance(params, dict) or not isinstance(params.get("id"), str):
        return
    state["lookups"] += 1
    if state["lookups"] % 2:
        return
    if path in ("/v1/chains/{id}", "/v1/chains/{id}/draws") and ID.match(params["id"]):
        params["id"] = CHAIN
    elif path == "/v1/draws/{id}" and ID.match(params["id"]):
        params["id"] = _known_draw() or params["id"]
    elif path == "/v1/customers/{id}/chains" and CUSTOMER:
        params["id"] = CUSTOMER
    case.path_parameters = dict(params)


def _point_at_chunk(case):
    """Every other chunk lookup names one of the device's first chunks."""
    params = case.path_parameters
    if not DEVICE or not isinstance(params, dict):
        return
    state["chunk_lookups"] += 1
    if state["chunk_lookups"] % 2:
        return
    params["device"] = DEVICE
    params["seq"] = (state["chunk_lookups"] // 2) % 8
    case.path_parameters = dict(params)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _integral_floats_to_ints(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_to_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_to_ints(v) for v in value]
    return value


def _fit_tag(tag):
    encoded = tag.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_TAG_BYTES:
        return tag
    while len(tag.encode("utf-8", "surrogatepass")) > MAX_TAG_BYTES:
        tag = tag[:-1]
    return tag


def _fit_spec(spec):
    """Applies the cross-field rules; returns the entropy the draw needs, roughly."""
    kind = spec.get("kind")
    if kind == "integers":
        low, high, count = spec.get("min"), spec.get("max"), spec.get("count")
        if _is_int(low) and _is_int(high) and low > high:
            spec["min"], spec["max"] = high, low
            low, high = high, low
        if spec.get("unique") is True and _is_int(low) and _is_int(high) and _is_int(count):
            spec["count"] = min(count, high - low + 1)
        count = spec.get("count")
        return 8 * count if _is_int(count) else None
    if kind == "selection":
        k, n = spec.get("k"), spec.get("n")
        if _is_int(k) and _is_int(n) and k > n:
            spec["n"] = k
        return 8 * k if _is_int(k) else None
    if kind == "permutation":
        n = spec.get("n")
        return 8 * n if _is_int(n) else None
    if kind == "bytes":
        count = spec.get("count")
        return count if _is_int(count) else None
    return None


def _fit_body(path, body):
    if isinstance(body.get("tag"), str):
        body["tag"] = _fit_tag(body["tag"])
    if isinstance(body.get("request_id"), str):
        body["request_id"] = f"st-{uuid.uuid4().hex}"
    if path == "/v1/draws" and isinstance(body.get("spec"), dict):
        needed = _fit_spec(body["spec"])
        if isinstance(body.get("previous"), str) and ID.match(body["previous"]):
            small = needed is not None and needed <= SMALL_DRAW_BYTES
            body["previous"] = state["head"] if small else CHAIN


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if isinstance(case.query, dict):
        case.query = _integral_floats_to_ints(case.query)
    if isinstance(case.path_parameters, dict):
        case.path_parameters = _integral_floats_to_ints(case.path_parameters)
    if case.method.upper() == "GET" and case.operation.path == "/v1/chunks/{device}/{seq}":
        _point_at_chunk(case)
    elif case.method.upper() == "GET":
        _point_at_existing(case)
    if case.method.upper() == "POST" and isinstance(case.body, dict):
        body = _integral_floats_to_ints(case.body)
        _fit_body(case.operation.path, body)
        case.body = body


@schemathesis.hook
def after_call(context, case, response):
    if case.method.upper() == "POST" and case.operation.path == "/v1/draws" and response.status_code == 201:
        try:
            state["head"] = response.json()["draw"]["id"]
            state["draws_made"] += 1
        except (ValueError, KeyError, TypeError):
            return
        if TALLY:
            with open(TALLY, "a") as out:
                out.write(state["head"] + "\n")
