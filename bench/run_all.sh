#!/usr/bin/env bash
# Run every benchmark (each against its own embedded PostgreSQL and a loopback
# simulator) and print one table. --quick: CI sizes, about 4 minutes (scale: 100,000
# contacts beside 10,000); full sizes include scale at 1,000,000 (about 4 more minutes).
# Usage: bench/run_all.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
QUICK=${1:-}
export DIALER_BENCH_RESULTS
DIALER_BENCH_RESULTS=$(mktemp)
trap 'rm -f "$DIALER_BENCH_RESULTS"' EXIT
for bench in lifecycle webhooks control pacing shared_pacing console calendar scale; do
    echo "== $bench $QUICK"
    # Each script bounds its own runtime; timeout is the last resort.
    timeout 600 "$PY" -m "bench.$bench" $QUICK
done
"$PY" - "$DIALER_BENCH_RESULTS" <<'PY'
import json, sys
from bench._common import machine
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"\nmachine: {machine()}\n")
print(f"| bench | metric | value | baseline | ratio | goal | met |")
print(f"|---|---|---|---|---|---|---|")
for r in rows:
    base = f"{r['baseline']}: {r['baseline_value']:,.1f}" if r["baseline_value"] is not None else ""
    ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
    met = {True: "yes", False: "NO", None: ""}[r["met"]]
    print(f"| {r['bench']} | {r['metric']} | {r['value']:,.2f} {r['unit']} | {base} | {ratio} | {r['goal']} | {met} |")
PY
