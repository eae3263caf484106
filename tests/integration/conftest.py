"""Fixtures for the state machine path tests (moto's Step Functions interpreter)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline_harness
import sam_template

sys.path.insert(0, str(sam_template.layer_path()))  # pipeline_common, as inside Lambda


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", sam_template.REGION)
    monkeypatch.setenv("AWS_REGION", sam_template.REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pipeline(
    aws_environment: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pipeline_harness.Pipeline]:
    """The deployed pipeline in moto, executing for real, every Lambda answered by a script."""
    active: list[pipeline_harness.Pipeline] = []
    monkeypatch.setattr(LambdaFunction, "invoke", pipeline_harness.patched_invoke(active))
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        stepfunctions, arn, function_names = pipeline_harness.deploy_resources(
            pipeline_harness.PARAMETERS
        )
        harness = pipeline_harness.Pipeline(stepfunctions, arn, function_names)
        monkeypatch.setattr(
            retrier_decl, "time", pipeline_harness.record_retry_waits(harness.sleeps)
        )
        active.append(harness)
        yield harness
