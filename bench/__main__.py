"""`python -m bench [--quick] [NAME ...]`: run the benchmarks, print a table, write results.json.

Exit status: 1 when a benchmark broke (status "error"), or with --strict when a goal was
missed; 0 otherwise (a missed goal is a measurement, not a crash). `--quick` runs every
benchmark at minimal sizes (about two minutes) so a test can check that they all still run;
its results go to bench/out/results-quick.json and leave bench/results.json alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Settings, log, rounded
from bench.report import format_table

BENCHMARKS = {
    "debug_overhead": "bench.debug_overhead",
    "serving": "bench.serving",
    "api_load": "bench.api_load",
    "orchestration": "bench.orchestration",
    "cold_start": "bench.cold_start",
    "tuning": "bench.tuning",
    "memory": "bench.memory",
    "rules": "bench.rules",
    "drift": "bench.drift",
    "persistence": "bench.persistence",
    "throughput": "bench.throughput",
    "scale": "bench.scale",
}
BENCH_DIR = REPO_ROOT / "bench"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="minimal sizes (a smoke run)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH_DIR / "out" / "work",
        help="scratch folder, emptied first (default bench/out/work)",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="results file (default bench/results.json)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    return parser


def run_benchmark(name: str, settings: Settings) -> dict[str, Any]:
    """Run one benchmark; a crash becomes an "error" result so the others still run."""
    started = time.perf_counter()
    log(f"{name}: start")
    try:
        outcome = importlib.import_module(BENCHMARKS[name]).run(settings)
    except Exception as error:
        log(f"{name}: error\n{traceback.format_exc()}")
        outcome = {
            "name": name,
            "title": name,
            "status": "error",
            "reason": f"{type(error).__name__}: {error}".strip()[:2000],
            "checks": [],
            "measurements": {},
            "notes": [],
        }
    outcome["seconds"] = time.perf_counter() - started
    outcome["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    log(f"{name}: {outcome['status']} in {outcome['seconds']:.0f} s")
    return outcome


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including how loaded the machine was."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(path: Path, outcomes: list[dict[str, Any]], run_info: dict[str, Any]) -> None:
    """Merge into the file: a partial run replaces only the benchmarks it ran."""
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    results = dict(previous.get("results", {}))
    results.update({o["name"]: o for o in outcomes})
    ordered = {name: results[name] for name in BENCHMARKS if name in results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rounded({"last_run": run_info, "results": ordered}), indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    output = args.output or (
        BENCH_DIR / "out" / "results-quick.json" if args.quick else BENCH_DIR / "results.json"
    )
    shutil.rmtree(args.work_dir, ignore_errors=True)
    settings = Settings(quick=args.quick, work_dir=args.work_dir.resolve())
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine_before = machine()
    outcomes = [run_benchmark(name, settings) for name in names]
    run_info = {
        "benchmarks": names,
        "quick": args.quick,
        "wall_s": time.perf_counter() - started,
        "machine": machine_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    write_results(output, outcomes, run_info)
    print(format_table(outcomes))
    print(f"\n{len(outcomes)} benchmarks in {run_info['wall_s']:.0f} s; results in {output}")
    if any(o["status"] == "error" for o in outcomes):
        return 1
    return 1 if args.strict and any(o["status"] == "fail" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
