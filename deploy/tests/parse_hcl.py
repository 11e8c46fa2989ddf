#!/usr/bin/env python3
"""Parses every .tf and .tfvars file under deploy/terraform with python-hcl2
(the GCP files included, which terraform validate cannot reach without the
google provider). Exit code 1 when any file does not parse."""

import pathlib
import sys

import hcl2

root = pathlib.Path(__file__).resolve().parents[1] / "terraform"
files = sorted(p for p in root.rglob("*") if p.suffix in (".tf", ".tfvars") and ".terraform" not in p.parts)
bad = 0
for f in files:
    try:
        with open(f) as fh:
            hcl2.load(fh)
    except Exception as e:  # any parse error is a finding, not a crash
        print(f"{f}: {e}")
        bad += 1
print(f"{len(files)} files parsed, {bad} failed")
sys.exit(1 if bad else 0)
