"""Build one execution's report: collect the data, draw the figures, render one HTML file.

Used by `mlops report` (written to a folder) and by `mlops console` (served on demand). A
figure that cannot be drawn from what the run produced is left out, with the reason in the
report's notes, so a failed run still gets a report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_report import analysis as an
from pipeline_report import executions as ex
from pipeline_report import plots
from pipeline_report.collect import RunData, collect
from pipeline_report.render import render, report_json
from pipeline_report.target import Target

log = logging.getLogger(__name__)


@dataclass
class Report:
    html: str
    data: RunData
    plots: dict[str, bytes]

    def to_json(self) -> dict[str, Any]:
        return report_json(self.data, self.plots)


def draw(data: RunData) -> dict[str, bytes]:
    """Every figure the data supports, by name."""
    figures: dict[str, bytes] = {}
    if data.timeline:
        figures["gantt"] = plots.gantt(data.timeline)
    if data.tuning and data.tuning.trials:
        figures.update(tuning_figures(data.tuning))
    retrain = data.retrain
    if retrain and retrain.curves and retrain.curves.epochs:
        figures["training_curves"] = plots.training_curves(retrain.curves)
        if any(retrain.curves.epoch_seconds):
            figures["epoch_times"] = plots.epoch_times(
                retrain.curves.epochs, retrain.curves.epoch_seconds
            )
    if retrain and retrain.profile and retrain.profile.times_s:
        profile = retrain.profile
        figures["system_profile"] = plots.system_profile(
            profile.times_s,
            profile.cpu_percent,
            profile.memory_mib,
            profile.gpu_percent,
            profile.cpu_count,
            profile.memory_percent,
        )
    confusion = retrain.confusion if retrain else None
    if confusion and confusion.images:
        figures["confusion_matrix"] = plots.confusion_matrix(confusion.matrix, confusion.labels)
    return figures


def tuning_figures(tuning: Any) -> dict[str, bytes]:
    ordered = an.trial_order(tuning.trials)
    values = [t["objective"] if an.is_scored(t) else None for t in ordered]
    figures = {
        "objective_by_trial": plots.objective_by_trial(
            values, tuning.objective_metric, tuning.objective_type
        )
    }
    if tuning.learning_rate:
        points = [
            (an.as_float(t["hyperparameters"].get(tuning.learning_rate)), t["objective"])
            for t in ordered
            if an.is_scored(t)
        ]
        points = [(rate, value) for rate, value in points if rate is not None and rate > 0]
        if points:
            figures["objective_by_lr"] = plots.objective_by_learning_rate(
                [p[0] for p in points],
                [p[1] for p in points],
                tuning.objective_metric,
                tuning.learning_rate_log,
                tuning.learning_rate,
                tuning.learning_rate_range,
            )
    return figures


def build_report(target: Target, ident: str) -> Report:
    """The report of execution `ident` (`latest`, a name or an ARN).

    Raises LookupError naming the execution when it does not exist.
    """
    sfn = target.client("stepfunctions")
    arn = (
        ident
        if ident.startswith("arn:")
        else (ex.resolve_execution_arn(sfn, target.state_machine_arn, ident))
    )  # an ARN needs no state machine: the pipeline's own Lambda passes one
    data = collect(target, ex.describe(sfn, arn))
    figures = draw(data)
    return Report(html=render(data, figures), data=data, plots=figures)


def write_report(target: Target, ident: str, out_dir: Path) -> tuple[Path, Report]:
    """Write `<out_dir>/<execution>.html` and return its path."""
    report = build_report(target, ident)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report.data.view.name}.html"
    path.write_text(report.html, encoding="utf-8")
    return path, report
