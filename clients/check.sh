#!/usr/bin/env bash
# Checks the Python and TypeScript clients and the verification page:
#   1. fresh records of every spec kind from a live `geiger dev`, each
#      verified by `geiger verify` (the reference the others must agree with);
#   2. the Python library: wheel builds, pytest (vectors, committed and
#      fresh records, every single-field tamper, live client behaviour);
#   3. the TypeScript library: tsc --strict, node:test (the same);
#   4. the page's committed bundle (node/assets/verify/verify.js) is exactly
#      what esbuild makes of clients/typescript/src/page today;
#   5. the page in Debian's headless Chromium (playwright-core), with its
#      screenshot saved to target/verify-page.png.
# The clients are also run against a three-node cluster whose leader is
# killed mid-run (clients/testdata/cluster.py).
# Needs python3 with cryptography, pytest and mypy, Node.js 20 with npm, and
# /usr/bin/chromium; builds target/debug/geiger when it is missing.
# Ends with "N passed, M failed" (tests summed over every suite).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export GEIGER_BIN=${GEIGER_BIN:-$ROOT/target/debug/geiger}
export GEIGER_DEVICE_BIN=${GEIGER_DEVICE_BIN:-$ROOT/target/debug/geiger-device}
export GEIGER_REQUIRE_LIVE=1
LOGS=$ROOT/target/clients-check
mkdir -p "$LOGS"
passed=0
failed=0

count() { # name, log, passed, failed
  echo "   $1: $3 passed, $4 failed (log: ${2#"$ROOT"/})"
  passed=$((passed + $3))
  failed=$((failed + $4))
}

# A suite that cannot run at all counts as one failure, never as nothing.
pytest_suite() { # name, args...
  local name=$1 log=$LOGS/$1.log; shift
  (cd clients/python && python3 -m pytest -q -p no:cacheprovider "$@") >"$log" 2>&1
  local rc=$? line p f e
  line=$(grep -E '[0-9]+ (passed|failed|error)' "$log" | tail -1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  f=$((f + e))
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; tail -20 "$log"; fi
  [ "$f" != 0 ] && grep -E '^(FAILED|ERROR)' "$log" | head -20
  count "$name" "$log" "$p" "$f"
}

node_suite() { # name, dir, env...
  local name=$1 dir=$2 log=$LOGS/$1.log; shift 2
  (cd clients/typescript && env "$@" node --test "$dir") >"$log" 2>&1
  local rc=$? p f
  p=$(grep -E '^# pass ' "$log" | grep -oE '[0-9]+' || echo 0)
  f=$(grep -E '^# fail ' "$log" | grep -oE '[0-9]+' || echo 0)
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; tail -20 "$log"; fi
  [ "$f" != 0 ] && grep -E '^not ok' "$log" | head -20
  count "$name" "$log" "$p" "$f"
}

one() { # name, log name, command... : a single check
  local log=$LOGS/$2.log
  if "${@:3}" >"$log" 2>&1; then count "$1" "$log" 1 0
  else tail -20 "$log"; count "$1" "$log" 0 1; fi
}

echo "== clients: geiger binary"
if [ ! -x "$GEIGER_BIN" ] || [ ! -x "$GEIGER_DEVICE_BIN" ]; then
  cargo build -p geiger-node -p geiger-hardware || { echo "0 passed, 1 failed"; exit 1; }
fi

echo "== clients: fresh records from a live geiger dev, checked by geiger verify"
RECORDS=$LOGS/records.json
if python3 clients/testdata/dev_records.py --geiger "$GEIGER_BIN" --out "$RECORDS" >"$LOGS/dev-records.log" 2>&1; then
  rust_ok=0 rust_bad=0
  python3 - "$RECORDS" "$LOGS" <<'PY'
import json, sys, pathlib
bundle = json.load(open(sys.argv[1]))
out = pathlib.Path(sys.argv[2]) / "records"
out.mkdir(exist_ok=True)
(out / "keys.json").write_text(json.dumps(bundle["keys"]))
(out / "0-chain.json").write_text(json.dumps(bundle["chain"]))
previous = "0-chain.json"
for n, lookup in enumerate(bundle["lookups"], 1):
    (out / f"{n}-draw.json").write_text(json.dumps(lookup, ensure_ascii=False))
    (out / f"{n}-draw.previous").write_text(previous)
    previous = f"{n}-draw.json"
PY
  for f in "$LOGS"/records/*-*.json; do
    args=("$f" --keys "$LOGS/records/keys.json")
    prev=${f%.json}.previous
    [ -f "$prev" ] && args+=(--previous "$LOGS/records/$(cat "$prev")")
    if "$GEIGER_BIN" verify "${args[@]}" >>"$LOGS/geiger-verify.log" 2>&1; then rust_ok=$((rust_ok + 1)); else rust_bad=$((rust_bad + 1)); fi
  done
  count "geiger verify on fresh records" "$LOGS/geiger-verify.log" "$rust_ok" "$rust_bad"
else
  tail -20 "$LOGS/dev-records.log"
  count "fresh records" "$LOGS/dev-records.log" 0 1
fi

echo "== clients: Python"
rm -rf "$LOGS/wheel" "$LOGS/site"
one "python wheel builds and installs" wheel bash -c "python3 -m pip wheel -q --no-deps -w '$LOGS/wheel' clients/python \
  && python3 -m pip install -q --no-deps --target '$LOGS/site' '$LOGS'/wheel/geiger_client-*.whl"
[ -f "$LOGS/records/1-draw.json" ] && one "the installed CLI verifies a fresh draw" installed-cli bash -c \
  "cd '$LOGS' && PYTHONPATH='$LOGS/site' python3 -m geiger_client verify records/1-draw.json --keys records/keys.json \
   --previous records/0-chain.json | tail -1 | grep -qx VERIFIED"
one "python types (mypy --strict)" mypy bash -c "cd clients/python && python3 -m mypy --strict --no-incremental src"
pytest_suite python
[ -f "$RECORDS" ] && CLIENTS_RECORDS=$RECORDS pytest_suite python-fresh-records tests/test_records.py

echo "== clients: TypeScript"
if [ ! -d clients/typescript/node_modules ]; then
  (cd clients/typescript && npm ci --no-audit --no-fund) >"$LOGS/npm-ci.log" 2>&1 || tail -20 "$LOGS/npm-ci.log"
fi
one "typescript compiles (tsc --strict)" tsc bash -c "cd clients/typescript && node_modules/.bin/tsc -p ."
node_suite typescript dist/test/
[ -f "$RECORDS" ] && node_suite typescript-fresh-records dist/test/records.test.js "CLIENTS_RECORDS=$RECORDS"

echo "== clients: the page's bundle matches its source"
one "committed verify.js matches src/page" bundle bash -c "cd clients/typescript && node_modules/.bin/esbuild src/page/verify-page.ts --bundle --format=iife --target=es2020 --minify --legal-comments=none --outfile=$LOGS/verify.js && cmp $LOGS/verify.js ../../node/assets/verify/verify.js"

echo "== clients: the page in headless Chromium"
node_suite page-in-chromium dist/browser/
[ -f target/verify-page.png ] && echo "   screenshot: target/verify-page.png"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
