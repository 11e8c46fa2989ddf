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
done, started = 0, time.perf_counter()
while time.perf_counter() - started < seconds:
    verify_chain(chain, keys)
    for lookup, previous in pairs:
        verify_lookup(lookup, keys, previous)
    done += 1 + len(pairs)
elapsed = time.perf_counter() - started
print(f"python: {done} records in {elapsed:.2f} s = {done / elapsed:.0f} records/s")
