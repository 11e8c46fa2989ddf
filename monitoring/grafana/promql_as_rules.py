#!/usr/bin/env python3
"""Writes every PromQL query of a Grafana dashboard as a recording rule, with
the dashboard variables replaced by plain values, so that
`promtool check rules` can parse them all. Usage: promql_as_rules.py DASH OUT"""
import json, sys

dash = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((p.get("title", "?"), t["expr"]))
        walk(p.get("panels", []))
walk(dash.get("panels", []))
for a in dash.get("annotations", {}).get("list", []):
    if a.get("expr"):
        exprs.append((a.get("name", "?"), a["expr"]))
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard-queries\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        e = e.replace("$cluster", "c1").replace("$zone", ".*").replace("$node", ".*")
        out.write("      - record: dashboard_query_%d  # %s\n        expr: %s\n"
                  % (i, title.replace("\n", " "), json.dumps(e)))
print(len(exprs), "queries")
