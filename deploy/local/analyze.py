#!/usr/bin/env python3
"""Outage figures of one client's calls (drawloop's calls.jsonl) per cut.

Usage: analyze.py CALLS_JSONL CUTS_JSONL LABEL
CUTS_JSONL: one line per cut: {"cut": name, "start": ms, "healed": ms}.
Prints, per cut, the calls that failed, the longest time without a
successful draw completing (the outage this client saw; normal spacing is a
few ms) and the slowest successful call; exits 0 always (the caller
decides what must hold). Also prints a machine line per cut:
  RESULT <label> <cut> errors=<n> outage_ms=<n> slowest_ms=<n>
"""
import json, sys

calls = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cuts = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
label = sys.argv[3]
for cut in cuts:
    lo, hi = cut["start"], cut["healed"]
    # Calls that overlap the window of the cut (and its heal).
    inside = [c for c in calls if c["end"] >= lo and c["start"] <= hi]
    errors = [c for c in inside if not c["ok"]]
    ok_ends = sorted(c["end"] for c in calls if c["ok"])
    # Longest gap between successful completions, counted within the window.
    marks = [lo] + [e for e in ok_ends if lo <= e <= hi] + [hi]
    before = [e for e in ok_ends if e < lo]
    if before:
        marks[0] = before[-1]
    after = [e for e in ok_ends if e > hi]
    if after:
        marks.append(after[0])
    outage = max(b - a for a, b in zip(marks, marks[1:]))
    slowest = max((c["end"] - c["start"] for c in inside if c["ok"]), default=0)
    print(f"RESULT {label} {cut['cut']} errors={len(errors)} outage_ms={outage} slowest_ms={slowest} calls={len(inside)}")
    for c in errors[:3]:
        print(f"    error at +{c['start'] - lo} ms: {c.get('error', '')[:200]}")
