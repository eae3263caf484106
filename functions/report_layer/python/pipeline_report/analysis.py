"""Pure functions over run data: what the report and the console compute, without AWS calls.

Kept apart from the readers and the plots so each rule (which trial is best, how a wait loop
folds into one timeline row, which epoch a log line belongs to) is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline_common.jobs import decode
from pipeline_common.metrics import FINAL_EPOCH, METRIC_LINE

from pipeline_report.executions import StepRecord

LEARNING_RATE_NAMES = ("lr", "learning_rate", "learning-rate")


def decode_hyperparameters(values: dict[str, Any] | None) -> dict[str, Any]:
    """SageMaker carries hyperparameters JSON-encoded (`"\\"resnet18\\""`); undo that once
    (pipeline_common.jobs.decode, the inverse of what the Lambdas send)."""
    return {key: decode(value) for key, value in (values or {}).items()}


# -- tuning ----------------------------------------------------------------------------------------
def is_scored(trial: dict[str, Any]) -> bool:
    """A trial counts for "best" only when it has an objective value (Completed or Stopped
    early: SageMaker reports the last objective of an early-stopped trial)."""
    return isinstance(trial.get("objective"), int | float) and math.isfinite(trial["objective"])


def sort_trials(trials: Iterable[dict[str, Any]], objective_type: str) -> list[dict[str, Any]]:
    """Best objective first (lowest for Minimize); trials without an objective last, by name."""
    sign = -1.0 if objective_type == "Maximize" else 1.0

    def key(trial: dict[str, Any]) -> tuple[int, float, str]:
        scored = is_scored(trial)
        return (0 if scored else 1, sign * trial["objective"] if scored else 0.0, trial["name"])

    return sorted(trials, key=key)


def trial_order(trials: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order in which the tuner launched the trials: by start time, then by name (local
    trial names carry a counter, `<tuning job>-NNN-<hex>`)."""
    return sorted(trials, key=lambda t: (str(t.get("started") or ""), t["name"]))


def best_so_far(values: Sequence[float | None], objective_type: str) -> list[float | None]:
    """Running best of the objective in trial order; None until the first scored trial."""
    pick = max if objective_type == "Maximize" else min
    running: list[float | None] = []
    best: float | None = None
    for value in values:
        if value is not None and math.isfinite(value):
            best = value if best is None else pick(best, value)
        running.append(best)
    return running


def learning_rate_name(hyperparameters: dict[str, Any]) -> str | None:
    """The hyperparameter that holds the learning rate, if any trial has one."""
    return next((name for name in LEARNING_RATE_NAMES if name in hyperparameters), None)


def as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# -- timeline --------------------------------------------------------------------------------------
@dataclass
class TimelineRow:
    """One state with all its visits: a wait loop is one row with many segments."""

    name: str
    state_type: str
    status: str
    visits: int
    started_s: float
    duration_s: float
    error: str | None
    cause: str | None
    attempts: int
    segments: list[tuple[float, float]] = field(default_factory=list)  # (offset, length) s


def visit_status(step: StepRecord) -> str:
    """A visit that exited with an error left standing was caught (its Catch led on), even when
    the Catch's ResultPath hides the error from the state's output."""
    if step.status == "SUCCEEDED" and step.error:
        return "CAUGHT"
    return step.status


REPORTING_STATE = "WriteReport"


@dataclass
class Outcome:
    status: str
    error: str | None = None
    cause: str | None = None


def reported_outcome(status: str, steps: Sequence[StepRecord]) -> Outcome | None:
    """Where a run ends when this report is written by its own last step (WriteReport).

    The execution is still RUNNING then; its state holds what the ``Outcome`` choice of
    pipeline.asl.json decides on next: a caught failure, a rejected model, or success.
    """
    if status != "RUNNING" or not steps or steps[-1].name != REPORTING_STATE:
        return None
    state = steps[-1].input if isinstance(steps[-1].input, dict) else {}
    failure = state.get("failure")
    if isinstance(failure, dict):
        return Outcome("FAILED", failure.get("Error"), failure.get("Cause"))
    gate = state.get("gate") if isinstance(state.get("gate"), dict) else {}
    if gate.get("approved") is False:
        return Outcome("FAILED", "ModelRejected", gate.get("summary"))
    return Outcome("SUCCEEDED")


