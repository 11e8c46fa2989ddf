#!/usr/bin/env python3
"""Consistency checks between the alert rules, their tests, the routing
cases, the runbook, the dashboard and the metric contract. Stdlib only.

Prints one line per check (`ok ...` / `FAIL ...`) and a last line
`coverage: N passed, M failed`; exits 1 on any failure.

Checks, per alert in monitoring/prometheus/rules/*.yml:
  - labels.severity is critical, warning or none;
  - annotations summary, description and runbook_url exist, and runbook_url is
    docs/RUNBOOK.md#<lowercase alertname> with that section in docs/RUNBOOK.md
    and a line in its index;
  - the promtool tests hold at least one case where it fires and one where
    it must stay silent;
  - monitoring/alertmanager/tests/routes.txt routes it at least once.
Plus: each alert the control plane pushes (docs/METRICS.md) has a route case
and a runbook section; every geiger_* metric named in the rules or the
dashboard is in docs/METRICS.md; every recorded series the dashboard uses
is defined by a recording rule.
"""
import glob, json, os, re, sys

mon = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(mon)
results = []

def check(ok, what):
    results.append(ok)
    print(("ok    " if ok else "FAIL  ") + what)

def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()

# ---- alerts from the rule files (line-based: our files keep one key a line)
alerts = {}  # name -> dict(severity, summary, description, runbook)
records = set()
for path in sorted(glob.glob(os.path.join(mon, "prometheus/rules/*.yml"))):
    cur = None
    for line in read(path).splitlines():
        m = re.match(r"\s*- alert:\s*(\S+)", line)
        if m:
            cur = alerts.setdefault(m.group(1), {})
            continue
        m = re.match(r"\s*- record:\s*(\S+)", line)
        if m:
            records.add(m.group(1)); cur = None
            continue
        if cur is None:
            continue
        m = re.match(r"\s*(severity|summary|description|runbook_url):\s*(.*)$", line)
        if m:
            cur[m.group(1)] = m.group(2).strip().strip('"')

# ---- test cases: alertname -> {"fire": n, "silent": n}
cases = {}
for path in sorted(glob.glob(os.path.join(mon, "prometheus/tests/*.yml"))):
    lines = read(path).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)- alertname:\s*(\S+)", line)
        if not m:
            continue
        indent = len(m.group(1))
        fires = False
        for nxt in lines[i + 1:]:
            if not nxt.strip() or nxt.strip().startswith("#"):
                continue
            nind = len(nxt) - len(nxt.lstrip())
            if nind <= indent:
                break
            if re.match(r"\s*exp_alerts:\s*$", nxt):
                fires = True
        c = cases.setdefault(m.group(2), {"fire": 0, "silent": 0})
        c["fire" if fires else "silent"] += 1

routes = read(os.path.join(mon, "alertmanager/tests/routes.txt"))
routed = set(re.findall(r"alertname=(\S+)", routes))
runbook = read(os.path.join(root, "docs/RUNBOOK.md"))
sections = {h.strip().lower() for h in re.findall(r"^#{2,3}\s+(\S+)\s*$", runbook, re.M)}
sections |= set(re.findall(r'<a (?:id|name)="([^"]+)"', runbook))
metrics_md = read(os.path.join(root, "docs/METRICS.md"))

for name in sorted(alerts):
    a = alerts[name]
    problems = []
    if a.get("severity") not in ("critical", "warning", "none"):
        problems.append("severity %r" % a.get("severity"))
    for k in ("summary", "description", "runbook_url"):
        if not a.get(k):
            problems.append("no " + k)
    want = "docs/RUNBOOK.md#" + name.lower()
    if a.get("runbook_url") != want:
        problems.append("runbook_url is not " + want)
    if name.lower() not in sections:
        problems.append("no section %s in docs/RUNBOOK.md" % name)
    if "[%s](#%s)" % (name, name.lower()) not in runbook:
        problems.append("not in the index of docs/RUNBOOK.md")
    c = cases.get(name, {"fire": 0, "silent": 0})
    if c["fire"] < 1:
        problems.append("no test where it fires")
    if c["silent"] < 1 and name != "GeigerWatchdog":
        problems.append("no test where it stays silent")
    if name not in routed:
        problems.append("no case in routes.txt")
    check(not problems, "%s (%s; tests: %d firing, %d silent)%s" % (
        name, a.get("severity"), c["fire"], c["silent"],
        "" if not problems else ": " + "; ".join(problems)))

for name in sorted(set(cases) - set(alerts)):
    check(False, "tests name %s, which no rule defines" % name)

# ---- pushed alerts (documented in METRICS.md's table of pushed alerts)
pushed_part = metrics_md.split("## Alerts the control plane pushes", 1)[-1].split("\n## ", 1)[0]
pushed = sorted(set(re.findall(r"^\| `(Geiger\w+)`", pushed_part, re.M)))
check(len(pushed) >= 4, "docs/METRICS.md lists the pushed alerts (%s)" % ", ".join(pushed))
for name in pushed:
    problems = []
    if name not in routed:
        problems.append("no case in routes.txt")
    if name.lower() not in sections:
        problems.append("no section in docs/RUNBOOK.md")
    if "[%s](#%s)" % (name, name.lower()) not in runbook:
        problems.append("not in the index of docs/RUNBOOK.md")
    check(not problems, "pushed %s%s" % (name, "" if not problems else ": " + "; ".join(problems)))

# ---- metric names used by rules and dashboard are in the contract
documented = set(re.findall(r"`(geiger_[a-z0-9_]+)`", metrics_md))
def base(n):
    for suf in ("_bucket", "_count", "_sum"):
        if n.endswith(suf) and n[: -len(suf)] in documented:
            return n[: -len(suf)]
    return n
used = {}
srcs = glob.glob(os.path.join(mon, "prometheus/rules/*.yml")) + glob.glob(os.path.join(mon, "grafana/*.json"))
for path in srcs:
    text = read(path)
    for n in re.findall(r"(?<![:\w])(geiger_[a-z0-9_]+)", text):
        used.setdefault(base(n), set()).add(os.path.relpath(path, mon))
undocumented = sorted(n for n in used if n not in documented)
check(not undocumented, "every geiger_* metric used is in docs/METRICS.md%s" % (
    "" if not undocumented else ": missing " + ", ".join(undocumented)))

# ---- dashboard: valid JSON, recorded series exist
for path in sorted(glob.glob(os.path.join(mon, "grafana/*.json"))):
    try:
        dash = json.loads(read(path))
        ok = bool(dash.get("panels"))
    except ValueError as e:
        ok = False
    check(ok, "%s is valid JSON with panels" % os.path.relpath(path, mon))
    rec_used = set(re.findall(r"\b(cluster(?:_device)?:[a-z0-9_]+:[a-z0-9_]+)", read(path)))
    missing = sorted(rec_used - records)
    check(not missing, "%s uses only defined recording rules%s" % (
        os.path.relpath(path, mon), "" if not missing else ": " + ", ".join(missing)))

passed = sum(results)
print("coverage: %d passed, %d failed" % (passed, len(results) - passed))
sys.exit(0 if passed == len(results) else 1)
