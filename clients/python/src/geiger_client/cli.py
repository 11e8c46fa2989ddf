"""``python -m geiger_client verify FILE --keys FILE_OR_URL [--previous FILE]``:
the same arguments, output and exit codes as ``geiger verify`` (0 verified,
1 failed verification, 2 unreadable input)."""

from __future__ import annotations

import argparse
import sys
import urllib.request
from typing import Any, List, Optional

from .canonical import parse_json
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geiger_client",
                                     description="Verify geiger records offline.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check a draw or chain genesis against a key set")
    verify.add_argument("file", help="a draw lookup (GET /v1/draws/{id}), a draw's or chain's 201 body; - reads stdin")
    verify.add_argument("--keys", "-k", required=True, help="GET /v1/keys output: a file, or that URL")
    verify.add_argument("--previous", help="the record named as `previous`, to check the link to it as well")
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
    print("VERIFIED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
