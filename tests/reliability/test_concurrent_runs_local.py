"""Three data sets uploaded at the same time, on the local cloud (slow).

All three executions must finish, their endpoint updates must take turns (EndpointBusy retried
by the state machine), and the endpoint must end on the model approved last: a run whose
model was approved before the one already serving records itself as superseded instead of
rolling the endpoint back in time. No update is lost: every run either put its model on the
endpoint and smoke-tested it, or names the newer model that serves instead (recorded by
DeployEndpoint as ``superseded``, or seen by CheckEndpoint when a newer run's update followed
this run's before it looked again).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pipeline_report import executions as ex
from pipeline_report.collect import step_output

from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import Target, local_target

from .helpers import FAST_PIPELINE_PARAMETERS, Api

PARAMETERS = {
    **FAST_PIPELINE_PARAMETERS,
    "MaxJobs": "1",
    # Each blue/green update keeps the endpoint Updating for a minute (AWS's baking period),
    # so runs approved within that minute meet a busy endpoint and must take turns.
    "DeploymentBakeSeconds": "60",
}
DATASETS = ("conca", "concb", "concc")
PER_CLASS = 10
EXECUTION_TIMEOUT_S = 1500
DEPLOYED = {"created", "updated"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


class Run:
    """One execution and what it recorded about its deployment."""

    def __init__(self, target: Target, view: ex.ExecutionView) -> None:
        self.view = view
        s3 = target.client("s3")
        key = f"runs/{view.name}/deployment.json"
        body = s3.get_object(Bucket=target.artifacts_bucket, Key=key)["Body"].read()
        self.deployment: dict[str, Any] = json.loads(body)
        self.approved_at = approval_time(target, self.deployment["endpoint_config_name"])

    @property
    def operation(self) -> str:
        return self.deployment["operation"]

    @property
    def config(self) -> str:
        return self.deployment["endpoint_config_name"]


def approval_time(target: Target, config: str) -> datetime:
    """The mlops:approved-at tag deploy_endpoint put on the run's endpoint config."""
    sagemaker = target.client("sagemaker")
    arn = sagemaker.describe_endpoint_config(EndpointConfigName=config)["EndpointConfigArn"]
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=arn)["Tags"]}
    return datetime.fromisoformat(tags["mlops:approved-at"])


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(target, api, digits folder, {data set: Run}) after three simultaneous uploads."""
    root = tmp_path_factory.mktemp("concurrent-cloud")
    process, info = start_cloud_process(root, parameters=PARAMETERS)
    try:
        target = local_target(root)
        folders = {}
        for seed, name in enumerate(DATASETS):
            folders[name] = tmp_path_factory.mktemp(name) / "digits"
            write_digits(folders[name], max_per_class=PER_CLASS, seed=seed)
        with ThreadPoolExecutor(max_workers=len(DATASETS)) as pool:
            views = list(pool.map(lambda name: run(root, folders[name], name), DATASETS))
        runs = {name: Run(target, view) for name, view in zip(DATASETS, views, strict=True)}
        yield target, Api(url=info.api_url, key=info.api_key), folders[DATASETS[0]], runs
    finally:
        stop_cloud_process(process)


def run(root: Path, folder: Path, name: str) -> ex.ExecutionView:
    """Upload and follow one data set; a target (boto3 session) per thread."""
    target = local_target(root)
    execution = upload_dataset(target, folder, name)
    return follow(
        target.client("stepfunctions"),
        execution["executionArn"],
        poll_s=2.0,
        timeout_s=EXECUTION_TIMEOUT_S,
    )


def history_text(target: Target, view: ex.ExecutionView) -> str:
    sfn = target.client("stepfunctions")
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=view.arn)
    return json.dumps([event for page in pages for event in page["events"]], default=str)


def test_concurrent_uploads_all_finish(concurrent: Any) -> None:
    _, _, _, runs = concurrent

    for name, item in runs.items():
        assert item.view.status == "SUCCEEDED", f"{name}: {item.view.error}: {item.view.cause}"


def test_concurrent_updates_end_on_the_model_approved_last(concurrent: Any) -> None:
    target, api, digits, runs = concurrent
    last = max(runs.values(), key=lambda item: item.approved_at)
    sagemaker = target.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=target.output("EndpointName"))

    assert last.operation in DEPLOYED
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == (
        "InService",
        last.config,
    )
    image = sorted((digits / "test" / "003.three").iterdir())[0].read_bytes()
    assert api.post(image).status_code == 200


def test_concurrent_updates_lose_none(concurrent: Any) -> None:
    target, _, _, runs = concurrent
    by_config = {item.config: item for item in runs.values()}
    waits = {
        name: history_text(target, item.view).count('"EndpointBusy"') for name, item in runs.items()
    }
    for name, item in runs.items():  # shown with -rA: how the three runs took turns
        print(f"{name}: {item.operation}, approved {item.approved_at}, EndpointBusy x{waits[name]}")

    assert sum(waits.values()) > 0, f"no run met a busy endpoint; approvals too far apart? {waits}"

    assert [item.operation for item in runs.values()].count("created") == 1
    for name, item in runs.items():
        steps = [row.name for row in ex.summarize_steps(item.view.steps)]
        if item.operation in DEPLOYED:
            replaced_by = step_output(
                item.view, "CheckEndpoint", "endpoint_status", "superseded_by"
            )
            if replaced_by is None:
                assert "SmokeTest" in steps, name  # its model served, and answered
                continue
            # Its update finished, then a run approved later updated the endpoint before this
            # run looked again: nothing of this run's is left to smoke-test.
            newer = by_config[replaced_by]
        else:
            assert item.operation == "superseded", (name, item.deployment)
            newer = by_config[item.deployment["superseded_by"]]
        assert newer.approved_at > item.approved_at, (name, newer.view.name)
        assert "SmokeTest" not in steps, name