def timeline(steps: Sequence[StepRecord], start: datetime, now: datetime) -> list[TimelineRow]:
    """Fold the visits of each state into one row, in order of first visit.

    Offsets are seconds from the execution's start; a visit still running ends at `now`. The
    row's status, error and cause are those of its last visit (a retried task that then
    succeeded is SUCCEEDED), its duration the sum of its visits.
    """
    rows: dict[str, TimelineRow] = {}
    for step in steps:
        offset = (step.started - start).total_seconds()
        length = max(((step.ended or now) - step.started).total_seconds(), 0.0)
        row = rows.get(step.name)
        if row is None:
            row = rows[step.name] = TimelineRow(
                name=step.name,
                state_type=step.state_type,
                status=step.status,
                visits=0,
                started_s=offset,
                duration_s=0.0,
                error=None,
                cause=None,
                attempts=0,
            )
        row.visits += 1
        row.duration_s += length
        row.attempts += step.attempts
        row.status, row.error, row.cause = visit_status(step), step.error, step.cause
        row.segments.append((offset, length))
    return list(rows.values())


# -- training curves -------------------------------------------------------------------------------
@dataclass
class Curves:
    """Per-epoch metrics of one training job, and where they were read from."""

    source: str
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    train_accuracy: list[float | None] = field(default_factory=list)
    valid_loss: list[float | None] = field(default_factory=list)
    valid_accuracy: list[float | None] = field(default_factory=list)
    epoch_seconds: list[float | None] = field(default_factory=list)
    test: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def curves_from_history(history: dict[str, Any], source: str) -> Curves:
    """train.py's history.json (`{"epochs": [{"epoch", "seconds", "train", "valid"}], "test"}`)."""
    curves = Curves(source=source)
    for item in history.get("epochs", []):
        train, valid = item.get("train") or {}, item.get("valid") or {}
        curves.epochs.append(int(item["epoch"]))
        curves.train_loss.append(as_float(train.get("loss")))
        curves.train_accuracy.append(as_float(train.get("accuracy")))
        curves.valid_loss.append(as_float(valid.get("loss")))
        curves.valid_accuracy.append(as_float(valid.get("accuracy")))
        curves.epoch_seconds.append(as_float(item.get("seconds")))
    test = history.get("test")
    if isinstance(test, dict) and "accuracy" in test:
        curves.test = {k: float(v) for k, v in test.items() if as_float(v) is not None}
    return curves


def curves_from_log(lines: Iterable[str], source: str) -> Curves:
    """The `[metric] epoch=N split=S loss=L accuracy=A` lines of a training log.

    A resumed job prints an epoch again: the last line for an epoch wins. Epoch times are not
    in the log, so `epoch_seconds` stays empty.
    """
    per_epoch: dict[int, dict[str, tuple[float | None, float | None]]] = {}
    test = None
    for line in lines:
        match = METRIC_LINE.search(line)
        if not match:
            continue
        values = (as_float(match["loss"]), as_float(match["accuracy"]))
        if match["epoch"] == FINAL_EPOCH:
            test = {"loss": values[0], "accuracy": values[1]}
            continue
        per_epoch.setdefault(int(match["epoch"]), {})[match["split"]] = values
    curves = Curves(source=source)
    for epoch in sorted(per_epoch):
        splits = per_epoch[epoch]
        curves.epochs.append(epoch)
        curves.train_loss.append(splits.get("train", (None, None))[0])
        curves.train_accuracy.append(splits.get("train", (None, None))[1])
        curves.valid_loss.append(splits.get("valid", (None, None))[0])
        curves.valid_accuracy.append(splits.get("valid", (None, None))[1])
    if test and test["accuracy"] is not None:
        curves.test = {k: v for k, v in test.items() if v is not None}
    return curves


def last_epoch(lines: Iterable[str]) -> tuple[int, dict[str, float]] | None:
    """The newest completed epoch in a log and its metrics by split (for live progress)."""
    found: tuple[int, dict[str, float]] | None = None
    for line in lines:
        match = METRIC_LINE.search(line)
        if not match or match["epoch"] == FINAL_EPOCH:
            continue
        epoch = int(match["epoch"])
        if found is None or epoch != found[0]:
            found = (epoch, {})
        for name in ("loss", "accuracy"):
            value = as_float(match[name])
            if value is not None:
                found[1][f"{match['split']}:{name}"] = value
    return found
