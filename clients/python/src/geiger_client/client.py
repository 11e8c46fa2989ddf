"""The API client: endpoint rotation, the retry loop, one method per call.

It behaves as the Rust SDK (``client/``) does. Each call starts on the next
endpoint in turn (from a random first one) and moves on after a connection
error, a timeout or a 5xx answer, backing off a little after each full round,
until a deadline. Draws are safe to retry: every draw carries a
``request_id`` (a random one when the caller gives none), so a retry of a
draw that was in fact committed is answered with the original 201 body.
Every chain and draw received is verified against the cluster's published
keys before it is returned.
"""

from __future__ import annotations

import json
import random
import secrets
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .canonical import parse_json
from .errors import ProtocolError, Unavailable, api_error
from .verify import verify_chain, verify_draw

__all__ = ["Client", "Issued", "IssuedChain", "Lookup", "REPLAY_HEADER", "random_request_id"]

#: The header a node sets on a 201 that replays an earlier identical request.
REPLAY_HEADER = "geiger-replayed"


@dataclass
class Issued:
    """A draw as issued: the parsed, verified 201 body and its exact bytes."""

    response: Dict[str, Any]
    raw: bytes
    replayed: bool
    endpoint: str

    @property
    def id(self) -> str:
        return str(self.response["draw"]["id"])


@dataclass
class IssuedChain:
    """A chain's genesis as issued: the verified 201 body and its bytes."""

    response: Dict[str, Any]
    raw: bytes
    endpoint: str

    @property
    def id(self) -> str:
        return str(self.response["id"])


@dataclass
class Lookup:
    """``GET /v1/draws/{id}``: the original request and response."""

    request: Dict[str, Any]
    response: Dict[str, Any]


@dataclass
class _Answer:
    status: int
    replayed: bool
    body: bytes
    endpoint: str


def random_request_id() -> str:
    """128 random bits in hex: an idempotency key no other request shares."""
    return secrets.token_hex(16)


