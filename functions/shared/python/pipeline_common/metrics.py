"""The one definition of the metric lines that train.py prints and the regexes that read them,
and of the record of its test pass (`confusion.json`).

SageMaker reads training metrics by running each MetricDefinitions regex over the job's log and
taking the first capture group as the value. A regex that does not match what the script prints
silently yields no metric, and a tuning job then has no objective. So the printed format and the
regexes live together here: train.py formats its lines with `format_metric_line`, and
`mlops publish-training` uploads `metric_definitions.json` written from `METRIC_DEFINITIONS`
next to the code that prints them. `python -m pipeline_common.metrics [PATH]` writes that file.

It lives in pipeline_common, with no dependency beyond the standard library, because three
places need it: train.py (in the training container, from the source archive, which carries
pipeline_common beside it: mlops/packaging.py), the Lambdas (pipeline_common.jobs names the
objective) and the report (pipeline_report reads the lines of a running job and the record).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PREFIX = "[metric]"
SPLITS = ("train", "valid", "test")
FINAL_EPOCH = "final"

# The tuning job minimises the validation loss; the test split is never used for tuning.
OBJECTIVE_METRIC = "valid:loss"
OBJECTIVE_TYPE = "Minimize"
TEST_ACCURACY_METRIC = "test:accuracy"

# A decimal number as Python's fixed-point format prints it. nan/inf do not match on purpose:
# SageMaker cannot parse them, and a diverged epoch must not look like a value.
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _regex(split: str, field: str) -> str:
    """Build the regex for one metric; the epoch is a number, or `final` for the test split."""
    epoch = FINAL_EPOCH if split == "test" else r"[0-9]+"
    if field == "loss":
        return rf"\[metric\] epoch={epoch} split={split} loss={_NUMBER}"
    return rf"\[metric\] epoch={epoch} split={split} loss=\S+ accuracy={_NUMBER}"


METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": f"{split}:{field}", "Regex": _regex(split, field)}
    for split in SPLITS
    for field in ("loss", "accuracy")
]


# One metric line read whole (epoch, split, loss and accuracy in one match), for readers that
# want every field of a line rather than one metric (the report's curves and live progress).
METRIC_LINE = re.compile(
    rf"{re.escape(PREFIX)} epoch=(?P<epoch>[0-9]+|{FINAL_EPOCH}) "
    rf"split=(?P<split>{'|'.join(SPLITS)}) loss=(?P<loss>\S+) accuracy=(?P<accuracy>[0-9.]+)"
)

# train.py's record of its one test pass, in SM_OUTPUT_DATA_DIR (so in output.tar.gz) next to
# history.json: the confusion matrix and the accuracy of each class (docs/contracts.md).
CONFUSION_FILE = "confusion.json"


def format_metric_line(epoch: int | str, split: str, loss: float, accuracy: float) -> str:
    """Return the exact line that the METRIC_DEFINITIONS regexes match.

    `epoch` is the 1-based epoch number, or "final" for the one test evaluation at the end.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if split == "test" and epoch != FINAL_EPOCH:
        raise ValueError("the test split is evaluated once, at the end: use epoch='final'")
    return f"{PREFIX} epoch={epoch} split={split} loss={loss:.6f} accuracy={accuracy:.4f}"


def parse_metrics(
    log_text: str, definitions: list[dict[str, str]] | None = None
) -> dict[str, list[float]]:
    """Read every metric value from a log the way SageMaker does (first capture group per match).

    Returns {metric name: [values in log order]}; a metric that never matched is absent.
    """
    found: dict[str, list[float]] = {}
    for definition in definitions or METRIC_DEFINITIONS:
        values = [float(m.group(1)) for m in re.finditer(definition["Regex"], log_text)]
        if values:
            found[definition["Name"]] = values
    return found


def confusion_record(classes: list[str], matrix: list[list[int]]) -> dict[str, object]:
    """The content of CONFUSION_FILE: rows are true classes, columns predicted ones (in the order
    of `classes`, the class folder names); a class without test images has accuracy None."""
    if len(matrix) != len(classes) or any(len(row) != len(classes) for row in matrix):
        raise ValueError(f"the confusion matrix must be {len(classes)} x {len(classes)}")
    total = sum(map(sum, matrix))
    correct = sum(matrix[i][i] for i in range(len(classes)))
    return {
        "classes": list(classes),
        "matrix": [[int(n) for n in row] for row in matrix],
        "images": total,
        "accuracy": correct / total if total else None,
        "per_class_accuracy": {
            name: (matrix[i][i] / sum(matrix[i]) if sum(matrix[i]) else None)
            for i, name in enumerate(classes)
        },
    }


def write_metric_definitions(path: str | Path) -> Path:
    """Write METRIC_DEFINITIONS as JSON (the shape CreateTrainingJob's MetricDefinitions takes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(METRIC_DEFINITIONS, indent=2) + "\n")
    return path


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write the metric definitions (name + regex) for SageMaker as JSON."
    )
    parser.add_argument(
        "path",
        nargs="?",
        default=None,
        type=str,
        help="file to write (default: print to standard output)",
    )
    return parser


def main(args: argparse.Namespace) -> None:
    if args.path is None:
        sys.stdout.write(json.dumps(METRIC_DEFINITIONS, indent=2) + "\n")
    else:
        print(f"wrote {write_metric_definitions(args.path)}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
