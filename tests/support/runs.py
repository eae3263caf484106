"""Template parameters for the small pipeline runs the local-cloud tests start, and how the
tests follow those runs.

Each run still tunes, trains, gates and deploys, on 16-pixel digits with batch 16 and polling
every second; a test states only what it is about (trials, epochs, the gate's thresholds, the
rules' policy) and gets the rest from here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline_report import executions as ex

from tests.support.waiting import wait_for

# train.py's arguments for a direct run that finishes in seconds: 16x16 inputs, batches of 16
# (a ResNet still runs every layer at that size), no worker processes, no download.
TINY_TRAIN_ARGS = {
    "model": "resnet18",
    "epochs": "1",
    "batch-size": "16",
    "lr": "0.02",
    "image-size": "16",
    "hflip": "false",
    "workers": "0",
    "pretrained": "false",
}

# Every rule only warns: for tests about data, state or serving, not the rule gate.
WARN_ONLY_RULES = (
    "warn:LossNotDecreasing,VanishingGradient,PoorWeightInitialization,Overfit,"
    "Overtraining,LowGPUUtilization"
)


def tiny_run(
    *,
    max_jobs: int,
    epochs: int,
    min_test_accuracy: str = "0.0",
    regression_tolerance: str = "1.0",
    **more: str,
) -> dict[str, str]:
    """Parameter overrides for a run of `max_jobs` one-at-a-time trials of `epochs` epochs.

    The defaults approve every model; `more` adds or replaces template parameters by name.
    """
    return {
        "MaxJobs": str(max_jobs),
        "MaxParallelJobs": "1",
        "Epochs": str(epochs),
        "ImageSize": "16",
        "BatchSizes": "16",
        "LearningRateMin": "0.01",
        "LearningRateMax": "0.03",
        "PollSeconds": "1",
        "MinTestAccuracy": min_test_accuracy,
        "RegressionTolerance": regression_tolerance,
        **more,
    }


def state_names(view: ex.ExecutionView) -> list[str]:
    """The states an execution entered, in order, each loop folded into one row."""
    return [row.name for row in ex.summarize_steps(view.steps)]


def wait_for_state(target: Any, arn: str, state: str, timeout_s: float) -> ex.ExecutionView:
    """Wait until execution ``arn`` entered ``state`` (or ended); return what it looks like."""
    sfn = target.client("stepfunctions")
    history = ex.History(arn)
    return wait_for(
        lambda: ex.describe(sfn, arn, history),
        timeout_s,
        f"{arn} to reach {state}",
        done=lambda view: state in state_names(view) or view.status != "RUNNING",
        interval=1,
    )


@contextlib.contextmanager
def local_cloud(root: Path, parameters: dict[str, str]) -> Iterator[Any]:
    """A local cloud with these template parameters, as a Target; stopped also on failure."""
    from mlops.local.process import start_cloud_process, stop_cloud_process
    from mlops.target import local_target

    process, _ = start_cloud_process(root, parameters=parameters)
    try:
        yield local_target(root)
    finally:
        stop_cloud_process(process)
