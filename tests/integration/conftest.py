"""Fixtures for the state machine path tests (moto's Step Functions interpreter)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from tests.integration import pipeline_harness
from tests.support import template as sam_template
from tests.support.lambda_env import set_lambda_environment

sys.path.insert(0, str(sam_template.layer_path()))  # pipeline_common, as inside Lambda


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Lambda runtime sets, minus anything that could reach a real account."""
    set_lambda_environment(monkeypatch)


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
