"""Faults on the local cloud, whole pipelines (slow): each ends somewhere clear.

One cloud serves the module, started with faults named in MLOPS_LOCAL_FAULTS that each hit one
data set's resources by name:

- relia: CreateHyperParameterTuningJob throttled 4 times (more than the Lambda's own 3 client
  attempts, so the state machine's Retry must act), trial 001 crashing, and the retrain's
  CreateTrainingJob refused once with ResourceLimitExceeded (retried after up to a minute)
  -> SUCCEEDED, serving.
- relib: the new model server never passes /ping -> the update rolls back, PipelineFailed with
  EndpointFailed; the old model keeps serving.
- relic: the profiled retrain fails -> PipelineFailed with TrainingFailed.
- relid: every trial fails -> PipelineFailed with the tuning's error.

Each failure publishes to the SNS topic (read through an SQS subscription), leaves the endpoint
on relia's config and answering over HTTP. relib, relic and relid run at the same time.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pipeline_report import executions as ex

from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import Target, local_target

from .helpers import FAST_PIPELINE_PARAMETERS as PARAMETERS
from .helpers import Api, subscribe_queue

FAULTS = (
    "throttle=CreateHyperParameterTuningJob:4,"
    "quota=CreateTrainingJob:1,"
    "training_fail=-001-|relic-retrain|relid-tune,"
    "endpoint_start_fail=relib"
)
PER_CLASS = 12
EXECUTION_TIMEOUT_S = 1200

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


class FaultCloud:
    def __init__(self, target: Target, api: Api, digits: Path, queue_url: str) -> None:
        self.target = target
        self.api = api
        self.digits = digits
        self.queue_url = queue_url
        self.views: dict[str, ex.ExecutionView] = {}
        self.messages: list[str] = []

    def start(self, name: str) -> tuple[Any, str]:
        """Upload a data set; (a Step Functions client of its own, the execution ARN)."""
        execution = upload_dataset(self.target, self.digits, name)
        return self.target.client("stepfunctions"), execution["executionArn"]

    def finish(self, name: str, sfn: Any, arn: str) -> ex.ExecutionView:
        view = follow(sfn, arn, poll_s=2.0, timeout_s=EXECUTION_TIMEOUT_S)
        self.views[name] = view
        return view

    def run(self, name: str) -> ex.ExecutionView:
        return self.finish(name, *self.start(name))

    def endpoint_config(self) -> str:
        endpoint = self.target.output("EndpointName")
        sagemaker = self.target.client("sagemaker")
        return sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]

    def notifications(self) -> list[str]:
        sqs = self.target.client("sqs")
        while True:
            batch = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if not batch:
                return self.messages
            for message in batch:
                self.messages.append(json.loads(message["Body"]).get("Message", message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="module")
def fault_cloud(tmp_path_factory: pytest.TempPathFactory) -> Any:
    digits = tmp_path_factory.mktemp("fault-data") / "digits"
    write_digits(digits, max_per_class=PER_CLASS, seed=3)
    root = tmp_path_factory.mktemp("fault-cloud")
    process, info = start_cloud_process(
        root, parameters=PARAMETERS, extra_env={"MLOPS_LOCAL_FAULTS": FAULTS}
    )
    try:
        target = local_target(root)
        api = Api(url=info.api_url, key=info.api_key)
        yield FaultCloud(target, api, digits, subscribe_queue(target))
    finally:
        stop_cloud_process(process)


def history_text(target: Target, view: ex.ExecutionView) -> str:
    sfn = target.client("stepfunctions")
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=view.arn):
        events += page["events"]
    return json.dumps(events, default=str)


def trial_statuses(target: Target, dataset: str) -> list[str]:
    sagemaker = target.client("sagemaker")
    [job] = sagemaker.list_hyper_parameter_tuning_jobs(NameContains=f"{dataset}-tune")[
        "HyperParameterTuningJobSummaries"
    ]
    trials = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=job["HyperParameterTuningJobName"]
    )["TrainingJobSummaries"]
    return sorted(t["TrainingJobStatus"] for t in trials)


def digit_png(cloud: FaultCloud) -> bytes:
    return sorted((cloud.digits / "test" / "004.four").iterdir())[0].read_bytes()


def test_faults_throttling_and_a_crashed_trial_still_deploy(fault_cloud: FaultCloud) -> None:
    view = fault_cloud.run("relia")

    assert view.status == "SUCCEEDED", f"{view.error}: {view.cause}"
    assert trial_statuses(fault_cloud.target, "relia") == ["Completed", "Failed"]
    history = history_text(fault_cloud.target, view)
    assert "SageMakerThrottled" in history
    assert '"ResourceLimitExceeded"' in history  # StartProfiledTraining's retried failure
    assert fault_cloud.api.post(digit_png(fault_cloud)).status_code == 200


@pytest.fixture(scope="module")
def failed_runs(fault_cloud: FaultCloud) -> dict[str, tuple[ex.ExecutionView, str]]:
    """relib, relic and relid at the same time, after relia deployed; with the config after."""
    serving_before = fault_cloud.endpoint_config()
    names = ("relib", "relic", "relid")
    started = [fault_cloud.start(name) for name in names]  # boto3 sessions: one thread only
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = [
            pool.submit(fault_cloud.finish, name, sfn, arn)
            for name, (sfn, arn) in zip(names, started, strict=True)
        ]
        views = {name: future.result() for name, future in zip(names, futures, strict=True)}
    return {name: (view, serving_before) for name, view in views.items()}


@pytest.mark.parametrize(
    ("dataset", "error", "cause_words"),
    [
        ("relib", "EndpointFailed", "rolled back"),
        ("relic", "TrainingFailed", "relic-retrain"),
        ("relid", "", "relid-tune"),
    ],
)
def test_faults_failed_run_ends_in_pipeline_failed_and_keeps_serving(
    fault_cloud: FaultCloud,
    failed_runs: dict[str, tuple[ex.ExecutionView, str]],
    dataset: str,
    error: str,
    cause_words: str,
) -> None:
    view, serving_before = failed_runs[dataset]

    assert view.status == "FAILED"
    assert "PipelineFailed" in [row.name for row in ex.summarize_steps(view.steps)]
    if error:
        assert view.error == error, f"{view.error}: {view.cause}"
    assert view.error in {
        "TuningFailed",
        "NoCompletedTrainingJob",
        "TrainingFailed",
        "EndpointFailed",
    }, f"{view.error}: {view.cause}"
    assert cause_words in (view.cause or ""), view.cause
    assert fault_cloud.endpoint_config() == serving_before
    assert fault_cloud.api.post(digit_png(fault_cloud)).status_code == 200
    messages = fault_cloud.notifications()
    assert any(view.name in m and view.error in m for m in messages), messages


def test_faults_every_trial_failing_fails_before_any_retrain(
    fault_cloud: FaultCloud, failed_runs: dict[str, tuple[ex.ExecutionView, str]]
) -> None:
    view, _ = failed_runs["relid"]

    assert set(trial_statuses(fault_cloud.target, "relid")) == {"Failed"}
    assert "StartProfiledTraining" not in [row.name for row in ex.summarize_steps(view.steps)]
