"""One local cloud for the report and console tests, with one succeeded and one failed run.

The cloud runs the e2e test's fast settings (2 trials of 6 epochs on 16-pixel digits); the
failed run is a data set without a valid split, which fails in ValidateDataset within seconds.
The cloud, the browser and the console are stopped in `finally`, also when a test fails.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pipeline_report import executions as ex

from mlops.local.cloud_info import CloudInfo
from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import Target, local_target
from tests.support.datasets import upload_broken_dataset
from tests.support.runs import tiny_run

FAST_PARAMETERS = tiny_run(
    max_jobs=2, epochs=6, min_test_accuracy="0.3", regression_tolerance="0.5"
)
PER_CLASS = 30
CORRUPT_IMAGE = "corrupt-0000.png"
EXECUTION_TIMEOUT_S = 1500  # a shared 2-core machine can triple the ~3 min run


@dataclass
class Runs:
    root: Path
    info: CloudInfo
    target: Target
    succeeded: ex.ExecutionView
    failed: ex.ExecutionView
    wait_output: str  # what `follow()` printed on stderr for the succeeded run


@pytest.fixture(scope="package")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("report-cloud")
    process, info = start_cloud_process(root, parameters=FAST_PARAMETERS)
    try:
        target = local_target(root)
        digits = tmp_path_factory.mktemp("digits") / "digits"
        write_digits(digits, max_per_class=PER_CLASS, seed=1)
        # A corrupt image passes validation (content is not read there); the retrain skips it.
        (digits / "train" / "000.zero" / CORRUPT_IMAGE).write_bytes(b"\x89PNG\r\n\x1a\n cut off")
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            succeeded = run_pipeline(target, digits, "digits-rep")
        failed = run_broken(target, digits)
        yield Runs(root, info, target, succeeded, failed, stderr.getvalue())
    finally:
        stop_cloud_process(process)


def run_pipeline(target: Target, directory: Path, name: str) -> ex.ExecutionView:
    execution = upload_dataset(target, directory, name)
    return follow(
        target.client("stepfunctions"),
        execution["executionArn"],
        poll_s=1.0,
        timeout_s=EXECUTION_TIMEOUT_S,
        sagemaker=target.client("sagemaker"),
        logs=target.client("logs"),
    )


def run_broken(target: Target, digits: Path) -> ex.ExecutionView:
    """Three images of one class and no valid split: DatasetInvalid in ValidateDataset."""
    execution = upload_broken_dataset(target, digits, digits.parent)
    sfn = target.client("stepfunctions")
    return follow(sfn, execution["executionArn"], poll_s=0.5, timeout_s=120)
