#!/usr/bin/env python3
"""Pushes one alert to Alertmanager's API v2 the way the control plane's
leader must (docs/METRICS.md, "Alerts the control plane pushes"): re-sent
every INTERVAL seconds with endsAt = now + 4 x INTERVAL for DURATION seconds,
then (with --resolve) one last send with endsAt = now. A stand-in for
rehearsing the routing and the dedup across leader changes (two pushers with
the same labels, one after the other, are one alert to Alertmanager).

Usage: fake_pusher.py AM_URL INTERVAL DURATION [--resolve] label=value...
"""
import datetime, json, sys, time, urllib.request

am, interval, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
resolve = "--resolve" in sys.argv[4:]
labels = dict(a.split("=", 1) for a in sys.argv[4:] if "=" in a)
name = labels.get("alertname", "").lower()
annotations = {"summary": "pushed by fake_pusher.py", "description": "rehearsal",
               "runbook_url": "docs/RUNBOOK.md#" + name}

def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

started = time.time()
def send(ends):
    body = json.dumps([{"labels": labels, "annotations": annotations,
                        "startsAt": iso(started), "endsAt": iso(ends)}]).encode()
    req = urllib.request.Request(am.rstrip("/") + "/api/v2/alerts", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()

while time.time() - started < duration:
    send(time.time() + 4 * interval)
    time.sleep(interval)
if resolve:
    send(time.time())
