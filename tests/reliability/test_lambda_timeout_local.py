"""A Lambda timeout inside a whole pipeline on the local cloud (slow), through a fault only.

``lambda_hang`` makes the local Lambda worker block instead of calling the handler, so the
runtime's real Timeout enforcement fires (the template's Timeout, the worker killed,
``Sandbox.Timedout``). StartTuning is the function hung: it is the earliest one with the
template's default 60 s Timeout (ValidateDataset has 900 s), and it hangs before the handler
creates the tuning job, so nothing trains. Two clouds run at the same time, one per fault spec:

- hanga, ``lambda_hang=StartTuning``: both attempts time out (the first and the one retry of
  Sandbox.Timedout), the Catch notifies over SNS and the run ends in PipelineFailed; no tuning
  job exists.
- hangb, ``lambda_hang=StartTuning:1``: only the first attempt times out; the retry creates
  the tuning job and the run goes on (checked up to there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from pipeline_report import executions as ex

from mlops.local.faults import FAULTS_ENV
from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import Target, local_target
from tests.support.waiting import wait_for

from .helpers import FAST_PIPELINE_PARAMETERS as PARAMETERS
from .helpers import subscribe_queue

HUNG_STATE = "StartTuning"
HUNG_FUNCTION = "StartTuningFunction"
CASES = {"hanga": f"lambda_hang={HUNG_STATE}", "hangb": f"lambda_hang={HUNG_STATE}:1"}
PER_CLASS = 10
EXECUTION_TIMEOUT_S = 600

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@dataclass
class HangRun:
    """One cloud started with one fault spec, and the execution its upload started."""

    dataset: str
    target: Target
    arn: str
    queue_url: str
    timeout_s: int

    @property
    def timeout_message(self) -> str:
        """What the local runtime (and AWS Lambda) says when the function's Timeout expires."""
        return f"Task timed out after {self.timeout_s:.2f} seconds"


@pytest.fixture(scope="module")
def hang_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, HangRun]]:
    """Both clouds started and both data sets uploaded before any test waits on a timeout."""
    digits = tmp_path_factory.mktemp("hang-data") / "digits"
    write_digits(digits, max_per_class=PER_CLASS, seed=5)
    processes = []
    try:
        runs: dict[str, HangRun] = {}
        for dataset, faults in CASES.items():
            root = tmp_path_factory.mktemp(f"{dataset}-cloud")
            process, info = start_cloud_process(
                root, parameters=PARAMETERS, extra_env={FAULTS_ENV: faults}
            )
            processes.append(process)
            target = local_target(root)
            function = info.deployment["functions"][HUNG_FUNCTION]
            timeout_s = target.client("lambda").get_function_configuration(FunctionName=function)[
                "Timeout"
            ]
            queue_url = subscribe_queue(target)
            execution = upload_dataset(target, digits, dataset)
            runs[dataset] = HangRun(
                dataset, target, execution["executionArn"], queue_url, timeout_s
            )
        yield runs
    finally:
        for process in processes:
            stop_cloud_process(process)


def task_attempts(events: list[dict[str, Any]], state: str) -> list[tuple[str, float]]:
    """(outcome, seconds) of each attempt of one Task state: "SUCCEEDED" or the error name."""
    attempts: list[tuple[str, float]] = []
    inside, scheduled = False, None
    for event in events:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            inside = event["stateEnteredEventDetails"]["name"] == state
        elif not inside:
            continue
        elif kind == "TaskScheduled":
            scheduled = event["timestamp"]
        elif kind in ("TaskSucceeded", "TaskFailed", "TaskTimedOut") and scheduled is not None:
            outcome = (
                "SUCCEEDED" if kind == "TaskSucceeded" else event["taskFailedEventDetails"]["error"]
            )
            attempts.append((outcome, seconds_between(scheduled, event["timestamp"])))
            scheduled = None
    return attempts


def seconds_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def notifications(run: HangRun) -> list[str]:
    """The SNS messages that reached the run's queue (the topic's subscribers get the same)."""
    sqs = run.target.client("sqs")
    messages: list[str] = []
    deadline = time.time() + 30
    while time.time() < deadline and not messages:
        batch = sqs.receive_message(
            QueueUrl=run.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        messages += [json.loads(m["Body"]).get("Message", m["Body"]) for m in batch]
    return messages


def tuning_jobs(run: HangRun) -> list[str]:
    sagemaker = run.target.client("sagemaker")
    summaries = sagemaker.list_hyper_parameter_tuning_jobs(NameContains=run.dataset)
    return [
        job["HyperParameterTuningJobName"] for job in summaries["HyperParameterTuningJobSummaries"]
    ]


def test_lambda_timeout_is_retried_once_then_caught_notified_and_failed(
    hang_runs: dict[str, HangRun],
) -> None:
    run = hang_runs["hanga"]
    sfn = run.target.client("stepfunctions")

    view = follow(sfn, run.arn, poll_s=2.0, timeout_s=EXECUTION_TIMEOUT_S)
    attempts = task_attempts(ex.full_history(sfn, run.arn), HUNG_STATE)
    [hung] = [step for step in view.steps if step.name == HUNG_STATE]
    names = [row.name for row in ex.summarize_steps(view.steps)]

    assert view.status == "FAILED"
    assert view.error == "Sandbox.Timedout", f"{view.error}: {view.cause}"
    assert run.timeout_message in (view.cause or ""), view.cause
    assert [outcome for outcome, _ in attempts] == ["Sandbox.Timedout", "Sandbox.Timedout"]
    # each attempt waited out the function's Timeout: the runtime's own timer, no shortcut
    assert all(seconds >= run.timeout_s for _, seconds in attempts), attempts
    assert (hung.attempts, hung.status, hung.error) == (2, "CAUGHT", "Sandbox.Timedout")
    assert "NotifyFailure" in names
    assert names[-1] == "PipelineFailed", names
    assert tuning_jobs(run) == []
    messages = notifications(run)
    assert any(
        view.name in m and "Sandbox.Timedout" in m and run.timeout_message in m for m in messages
    ), messages


def ended_hung_state(view: ex.ExecutionView) -> list:
    return [s for s in view.steps if s.name == HUNG_STATE and s.ended is not None]


def test_lambda_timeout_once_is_cured_by_the_retry_and_the_run_goes_on(
    hang_runs: dict[str, HangRun],
) -> None:
    run = hang_runs["hangb"]
    sfn = run.target.client("stepfunctions")
    history = ex.History(run.arn)

    view = wait_for(
        lambda: ex.describe(sfn, run.arn, history),
        EXECUTION_TIMEOUT_S,
        f"{HUNG_STATE} of {run.arn} to end",
        done=lambda v: v.status != "RUNNING" or any(ended_hung_state(v)),
        interval=2.0,
    )
    done = ended_hung_state(view)
    attempts = task_attempts(ex.full_history(sfn, run.arn), HUNG_STATE)

    assert done, f"{HUNG_STATE} did not finish: {view.status} {view.error}: {view.cause}"
    assert (done[0].attempts, done[0].status) == (2, "SUCCEEDED")
    assert [outcome for outcome, _ in attempts] == ["Sandbox.Timedout", "SUCCEEDED"]
    assert attempts[0][1] >= run.timeout_s, attempts
    assert view.status in ("RUNNING", "SUCCEEDED"), f"{view.error}: {view.cause}"
    assert len(tuning_jobs(run)) == 1
