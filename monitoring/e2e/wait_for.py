#!/usr/bin/env python3
"""Waits until the receiver log holds a notification matching the criteria,
prints the seconds from SINCE (unix time) to its arrival, exits 0; exits 1
at the timeout. Also usable to assert absence with --absent.

Usage: wait_for.py LOG --path /page --alertname GeigerNodeDown [--label node=n2]
                   [--status firing|resolved] [--since UNIX] [--until UNIX] [--timeout S] [--absent]
A notification matches when it was received after SINCE, on PATH, and one of
its alerts has the alertname, every --label and the status.
"""
import argparse, json, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("log")
ap.add_argument("--path", default="/page")
ap.add_argument("--alertname")
ap.add_argument("--label", action="append", default=[])
ap.add_argument("--status", default="firing")
ap.add_argument("--since", type=float, default=0.0)
ap.add_argument("--until", type=float, default=float("inf"), help="ignore notifications received after this unix time")
ap.add_argument("--timeout", type=float, default=180.0)
ap.add_argument("--absent", action="store_true", help="succeed if nothing matches within the timeout")
a = ap.parse_args()
want = dict(kv.split("=", 1) for kv in a.label)

def match():
    try:
        lines = open(a.log).read().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        rec = json.loads(line)
        if not a.since <= rec["received_at"] <= a.until or rec["path"] != a.path:
            continue
        for al in rec["payload"].get("alerts", []):
            labels = al.get("labels", {})
            if a.alertname and labels.get("alertname") != a.alertname:
                continue
            if al.get("status") != a.status:
                continue
            if all(labels.get(k) == v for k, v in want.items()):
                return rec["received_at"]
    return None

deadline = time.time() + a.timeout
while time.time() < deadline:
    t = match()
    if t is not None:
        if a.absent:
            print("unexpected notification %.1f s after start" % (t - a.since))
            sys.exit(1)
        print("%.1f" % (t - a.since))
        sys.exit(0)
    time.sleep(0.5)
if a.absent:
    print("none")
    sys.exit(0)
print("timeout")
sys.exit(1)
