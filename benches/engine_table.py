#!/usr/bin/env python3
"""Tabulates a run of `cargo bench --bench engine` from criterion's saved estimates.

Usage: python3 benches/engine_table.py [BASELINE ...]

Reads target/criterion/<workload>_<size>/<engine>/<mode>/<BASELINE>/estimates.json (BASELINE
defaults to "new", the latest run) and prints a Markdown table of median operations per
second for each engine, the ratio of each kvs variant to sled, and the median time per
iteration. Given several baselines (say run1 run2 from `-- --save-baseline run1`), it prints
the median over them of each benchmark's median, so that alternating runs can be combined.
"""

import json
import statistics
import sys
from pathlib import Path

ROOT = Path("target/criterion")
ENGINES = ["kvs-uring", "kvs-uring-nosync", "kvs-blocking", "sled"]
WORKLOADS = ["set", "get_hit", "get_miss", "mix"]


def median_ns(group: str, engine: str, mode: str, baseline: str):
    path = ROOT / group / engine / mode / baseline / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"]


def ops_per_iter(mode: str) -> int:
    return int(mode.removesuffix("ops").removesuffix("op"))


def fmt_rate(x):
    if x is None:
        return "-"
    return f"{x / 1e3:,.1f} k" if x < 1e6 else f"{x / 1e6:,.2f} M"


def main():
    baselines = sys.argv[1:] or ["new"]
    groups = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "report")
    print(f"medians over baselines: {', '.join(baselines)}\n")
    header = ["benchmark"] + [f"{e} ops/s" for e in ENGINES]
    header += ["kvs-uring / sled", "kvs-uring-nosync / sled", "kvs-blocking / sled"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for workload in WORKLOADS:
        for group in groups:
            if not group.startswith(workload + "_") or group[len(workload) + 1].isalpha():
                continue
            size = group[len(workload) + 1:]
            for mode in ["1op", "64ops"]:
                rates = {}
                for e in ENGINES:
                    ns = [median_ns(group, e, mode, b) for b in baselines]
                    ns = [x for x in ns if x is not None]
                    if ns:
                        rates[e] = ops_per_iter(mode) / (statistics.median(ns) / 1e9)
                if not rates:
                    continue
                sled = rates.get("sled")
                row = [f"{workload} {size} {mode}"] + [fmt_rate(rates.get(e)) for e in ENGINES]
                for e in ["kvs-uring", "kvs-uring-nosync", "kvs-blocking"]:
                    r = rates.get(e)
                    row.append(f"{r / sled:.2f}" if r and sled else "-")
                print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
