#!/usr/bin/env bash
# Rehearsal of the end-to-end monitoring test with fake nodes (fake_node.py)
# instead of geiger: the real Prometheus with the shipped rules, the real
# Alertmanager with the shipped routing, the recording receiver.
#   1. quiet run: no page for $QUIET seconds (default 60);
#   2. kill a follower: the GeigerNodeDown page arrives (prints seconds);
#   3. restart it: the resolved notice arrives (prints seconds);
#   4. a pushed GeigerLinkDown (fake_pusher.py) with a "leader change" in
#      the middle: one ticket, no resolve in between, then the resolve.
# The real end-to-end test does the same with real nodes and a device agent,
# Takes about 5 minutes.
# Last line: "rehearsal: N passed, M failed".
set -u
here="$(cd "$(dirname "$0")" && pwd)"
QUIET=${QUIET:-60}
dir="$(mktemp -d)"
fake_pids=()
cleanup() {
  "$here/stack.sh" stop "$dir" >/dev/null 2>&1
  for p in "${fake_pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
declare -A port
for i in 1 2 3; do port[$i]=$(free_port); done
start_fake() { python3 "$here/fake_node.py" "${port[$1]}" "$1" 1 d1 & fake_pids[$1]=$!; }
for i in 1 2 3; do start_fake "$i"; done

"$here/stack.sh" start "$dir" \
  "node=n1,zone=z1,cloud=aws,addr=127.0.0.1:${port[1]}" \
  "node=n2,zone=z2,cloud=gcp,addr=127.0.0.1:${port[2]}" \
  "node=n3,zone=z3,cloud=onprem,addr=127.0.0.1:${port[3]}" || { echo "rehearsal: 0 passed, 1 failed"; exit 1; }
# shellcheck disable=SC1091
. "$dir/env"
pass=0 fail=0
result() { if [ "$1" -eq 0 ]; then pass=$((pass+1)); echo "ok    $2"; else fail=$((fail+1)); echo "FAIL  $2"; fi; }

t0=$(date +%s.%N)
out=$(python3 "$here/wait_for.py" "$RECEIVER_LOG" --path /page --since "$t0" --timeout "$QUIET" --absent); rc=$?
result $rc "quiet run of ${QUIET}s: no page ($out)"

kill "${fake_pids[2]}"; t1=$(date +%s.%N)
out=$(python3 "$here/wait_for.py" "$RECEIVER_LOG" --path /page --alertname GeigerNodeDown --label node=n2 --since "$t1" --timeout 180); rc=$?
result $rc "node n2 killed: GeigerNodeDown page after ${out}s"

start_fake 2; t2=$(date +%s.%N)
out=$(python3 "$here/wait_for.py" "$RECEIVER_LOG" --path /page --alertname GeigerNodeDown --label node=n2 --status resolved --since "$t2" --timeout 180); rc=$?
result $rc "node n2 restarted: resolved notice after ${out}s"

# Pushed alert, as the control plane's leader pushes it, with a leader
# change in the middle: pusher A stops without resolving (the old leader
# died), pusher B (the new leader) re-asserts the same labels 3 s later and
# finally resolves. Expect one firing ticket, no resolve in between, then the
# resolve.
L="alertname=GeigerLinkDown cluster=e2e device=d1 severity=warning source=control-plane"
t3=$(date +%s.%N)
# shellcheck disable=SC2086
python3 "$here/fake_pusher.py" "$AM_URL" 2 10 $L
sleep 3
# shellcheck disable=SC2086
python3 "$here/fake_pusher.py" "$AM_URL" 2 50 --resolve $L &
pusher_b=$!
out=$(python3 "$here/wait_for.py" "$RECEIVER_LOG" --path /ticket --alertname GeigerLinkDown --since "$t3" --timeout 90); rc=$?
result $rc "pushed GeigerLinkDown: ticket after ${out}s"
wait $pusher_b; t4=$(date +%s.%N)
out=$(python3 "$here/wait_for.py" "$RECEIVER_LOG" --path /ticket --alertname GeigerLinkDown --status resolved --since "$t3" --until "$t4" --timeout 0.1 --absent); rc=$?
result $rc "no resolve across the leader change ($out)"
out=$(python3 "$here/wait_for.py" "$RECEIVER_LOG" --path /ticket --alertname GeigerLinkDown --status resolved --since "$t4" --timeout 120); rc=$?
result $rc "pushed GeigerLinkDown resolved: notice ${out}s after the resolving push"

echo "pages received: $(python3 -c '
import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l)
    if r["path"]=="/page":
        print(" ", r["payload"]["status"], [a["labels"]["alertname"]+"/"+a["status"] for a in r["payload"]["alerts"]])
' "$RECEIVER_LOG")"
echo "rehearsal: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