class Client:
    """A geiger client over several node endpoints.

    >>> client = Client(["http://127.0.0.1:8080"], api_key="gk_...")  # doctest: +SKIP
    >>> chain = client.create_chain("roulette 1")  # doctest: +SKIP
    >>> draw = client.draw(chain.id, "round 1",
    ...                    {"kind": "integers", "min": 0, "max": 36, "count": 1})  # doctest: +SKIP
    """

    def __init__(self, endpoints: Sequence[str], *, api_key: Optional[str] = None,
                 attempt_timeout: float = 2.0, deadline: float = 10.0, verify: bool = True) -> None:
        if not endpoints:
            raise Unavailable(0, "no endpoints given")
        self.endpoints: List[str] = [e.rstrip("/") for e in endpoints]
        self.api_key = api_key
        self.attempt_timeout = attempt_timeout
        self.deadline = deadline
        self.verify = verify
        self._next = random.randrange(len(self.endpoints))
        self._keys: Optional[Dict[str, Any]] = None
        # No proxies from the environment: the client talks to the nodes.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ---- transport -------------------------------------------------------

    def _send(self, method: str, path: str, body: Optional[bytes], auth: bool) -> _Answer:
        started = time.monotonic()
        first = self._next
        self._next = (self._next + 1) % len(self.endpoints)
        attempt = 0
        while True:
            endpoint = self.endpoints[(first + attempt) % len(self.endpoints)]
            attempt += 1
            headers = {"Accept": "application/json"}
            if auth:
                headers["Authorization"] = f"Bearer {self.api_key or ''}"
            if body is not None:
                headers["Content-Type"] = "application/json"
            request = urllib.request.Request(endpoint + path, data=body, method=method, headers=headers)
            try:
                with self._opener.open(request, timeout=self.attempt_timeout) as reply:
                    return _Answer(reply.status, reply.headers.get(REPLAY_HEADER) is not None,
                                   reply.read(), endpoint)
            except urllib.error.HTTPError as e:
                answer = _Answer(e.code, e.headers.get(REPLAY_HEADER) is not None, e.read(), endpoint)
                if e.code < 500 or time.monotonic() - started >= self.deadline:
                    return answer
                failure = f"{endpoint}: {e.code}"
            except (urllib.error.URLError, socket.timeout, OSError) as e:
                failure = f"{endpoint}: {getattr(e, 'reason', e)}"
            if time.monotonic() - started >= self.deadline:
                raise Unavailable(attempt, failure)
            # Back off a little once every node has been tried in this round.
            if attempt % len(self.endpoints) == 0:
                round_ = attempt // len(self.endpoints)
                time.sleep(min(20 << min(round_, 5), 500) / 1000)

    @staticmethod
    def _parse(answer: _Answer) -> Any:
        try:
            return parse_json(answer.body)
        except ValueError as e:
            raise ProtocolError(answer.endpoint, f"not JSON: {e}") from None

    def _expect(self, method: str, path: str, body: Optional[bytes], auth: bool, success: int) -> _Answer:
        answer = self._send(method, path, body, auth)
        if answer.status != success:
            try:
                parsed = parse_json(answer.body)
            except ValueError:
                parsed = answer.body.decode("utf-8", "replace")
            raise api_error(answer.status, parsed, answer.endpoint)
        return answer

    # ---- keys and verification ------------------------------------------

    def keys(self, refresh: bool = False) -> Dict[str, Any]:
        """``GET /v1/keys``, cached; ``refresh`` fetches it again."""
        if self._keys is None or refresh:
            self._keys = self._parse(self._expect("GET", "/v1/keys", None, False, 200))
        assert self._keys is not None
        return self._keys

    def _keys_for(self, key_id: str) -> Dict[str, Any]:
        keys = self.keys()
        if any(isinstance(k, dict) and k.get("key_id") == key_id for k in keys.get("keys", [])):
            return keys
        return self.keys(refresh=True)  # rotated since the cache was filled

    def verify_draw(self, response: Dict[str, Any], previous: Optional[Dict[str, Any]] = None) -> None:
        """Verifies a draw against the published keys; raises VerifyError."""
        draw = response.get("draw") if isinstance(response, dict) else None
        key_id = str(draw.get("key_id")) if isinstance(draw, dict) else ""
        verify_draw(response, self._keys_for(key_id), previous)

    # ---- calls -----------------------------------------------------------

    def create_chain(self, tag: str, request_id: Optional[str] = None) -> IssuedChain:
        """``POST /v1/chains``: opens a chain and returns its verified
        genesis. A retry after a lost answer gets the same chain."""
        body = json.dumps({"tag": tag, "request_id": request_id or random_request_id()}).encode()
        answer = self._expect("POST", "/v1/chains", body, True, 201)
        response = self._parse(answer)
        if self.verify:
            record = response.get("chain") if isinstance(response, dict) else None
            key_id = str(record.get("key_id")) if isinstance(record, dict) else ""
            verify_chain(response, self._keys_for(key_id))
        return IssuedChain(response, answer.body, answer.endpoint)

    def draw(self, previous: str, tag: str, spec: Dict[str, Any], request_id: Optional[str] = None) -> Issued:
        """``POST /v1/draws``. Gives the request a random ``request_id`` if
        it has none, so that retries on other nodes are the same request.
        Raises PreviousAlreadyUsed when ``previous`` has another successor."""
        request = {"previous": previous, "tag": tag, "spec": spec,
                   "request_id": request_id or random_request_id()}
        answer = self._expect("POST", "/v1/draws", json.dumps(request).encode(), True, 201)
        response = self._parse(answer)
        draw = response.get("draw") if isinstance(response, dict) else None
        if not isinstance(draw, dict) or draw.get("previous") != previous:
            raise ProtocolError(answer.endpoint, "the draw returned does not follow the requested previous")
        if self.verify:
            self.verify_draw(response)
        return Issued(response, answer.body, answer.replayed, answer.endpoint)

    def get_draw(self, draw_id: str) -> Lookup:
        """``GET /v1/draws/{id}``, verified."""
        answer = self._expect("GET", f"/v1/draws/{urllib.parse.quote(draw_id)}", None, False, 200)
        lookup = self._parse(answer)
        if not isinstance(lookup, dict) or not isinstance(lookup.get("response"), dict) \
                or not isinstance(lookup.get("request"), dict):
            raise ProtocolError(answer.endpoint, "not a draw lookup")
        got = (lookup["response"].get("draw") or {}).get("id")
        if got != draw_id:
            raise ProtocolError(answer.endpoint, f"asked for {draw_id}, got {got}")
        if self.verify:
            self.verify_draw(lookup["response"])
        return Lookup(lookup["request"], lookup["response"])

    def get_chain(self, chain_id: str) -> Dict[str, Any]:
        """``GET /v1/chains/{id}``: ``{genesis, length, head, customer}``,
        the genesis verified."""
        answer = self._expect("GET", f"/v1/chains/{urllib.parse.quote(chain_id)}", None, False, 200)
        chain: Dict[str, Any] = self._parse(answer)
        if self.verify:
            genesis = chain["genesis"]
            verify_chain(genesis, self._keys_for(str(genesis["chain"]["key_id"])))
        return chain

    def chain_draws(self, chain_id: str, after: int = 0, limit: int = 100) -> Dict[str, Any]:
        """One page of ``GET /v1/chains/{id}/draws`` (positions after
        ``after``): ``{chain, draws, next_after?}``, every draw verified."""
        query = urllib.parse.urlencode({"after": after, "limit": limit})
        answer = self._expect("GET", f"/v1/chains/{urllib.parse.quote(chain_id)}/draws?{query}",
                              None, False, 200)
        page: Dict[str, Any] = self._parse(answer)
        if self.verify:
            for draw in page.get("draws", []):
                self.verify_draw(draw)
        return page

    def iter_chain(self, chain_id: str) -> Iterator[Dict[str, Any]]:
        """Every draw of a chain in order, each verified with the link to
        the one before it (the first with the link to the genesis)."""
        previous: Optional[Dict[str, Any]] = self.get_chain(chain_id)["genesis"]
        after = 0
        while True:
            page = self.chain_draws(chain_id, after)
            for draw in page.get("draws", []):
                if self.verify:
                    self.verify_draw(draw, previous)
                previous = draw
                yield draw
            if page.get("next_after") is None:
                return
            after = page["next_after"]
