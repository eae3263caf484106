"""AWS's Step Functions limits in the local interpreter (mlops.local.stepfunctions_limits)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from pipeline_report import executions as ex

from mlops.local import stepfunctions_limits
from tests.integration.pipeline_harness import fail
from tests.support.waiting import wait_for

ROLE = "arn:aws:iam::123456789012:role/sfn"


@pytest.fixture
def limits():
    uninstall = stepfunctions_limits.install()
    try:
        yield
    finally:
        uninstall()


def run(definition: dict, execution_input: dict, timeout_s: float = 120) -> tuple[dict, list]:
    sfn = boto3.client("stepfunctions")
    arn = sfn.create_state_machine(name="limits", definition=json.dumps(definition), roleArn=ROLE)[
        "stateMachineArn"
    ]
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps(execution_input))
    described = wait_for(
        lambda: sfn.describe_execution(executionArn=execution["executionArn"]),
        timeout_s,
        "the execution to end",
        done=lambda d: d["status"] != "RUNNING",
        interval=0.2,
    )
    events = []
    kwargs = {"executionArn": execution["executionArn"], "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events += page["events"]
        if "nextToken" not in page:
            return described, events
        kwargs["nextToken"] = page["nextToken"]


def counting_loop(turns: int) -> tuple[dict, dict]:
    """A Pass/Choice loop of `turns` turns (4 events a turn) and its input."""
    definition = {
        "StartAt": "Count",
        "States": {
            "Count": {
                "Type": "Pass",
                "Parameters": {"n.$": "States.MathAdd($.n, 1)", "limit.$": "$.limit"},
                "Next": "More",
            },
            "More": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericLessThanPath": "$.limit", "Next": "Count"}],
                "Default": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
    }
    return definition, {"n": 0, "limit": turns}


@pytest.fixture
def aws_env(monkeypatch):
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)


def test_pipeline_data_limit_exceeded_is_not_caught_by_states_all(pipeline, limits):
    """A Lambda result over 256 KiB ends the execution: States.ALL does not catch it on AWS."""
    pipeline.scripts["FindBestFunction"] = lambda _payload: {"padding": "x" * 300_000}

    execution = pipeline.run()

    assert execution.status == "FAILED"
    assert execution.error == "States.DataLimitExceeded"
    assert "NotifyFailure" not in execution.states


def test_pipeline_other_errors_are_still_caught_with_the_limits_installed(pipeline, limits):
    pipeline.scripts["EvaluateRulesFunction"] = fail("KeyError", "'ModelArtifacts'")

    execution = pipeline.run()

    assert "NotifyFailure" in execution.states
    assert execution.error == "KeyError"


@pytest.mark.slow  # about 25,000 events through the interpreter, twice
@pytest.mark.parametrize("iterations, status", [(6_000, "SUCCEEDED"), (6_300, "FAILED")])
def test_execution_history_holds_at_most_25000_events(limits, aws_env, iterations, status):
    """A Pass/Choice loop writes 4 events per turn: 6,000 turns fit, 6,300 do not."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        described, events = run(*counting_loop(iterations), timeout_s=300)

    assert described["status"] == status
    if status == "FAILED":
        assert len(events) == stepfunctions_limits.MAX_HISTORY_EVENTS
        assert events[-1]["type"] == "ExecutionFailed"
        details = events[-1]["executionFailedEventDetails"]
        assert details["error"] == "States.Runtime"
        assert "25000" in details["cause"]
    else:
        assert len(events) < stepfunctions_limits.MAX_HISTORY_EVENTS


def test_execution_history_is_paged_as_aws_pages_it(limits, aws_env):
    """Default page 100, `maxResults`, `reverseOrder`, and tokens that stay valid."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        described, events = run(*counting_loop(60))
        sfn = boto3.client("stepfunctions")
        arn = described["executionArn"]
        ids = [event["id"] for event in events]
        assert ids == list(range(1, len(ids) + 1)) and len(ids) > 240

        first = sfn.get_execution_history(executionArn=arn)
        assert [e["id"] for e in first["events"]] == ids[:100] and "nextToken" in first

        newest = sfn.get_execution_history(executionArn=arn, maxResults=10, reverseOrder=True)
        assert [e["id"] for e in newest["events"]] == ids[::-1][:10]
        older = sfn.get_execution_history(
            executionArn=arn, maxResults=10, reverseOrder=True, nextToken=newest["nextToken"]
        )
        assert [e["id"] for e in older["events"]] == ids[::-1][10:20]

        whole = sfn.get_execution_history(executionArn=arn, maxResults=1000)
        assert len(whole["events"]) == len(ids) and "nextToken" not in whole

        with pytest.raises(sfn.exceptions.InvalidToken):
            sfn.get_execution_history(executionArn=arn, nextToken="not-a-token")
        with pytest.raises(sfn.exceptions.InvalidToken):  # a newest-first token, read oldest first
            sfn.get_execution_history(executionArn=arn, nextToken=newest["nextToken"])


def test_history_reader_reads_only_new_events_after_the_first_read(limits, aws_env):
    """executions.History: the same events as a full read, and a second read of a finished
    execution asks for one short newest-first page instead of every event again."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        described, events = run(*counting_loop(60))
        sfn = boto3.client("stepfunctions")
        arn = described["executionArn"]
        history = ex.History(arn)
        partial = history.read(sfn)[:-30]  # as if the first read came 30 events earlier
        history.events = list(partial)
        served: list[int] = []
        sfn.meta.events.register(
            "after-call.sfn.GetExecutionHistory",
            lambda parsed, **_: served.append(len(parsed["events"])),
        )

        assert history.read(sfn) == events
        assert sum(served) <= 30 + ex.NEW_EVENTS_PAGE
        served.clear()
        assert history.read(sfn) == events
        assert served == [ex.NEW_EVENTS_PAGE]
