"""A stand-in rules CLI (`python -m rules <trial dir> --json --rules A,B --param R.k=v`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trial_dir")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rules", default="")
    parser.add_argument("--param", action="append", default=[])
    args = parser.parse_args()
    print("[2026-01-01 00:00:00] INFO reading the trial", flush=True)
    events = sorted(Path(args.trial_dir).rglob("*.json"))
    results = []
    for rule in args.rules.split(","):
        params = [p for p in args.param if p.startswith(f"{rule}.")]
        if rule == "Broken":
            print("Traceback: rule Broken crashed", file=sys.stderr)
            return 3
        word = "IssuesFound" if rule == "LossNotDecreasing" else "NoIssuesFound"
        details = f"{len(events)} event files; params={','.join(params)}"
        results.append(
            {"RuleConfigurationName": rule, "RuleEvaluationStatus": word, "StatusDetails": details}
        )
    print(json.dumps(results, indent=2))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
