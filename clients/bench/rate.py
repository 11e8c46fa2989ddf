#!/usr/bin/env python3
"""Records verified per second by the Python library, on the records of a
bundle (clients/testdata/dev_records.py), each lookup with its previous.
Run on one core: taskset -c 0 python3 clients/bench/rate.py BUNDLE [SECONDS]"""
import sys
import time
import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python" / "src"))
from geiger_client import parse_json, verify_chain, verify_lookup  # noqa: E402

bundle = parse_json(pathlib.Path(sys.argv[1]).read_text())
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
keys, chain, lookups = bundle["keys"], bundle["chain"], bundle["lookups"]
pairs = [(lookups[0], chain)] + [(lookups[n], lookups[n - 1]["response"]) for n in range(1, len(lookups))]
# CPU seconds of this process, not wall time: the machine is shared, and
# waiting for a core is not verifying.
done, started, cpu0 = 0, time.perf_counter(), time.process_time()
while time.perf_counter() - started < seconds:
    verify_chain(chain, keys)
    for lookup, previous in pairs:
        verify_lookup(lookup, keys, previous)
    done += 1 + len(pairs)
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
print(f"python: {done} records in {cpu:.2f} CPU s ({elapsed:.2f} s wall) = {done / cpu:.0f} records per CPU second")
