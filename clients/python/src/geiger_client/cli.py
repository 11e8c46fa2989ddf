"""``python -m geiger_client verify FILE --keys FILE_OR_URL [--previous FILE]
[--chunks URL_OR_DIR]``: the same arguments, output and exit codes as
``geiger verify`` (0 verified, 1 failed verification, 2 unreadable input).
With ``--chunks``, each entropy segment's provenance too (docs/DERIVATION.md
§10): pending segments do not fail it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Callable, List, Optional

from .canonical import parse_json
from .provenance import Chunk, check_draw_provenance
from .verify import VerifyError, verify_record


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    with open(source, encoding="utf-8") as f:
        return f.read()


def _load_keys(source: str) -> Any:
    if source.startswith(("http://", "https://")):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(source, timeout=10) as reply:
            return parse_json(reply.read())
    return parse_json(_read(source))


def _chunk_source(source: str) -> Callable[[str, int], Optional[Chunk]]:
    """``fetch(device, seq)``: the chunk from ``URL/v1/chunks/...`` or
    ``DIR/{device}-{seq}.json``; ``None`` while it is not exhausted (409)."""
    def fetch(device: str, seq: int) -> Optional[Chunk]:
        if source.startswith(("http://", "https://")):
            url = f"{source.rstrip('/')}/v1/chunks/{device}/{seq}"
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(url, timeout=10) as reply:
                    chunk: Chunk = json.loads(reply.read())
                    return chunk
            except urllib.error.HTTPError as e:
                body = e.read().decode("utf-8", "replace")
                if e.code == 409 and '"chunk_not_exhausted"' in body:
                    return None
                if e.code == 404:
                    return {}  # no such signed chunk: `not_found`
                raise
        path = os.path.join(source, f"{device}-{seq}.json")
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            loaded: Chunk = json.load(f)
            return loaded
    return fetch


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geiger_client",
                                     description="Verify geiger records offline.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check a draw or chain genesis against a key set")
    verify.add_argument("file", help="a draw lookup (GET /v1/draws/{id}), a draw's or chain's 201 body; - reads stdin")
    verify.add_argument("--keys", "-k", required=True, help="GET /v1/keys output: a file, or that URL")
    verify.add_argument("--previous", help="the record named as `previous`, to check the link to it as well")
    verify.add_argument("--chunks", help="check each entropy segment's provenance: the cluster's URL, "
                        "or a directory of `{device}-{seq}.json` chunk bodies")
    args = parser.parse_args(argv)

    try:
        record = parse_json(_read(args.file))
        keys = _load_keys(args.keys)
        previous = parse_json(_read(args.previous)) if args.previous else None
    except (OSError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    try:
        report = verify_record(record, keys, previous)
    except VerifyError as e:
        print(f"FAILED {e}")
        return 1
    for check in report.checks:
        print(f"ok   {check}")
    response = record.get("response", record) if isinstance(record, dict) else record
    if not args.chunks or not isinstance(response, dict) or "draw" not in response:
        print("VERIFIED")
        return 0
    try:
        results = check_draw_provenance(response, keys, _chunk_source(args.chunks))
    except (OSError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    pending = failed = 0
    for i, (segment, outcome) in enumerate(results, 1):
        at = (f"segment {i} ({segment['device']} chunk {segment['chunk_seq']}, bytes "
              f"{segment['offset']}..{segment['offset'] + segment['length']})")
        if outcome == "verified":
            print(f"ok   {at}: the device signed the chunk and the draw's bytes are its slice")
        elif outcome == "pending":
            pending += 1
            print(f"pending {at}: the chunk is not exhausted yet; check again later")
        else:
            failed += 1
            print(f"FAILED {at}: {outcome}")
    if failed:
        print(f"FAILED provenance of {failed} segment(s)")
        return 1
    print(f"VERIFIED (provenance pending for {pending} segment(s))" if pending else "VERIFIED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
