"""``python -m bench [--small] [--n N] [--no-latency] [--no-throttle] [--no-memory] [--no-scaleout]
[--no-e2e] [--no-growth] [--growth-large N] [--out DIR]``.

``make bench``. Also ``--e2e-n N``: BC customers in the real-stack full job (``bench/e2e.py``).

``make bench`` runs it. Starts its own Azurite, token authority, simulators and AMQP peer on free ports, runs
every scenario next to the per-record baseline, prints the figures vs targets and writes
bench/results/latest.{md,json} and throughput.png. The stores micro-benchmark stays separate:
``python -m bench.bench_stores``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from pathlib import Path

from bench.report import RESULTS_DIR, table, write
from bench.run import ONLY, SMALL, Config, run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the CI-sized run (500 records, counts only)")
    parser.add_argument("--n", type=int, help="records per side in the main scenario")
    parser.add_argument("--baseline-n", type=int)
    parser.add_argument("--memory-n", type=int)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--no-throttle", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-scaleout", action="store_true", help="skip the 1- vs 2-instance run (bench/scaleout.py)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the real-stack scenarios (bench/e2e.py)")
    parser.add_argument("--no-growth", action="store_true", help="skip the 10,000 vs 100,000 couplings run")
    parser.add_argument("--growth-large", type=int, help="records per side at the large point (bench/growth.py)")
    parser.add_argument("--e2e-n", type=int, help="BC customers in the real-stack full job")
    parser.add_argument("--only", choices=ONLY, help="run one scenario alone, print its JSON (no report written)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = SMALL if args.small else Config()
    changes = {
        "n": args.n,
        "baseline_n": args.baseline_n,
        "memory_n": args.memory_n,
        "latency": False if args.no_latency else None,
        "throttle": False if args.no_throttle else None,
        "memory": False if args.no_memory else None,
        "e2e": False if args.no_e2e else None,
        "e2e_n": args.e2e_n,
        "growth": False if args.no_growth else None,
        "growth_large": args.growth_large,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    if args.no_scaleout:
        cfg = dataclasses.replace(cfg, scaleout=None)
    if args.only:
        results = asyncio.run(run_all(dataclasses.replace(cfg, only=args.only)))
        results.pop("throttleSeries", None)
        print(json.dumps(results, indent=1, default=str))
        return 0
    results = asyncio.run(run_all(cfg))
    path = write(results, args.out)
    print(table(results["figures"]))
    print(f"\nreport: {path}")
    return 0 if all(f["pass"] is not False for f in results["figures"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
