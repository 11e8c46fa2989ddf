#!/usr/bin/env bash
# Live test of the shipped Alertmanager routing and inhibition: starts a real
# Alertmanager (prometheus-alertmanager 0.25) on loopback with a copy of
# alertmanager.yml whose webhook URLs point at a recording receiver on a free
# port, posts alerts as Prometheus and the control plane would, then checks
#   - which alerts Alertmanager reports suppressed (inhibited) or active, and
#   - what the pager webhook actually received.
# Prints one line per check and `inhibit: N passed, M failed`; exits non-zero
# on any failure. Needs python3 (stdlib only) and prometheus-alertmanager.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
config="${1:-$here/../alertmanager.yml}"
am_bin="$(command -v prometheus-alertmanager || command -v alertmanager || true)"
[ -n "$am_bin" ] || { echo "inhibit: prometheus-alertmanager not installed"; echo "inhibit: 0 passed, 1 failed"; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT

# HTTP without curl (CI installs no curl): get URL / post URL JSON-BODY.
http() { python3 - "$@" <<'PY'
import sys, urllib.request
req = urllib.request.Request(sys.argv[2], method=sys.argv[1].upper(),
    data=sys.argv[3].encode() if len(sys.argv) > 3 else None,
    headers={"Content-Type": "application/json"})
try:
    sys.stdout.write(urllib.request.urlopen(req, timeout=5).read().decode())
except Exception as e:
    sys.exit(1)
PY
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
am_port=$(free_port); rx_port=$(free_port)
am="http://127.0.0.1:$am_port"

# The recording receiver: appends "<path> <json body>" per POST.
cat > "$work/rx.py" <<'PY'
import http.server, sys
out = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        out.write(self.path + " " + body.decode().replace("\n", " ") + "\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$work/rx.py" "$rx_port" "$work/received.log" & pids+=($!)

sed "s#http://127.0.0.1:9099/#http://127.0.0.1:$rx_port/#" "$config" > "$work/am.yml"
"$am_bin" --config.file="$work/am.yml" --storage.path="$work/data" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= \
  --log.level=warn > "$work/am.log" 2>&1 & pids+=($!)

for _ in $(seq 50); do http get "$am/-/ready" >/dev/null && break; sleep 0.2; done
http get "$am/-/ready" >/dev/null || { cat "$work/am.log"; echo "inhibit: 0 passed, 1 failed"; exit 1; }

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
alert() { # alert name key=value...
  local name=$1; shift
  local labels="\"alertname\":\"$name\""
  for kv in "$@"; do labels="$labels,\"${kv%%=*}\":\"${kv#*=}\""; done
  printf '{"labels":{%s},"annotations":{"summary":"test"},"startsAt":"%s"}' "$labels" "$now"
}
C=cluster=c1
payload="[
 $(alert GeigerZoneDown   severity=critical $C cloud=gcp zone=g1),
 $(alert GeigerNodeDown   severity=critical $C cloud=gcp zone=g1 node=n3 job=geiger instance=n3:8080),
 $(alert GeigerNodeDown   severity=critical $C cloud=aws zone=a1 node=n1 job=geiger instance=n1:8080),
 $(alert GeigerCloudDown  severity=critical $C cloud=onprem),
 $(alert GeigerZoneDown   severity=critical $C cloud=onprem zone=o1),
 $(alert GeigerNodeDown   severity=critical $C cloud=onprem zone=o1 node=n5 job=geiger instance=n5:8080),
 $(alert GeigerAllLinksDown severity=critical $C),
 $(alert GeigerLinkDown   severity=warning $C device=d1 source=control-plane),
 $(alert GeigerNoLeader   severity=critical cluster=c2),
 $(alert GeigerNodeNotReady severity=warning cluster=c2 cloud=aws zone=a1 node=m1),
 $(alert GeigerNodeNotReady severity=warning $C cloud=aws zone=a1 node=n1)
]"
http post "$am/api/v2/alerts" "$payload" >/dev/null \
  || { echo "inhibit: posting alerts failed"; echo "inhibit: 0 passed, 1 failed"; exit 1; }

pass=0 fail=0
check() { # description command...
  local d=$1; shift
  if "$@"; then pass=$((pass+1)); echo "ok    $d"; else fail=$((fail+1)); echo "FAIL  $d"; fi
}
state_of() { # alertname key=value... -> prints active|suppressed|missing
  local name=$1; shift
  local filter="filter=alertname%3D%22$name%22"
  for kv in "$@"; do filter="$filter&filter=${kv%%=*}%3D%22${kv#*=}%22"; done
  http get "$am/api/v2/alerts?$filter" | python3 -c '
import json,sys; a=json.load(sys.stdin); print(a[0]["status"]["state"] if a else "missing")'
}
# The inhibitor learns of source alerts asynchronously: allow it 10 s.
expect_state() {
  for _ in $(seq 20); do
    [ "$(state_of "${@:2}")" = "$1" ] && return 0
    sleep 0.5
  done
  return 1
}

sleep 1
check "zone down inhibits node down in that zone"        expect_state suppressed GeigerNodeDown node=n3
check "zone down leaves node down in other zones"        expect_state active     GeigerNodeDown node=n1
check "zone down itself is not inhibited"                expect_state active     GeigerZoneDown zone=g1
check "cloud down inhibits zone down in that cloud"      expect_state suppressed GeigerZoneDown zone=o1
check "cloud down inhibits node down in that cloud"      expect_state suppressed GeigerNodeDown node=n5
check "a pushed link down stays active when all links are down" expect_state active GeigerLinkDown device=d1
check "no leader inhibits node not ready, same cluster"  expect_state suppressed GeigerNodeNotReady cluster=c2
check "no leader leaves other clusters alone"            expect_state active     GeigerNodeNotReady cluster=c1

# Pages go out after group_wait (15 s) of the critical route.
for _ in $(seq 60); do grep -q '"node":"n1"' "$work/received.log" 2>/dev/null && grep -q GeigerCloudDown "$work/received.log" && break; sleep 0.5; done
sleep 1
pages="$(grep '^/page ' "$work/received.log" 2>/dev/null || true)"
check "pager received node down n1"                      grep -q '"node":"n1"' <<< "$pages"
check "pager received zone down g1"                      grep -q '"zone":"g1"' <<< "$pages"
check "pager received cloud down onprem"                 grep -q 'GeigerCloudDown' <<< "$pages"
check "pager did not receive the inhibited node down n3" bash -c '! grep -q "\"node\":\"n3\"" <<< "$1"' _ "$pages"
check "pager did not receive the inhibited zone down o1" bash -c '! grep -q "\"zone\":\"o1\"" <<< "$1"' _ "$pages"
check "no warning reached the pager"                     bash -c '! grep -q "\"severity\":\"warning\"" <<< "$1"' _ "$pages"
# Tickets go out after the warning route's group_wait (30 s).
for _ in $(seq 90); do grep -q '^/ticket .*GeigerLinkDown' "$work/received.log" 2>/dev/null && break; sleep 0.5; done
tickets="$(grep '^/ticket ' "$work/received.log" 2>/dev/null || true)"
check "ticket receiver got the pushed link down"        grep -q '"source":"control-plane"' <<< "$tickets"
check "ticket receiver got no inhibited node not ready" bash -c '! grep -q "\"node\":\"m1\"" <<< "$1"' _ "$tickets"
check "ticket receiver got no critical alert"           bash -c '! grep -q "\"severity\":\"critical\"" <<< "$1"' _ "$tickets"
echo "inhibit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
