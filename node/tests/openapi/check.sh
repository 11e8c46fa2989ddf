#!/usr/bin/env bash
# Validates the served /v1/openapi.json (openapi-spec-validator) and runs
# schemathesis with every check against a real `geiger dev` node, with and
# without credentials. See check.py for what is run; hooks.py for the rules
# JSON Schema cannot state. Prints `N passed, M failed` last.
#
# The tools (requirements.txt, pinned) go into target/openapi-venv on first
# use, from PyPI; PYTHON=... uses an interpreter that already has them.
# Builds target/debug/geiger if it is absent (GEIGER_BIN=... uses another).
set -euo pipefail
cd "$(dirname "$0")/../../.."
here=node/tests/openapi
if [ -z "${PYTHON:-}" ]; then
    venv=target/openapi-venv
    if ! "$venv/bin/python" -c 'import schemathesis, openapi_spec_validator' 2>/dev/null \
        || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
        cp "$here/requirements.txt" "$venv/requirements.txt"
    fi
    PYTHON=$venv/bin/python
fi
if [ -z "${GEIGER_BIN:-}" ] && [ ! -x target/debug/geiger ]; then
    cargo build -p geiger-node --bin geiger
fi
exec "$PYTHON" "$here/check.py"
