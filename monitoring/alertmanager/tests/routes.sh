#!/usr/bin/env bash
# Runs `amtool check-config` on the Alertmanager config, then checks every
# case of routes.txt with `amtool config routes test --verify.receivers`. Prints one line per case and a summary
# `routes: N passed, M failed`; exits non-zero if any case fails.
# Usage: routes.sh [alertmanager.yml] [routes.txt]
set -u
here="$(cd "$(dirname "$0")" && pwd)"
config="${1:-$here/../alertmanager.yml}"
cases="${2:-$here/routes.txt}"
pass=0 fail=0
if amtool check-config "$config" >/dev/null 2>&1; then
  pass=$((pass + 1)); echo "ok    amtool check-config $config"
else
  fail=$((fail + 1)); echo "FAIL  amtool check-config $config"; amtool check-config "$config" 2>&1 | sed 's/^/      /'
fi
while read -r expected labels; do
  case "$expected" in ''|'#'*) continue ;; esac
  # shellcheck disable=SC2086  # labels are space-separated words on purpose
  if got=$(amtool config routes test --config.file="$config" \
        --verify.receivers="$expected" $labels 2>/dev/null); then
    pass=$((pass + 1)); echo "ok    $expected <- $labels"
  else
    fail=$((fail + 1)); echo "FAIL  expected $expected, got $(echo "$got" | head -1) <- $labels"
  fi
done < "$cases"
echo "routes: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
