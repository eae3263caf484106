"""Everything one report shows, read from what the run left behind (local cloud or AWS alike).

Sources: the execution history (states, errors), the run records the pipeline wrote
(`runs/<execution>/`, records.py), and what SageMaker says about the run's jobs and endpoint
(describe.py), including what the retrain recorded in its output.tar.gz (history.json,
confusion.json, the system profile: profile.py). The report only reads: it invokes nothing.
What a run never produced (a failed run stops early) becomes a note, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline_common import records as names

from pipeline_report import analysis as an
from pipeline_report import executions as ex
from pipeline_report.describe import (
    Endpoint,
    Retrain,
    Tuning,
    collect_endpoint,
    collect_retrain,
    collect_tuning,
)
from pipeline_report.lineage import Link, link_region, run_lineage
from pipeline_report.records import read_records
from pipeline_report.target import Target


@dataclass
class RunData:
    """What the report shows; `notes` says what is missing and why."""

    view: ex.ExecutionView
    target_name: str
    generated: datetime
    timeline: list[an.TimelineRow]
    records: dict[str, dict[str, Any] | None]
    tuning: Tuning | None = None
    retrain: Retrain | None = None
    endpoint: Endpoint | None = None
    notes: list[str] = field(default_factory=list)
    lineage: list[Link] = field(default_factory=list)  # of the version the run registered
    link_region: str | None = None  # where links lead: an AWS console region, None locally

    @property
    def gate(self) -> dict[str, Any] | None:
        return self.records.get(names.GATE)


# -- execution ------------------------------------------------------------------------------------
def step_output(view: ex.ExecutionView, state: str, *path: str) -> Any:
    """A value from the output of the last visit of `state` (None when it never finished)."""
    value: Any = next(
        (s.output for s in reversed(view.steps) if s.name == state and s.output), None
    )
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def collect(target: Target, view: ex.ExecutionView) -> RunData:
    """Read everything about one execution."""
    now = datetime.now(UTC)
    data = RunData(
        view=view,
        target_name=target.name,
        generated=now,
        timeline=an.timeline(view.steps, view.started, view.stopped or now),
        records=read_records(target, view.name),
        link_region=link_region(target),
    )
    sagemaker = target.client("sagemaker")
    leaderboard = data.records.get(names.LEADERBOARD)
    tuning_name = (leaderboard or {}).get("tuning_job_name") or (
        step_output(view, "StartTuning", "tuning", "job_name")
    )
    if tuning_name:
        data.tuning = collect_tuning(sagemaker, tuning_name, leaderboard)
    else:
        data.notes.append("No tuning job: the execution ended before StartTuning.")
    retrain_name = (data.gate or {}).get("training_job_name") or step_output(
        view, "StartProfiledTraining", "training", "job_name"
    )
    if retrain_name:
        data.retrain = collect_retrain(target, retrain_name, data.notes)
    else:
        data.notes.append("No profiled retrain: the execution ended before it started.")
    deployment = data.records.get(names.DEPLOYMENT)
    if deployment:
        data.endpoint = collect_endpoint(target, deployment, data.notes)
    else:
        data.notes.append("No deployment: this run did not deploy a model.")
    registration = data.records.get(names.REGISTRATION)
    if registration and registration.get("model_package_arn"):
        data.lineage = run_lineage(target, registration["model_package_arn"], data.notes)
    return data
