"""Checks /v1/openapi.json against a real `geiger dev` node.

1. Starts `geiger dev` on a free loopback port with a fresh data directory.
2. Validates the served document with openapi-spec-validator (OpenAPI 3.1).
3. Runs schemathesis with every check (no 5xx, responses match their
   schemas, schema-valid requests accepted, schema-violating ones refused,
   documented status codes and content types, 401 without credentials, ...)
   three times: with the customer's API key (customer and public routes),
   without credentials (every route), and with the admin token (operator
   routes, less the two that would break the node under test: see below).
4. Prints one line per check and `N passed, M failed` last; exits 1 on any
   failure.

Not fuzzed with valid credentials: `POST /v1/admin/members` (schema-valid
requests add learners at random addresses or remove the only voter) and
`POST /v1/admin/links` (a valid registration needs a device ID derived from
a real key; random ones are refused with 422 by design). Both are still run
without credentials (401) and are covered by node/tests.

Environment: GEIGER_BIN (default target/debug/geiger), OPENAPI_EXAMPLES
(schemathesis examples per operation, default 150), OPENAPI_SEED.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
BIN = Path(os.environ.get("GEIGER_BIN", ROOT / "target" / "debug" / "geiger"))
EXAMPLES = os.environ.get("OPENAPI_EXAMPLES", "150")
SEED = os.environ.get("OPENAPI_SEED", "20261201")

results = []  # (name, ok, detail)


def record(name, ok, detail=""):
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def start_node(data_dir, port, api_key, log):
    env = dict(os.environ, GEIGER_DEV_API_KEY=api_key, NO_COLOR="1")
    process = subprocess.Popen(
        [str(BIN), "dev", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        text = Path(log.name).read_text(errors="replace")
        chain = re.search(r"^\s*chain\s+(ch_[a-z2-7]{40})", text, re.M)
        token = re.search(r"^\s*admin token\s+(\S+)", text, re.M)
        if chain and token:
            try:
                status, _ = get(f"http://127.0.0.1:{port}/readyz")
                if status == 200:
                    return process, chain.group(1), token.group(1)
            except OSError:
                pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"geiger dev did not become ready:\n{text[-3000:]}")


def validate(url):
    from openapi_spec_validator import validate as validate_spec
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    _, body = get(url)
    document = json.loads(body)
    try:
        validate_spec(document)
    except OpenAPIValidationError as error:
        record("openapi-spec-validator", False, str(error).splitlines()[0])
        return document
    record("openapi-spec-validator", document.get("openapi", "").startswith("3.1"),
           f"OpenAPI {document.get('openapi')}, {sum(len(p) for p in document['paths'].values())} operations")
    return document


def schemathesis(name, url, report_dir, args, env):
    junit = report_dir / f"{name}.xml"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", url,
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", EXAMPLES,
        "--seed", SEED,
        "--workers", "1",
        "--request-timeout", "20",
        "--generation-database", "none",
        "--no-color",
        "--report", "junit", "--report-junit-path", str(junit),
        *args,
    ]
    started = time.monotonic()
    # In the scratch directory: schemathesis keeps a cache in its working
    # directory, which must not land in the repository.
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=report_dir)
    output = run.stdout + run.stderr
    (report_dir / f"{name}.log").write_text(output)
    generated = re.search(r"(\d+) generated", output)
    cases = int(generated.group(1)) if generated else 0
    failed_ops = []
    tested = 0
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            tested += 1
            if case.find("failure") is not None or case.find("error") is not None:
                failed_ops.append(case.get("name"))
    problems = []
    if failed_ops:
        problems.append("failed: " + ", ".join(failed_ops))
    if "Unsupported regex" in output:
        problems.append("a pattern schemathesis cannot use")
    if tested == 0 or cases == 0:
        problems.append(f"nothing tested (exit {run.returncode})")
    if run.returncode != 0 and not problems:
        problems.append(f"schemathesis exited {run.returncode}")
    detail = f"{tested} operations, {cases} cases, {time.monotonic() - started:.0f} s"
    record(f"schemathesis {name}", not problems, "; ".join([detail, *problems]))
    if problems:
        summary = output.split("FAILURES", 1)[-1] if "FAILURES" in output else output
        print(summary[-6000:], flush=True)
    return cases


def main():
    if not BIN.exists():
        raise SystemExit(f"{BIN} not found: cargo build -p geiger-node --bin geiger")
    work = Path(tempfile.mkdtemp(prefix="geiger-openapi-"))
    port = free_port()
    api_key = "gk_" + secrets.token_hex(32)
    log = open(work / "node.log", "w")
    process, chain, admin_token = start_node(work / "data", port, api_key, log)
    total_cases = 0
    try:
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/v1/openapi.json"
        validate(url)
        customer = json.loads(get(f"{base}/v1/chains/{chain}")[1])["customer"]
        devices = json.loads(get(f"{base}/v1/keys")[1]).get("devices", [])
        tally = work / "draws-made.txt"
        env = dict(os.environ, GEIGER_CHAIN=chain, GEIGER_CUSTOMER=customer,
                   GEIGER_DRAWS_TALLY=str(tally), SCHEMATHESIS_HOOKS="hooks",
                   GEIGER_DEVICE=devices[0]["device"] if devices else "",
                   PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        reports = work / "reports"
        reports.mkdir()
        total_cases += schemathesis("with-customer-key", url, reports, [
            "--header", f"Authorization: Bearer {api_key}",
            "--exclude-tag", "operators",
        ], env)
        # Schema-valid draws must have been made for real, not only refused
        # or answered 409: the run would prove little otherwise.
        made = tally.read_text().split() if tally.exists() else []
        record("schema-valid draws were made", len(made) > 0, f"{len(made)} draws")
        total_cases += schemathesis("without-credentials", url, reports, [], env)
        total_cases += schemathesis("with-admin-token", url, reports, [
            "--header", f"Authorization: Bearer {admin_token}",
            "--include-tag", "operators",
            "--exclude-operation-id", "change_member",
            "--exclude-operation-id", "register_link",
        ], env)
        alive = process.poll() is None
        record("node still running after the runs", alive)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    failed = [r for r in results if not r[1]]
    print(f"schemathesis cases run: {total_cases}")
    if failed and os.environ.get("GEIGER_TEST_KEEP") != "1":
        print(f"kept {work} for inspection (node.log, reports/)")
    elif os.environ.get("GEIGER_TEST_KEEP") != "1":
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
