#!/usr/bin/env python3
"""Summarises a checkov JSON report against deploy/checkov-skips.

checkov runs with every check on; a failed check whose ID is listed in
deploy/checkov-skips (with its reason) counts as skipped, any other failed
check as failed. Prints "P passed, F failed, S skipped (K checks)" and the
failures and skips, one a line. Exit code 1 when anything failed.

usage: checkov_summary.py REPORT.json deploy/checkov-skips
"""

import json
import sys

report, skips_file = sys.argv[1], sys.argv[2]
reasons = {}
with open(skips_file) as fh:
    for line in fh:
        if line.strip() and not line.startswith("#"):
            check_id, _, reason = line.strip().partition(" ")
            reasons[check_id] = reason
with open(report) as fh:
    data = json.load(fh)
data = data if isinstance(data, list) else [data]
passed, failed, skipped = 0, [], []
for r in data:
    results = r.get("results", {})
    passed += r.get("summary", {}).get("passed", 0)
    for f in results.get("failed_checks", []) + results.get("skipped_checks", []):
        where = f"{f['check_id']} {f['resource']} {f['file_path']}"
        (skipped if f["check_id"] in reasons else failed).append(where)
ids = sorted({s.split()[0] for s in skipped})
print(f"{passed} passed, {len(failed)} failed, {len(skipped)} skipped ({len(ids)} checks: {', '.join(ids)})")
for f in failed:
    print(f"failed: {f}")
for s in skipped:
    print(f"skipped: {s} -- {reasons[s.split()[0]]}")
sys.exit(1 if failed else 0)
