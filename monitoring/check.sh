#!/usr/bin/env bash
# Checks everything under monitoring/ with the real tools:
#   promtool check config, promtool check rules, promtool test rules,
#   amtool check-config, amtool config routes test (routes.txt),
#   a live Alertmanager inhibition/delivery test, and consistency checks
#   (every alert tested firing and silent, routed, with a runbook section;
#   every metric used is in docs/METRICS.md).
# Needs the Debian packages prometheus and prometheus-alertmanager (promtool,
# amtool, prometheus-alertmanager), plus python3 (stdlib only).
# Set GEIGER_SKIP_LIVE_ALERTMANAGER=1 to skip the live test (it takes ~20 s).
# Set GEIGER_MONITORING_REHEARSAL=1 to add e2e/rehearse.sh (real Prometheus +
# Alertmanager + fake nodes: node-down page and resolve; ~4 minutes).
# Last line: "N passed, M failed"; exit status non-zero on any failure.
set -u
mon="$(cd "$(dirname "$0")" && pwd)"
cd "$mon" || exit 1
pass=0 fail=0

run() { # name command...
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then
    pass=$((pass + 1)); echo "ok    $name"
  else
    fail=$((fail + 1)); echo "FAIL  $name"; echo "$out" | sed 's/^/      /'
  fi
}
# Runs a script that ends with "<label>: N passed, M failed" and adds its counts.
run_counted() { # name command...
  local name=$1; shift
  local out rc line p f
  out=$("$@" 2>&1); rc=$?
  line=$(echo "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
  p=$(echo "$line" | sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed.*/\1/')
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed.*/\2/')
  [ -n "$p" ] || { p=0; f=1; }
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  pass=$((pass + p)); fail=$((fail + f))
  if [ "$f" -eq 0 ]; then echo "ok    $name ($p checks)"; else
    echo "FAIL  $name"; echo "$out" | grep -v '^ok ' | sed 's/^/      /'; fi
}

for tool in promtool amtool python3; do
  command -v "$tool" >/dev/null || { echo "FAIL  $tool not found (apt-get install -y prometheus prometheus-alertmanager python3)"; echo "0 passed, 1 failed"; exit 1; }
done

run "promtool check config prometheus/prometheus.yml" promtool check config prometheus/prometheus.yml
for f in prometheus/rules/*.yml; do
  run "promtool check rules $f" promtool check rules "$f"
done
# Each alert_rule_test / promql_expr_test case counts once. promtool reports
# per file, and names each failing case (", time: ") in its output.
for f in prometheus/tests/*.yml; do
  n=$(grep -cE '^\s*- alertname:|^\s*- expr:' "$f")
  if out=$(promtool test rules "$f" 2>&1); then
    pass=$((pass + n)); echo "ok    promtool test rules $f ($n cases)"
  else
    bad=$(echo "$out" | grep -cE '^\s*(alertname: .*|expr: .*), time: ')
    [ "$bad" -ge 1 ] || bad=1
    [ "$bad" -le "$n" ] || bad=$n
    pass=$((pass + n - bad)); fail=$((fail + bad))
    echo "FAIL  promtool test rules $f ($bad of $n cases failed)"; echo "$out" | sed 's/^/      /'
  fi
done
run "amtool check-config alertmanager/alertmanager.yml" amtool check-config alertmanager/alertmanager.yml
run_counted "amtool config routes test (alertmanager/tests/routes.txt)" alertmanager/tests/routes.sh
if [ "${GEIGER_SKIP_LIVE_ALERTMANAGER:-0}" != 1 ]; then
  run_counted "live Alertmanager inhibition and delivery (alertmanager/tests/inhibit.sh)" alertmanager/tests/inhibit.sh
else
  echo "skip  live Alertmanager test (GEIGER_SKIP_LIVE_ALERTMANAGER=1)"
fi
run_counted "consistency: tests, routes, runbook, contract (coverage.py)" python3 coverage.py
dash_rules="$(mktemp --suffix=.yml)"
dash_gen="$(mktemp --suffix=.json)"
trap 'rm -f "$dash_rules" "$dash_gen"' EXIT
run "Grafana grafana/geiger.json is what grafana/generate.py writes" \
  bash -c 'python3 grafana/generate.py "$1" >/dev/null && cmp grafana/geiger.json "$1"' _ "$dash_gen"
for d in grafana/*.json; do
  run "Grafana $d: every query parses (promtool check rules)" \
    bash -c 'python3 grafana/promql_as_rules.py "$1" "$2" && promtool check rules "$2"' _ "$d" "$dash_rules"
done

if [ "${GEIGER_MONITORING_REHEARSAL:-0}" = 1 ]; then
  run_counted "rehearsal with fake nodes: quiet run, node-down page, resolved (e2e/rehearse.sh)" e2e/rehearse.sh
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
