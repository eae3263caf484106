"""A cloud that does not answer in time never ends the CLI with a stack trace.

Found in a fresh clone's `make demo` on a machine at load 32: GetExecutionHistory ran past
botocore's 60 s read timeout (four tries) and `mlops demo` printed a traceback while the run
went on. `follow` now keeps following until its own deadline, and `main` turns any failed AWS
call into one line.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from mlops import cli
from mlops.runs import CliError, follow

ARN = "arn:aws:states:us-east-1:123456789012:execution:mlops-pipeline:digits-1a2b"


class SlowStepFunctions:
    """Answers DescribeExecution only after `silent` read timeouts, like a starved cloud."""

    def __init__(self, silent: int, status: str = "SUCCEEDED") -> None:
        self.silent = silent
        self.status = status
        self.calls = 0

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.silent:
            raise ReadTimeoutError(endpoint_url="http://127.0.0.1:1/")
        return {
            "executionArn": executionArn,
            "name": executionArn.rsplit(":", 1)[-1],
            "status": self.status,
            "startDate": datetime(2026, 1, 1, tzinfo=UTC),
        }

    def get_execution_history(self, **kwargs: Any) -> dict[str, Any]:
        return {"events": []}


def test_follow_goes_on_when_the_cloud_misses_a_read_timeout(capsys):
    sfn = SlowStepFunctions(silent=2)
    view = follow(sfn, ARN, poll_s=0.0, timeout_s=60)
    assert view.status == "SUCCEEDED"
    assert sfn.calls == 3
    assert capsys.readouterr().err.count("the cloud did not answer (ReadTimeoutError)") == 2


def test_follow_gives_up_at_its_deadline_with_one_actionable_line():
    sfn = SlowStepFunctions(silent=10**6)
    with pytest.raises(CliError, match=r"did not answer about digits-1a2b .*mlops wait"):
        follow(sfn, ARN, poll_s=0.0, timeout_s=0.0)


def test_main_turns_a_failed_aws_call_into_one_line(monkeypatch, capsys):
    def unreachable(args: Any) -> int:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")

    monkeypatch.setattr(cli, "cmd_executions", unreachable)
    assert cli.main(["executions"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlops: error: Could not connect to the endpoint URL")
    assert "Traceback" not in err
    assert err.count("\n") == 1
