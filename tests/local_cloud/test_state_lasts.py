"""State that lasts: a crash (kill -9) and `mlops down`/`up` bring the local cloud back as it was.

One tiny pipeline reaches SUCCEEDED; the cloud is killed with SIGKILL while a second run works;
after `up` the first run (execution history, run records, model, endpoint answering over the
API with the same key) is back, the second run is ABORTED with a cause, and a third upload of
the same data set runs to SUCCEEDED. Then the same with a clean `mlops down` in the middle of a
fourth run. Every cloud this test starts is stopped, also when it fails.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from pipeline_report import executions as ex

from mlops.cli import main as mlops_main
from mlops.local.cloud_info import load_info
from mlops.local.moto_state import STOPPED_ERROR
from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import local_target
from tests.support.runs import tiny_run
from tests.support.waiting import wait_for

# The smallest pipeline that still trains, gates and deploys: one trial of one epoch.
PARAMETERS = tiny_run(max_jobs=1, epochs=1)
RUN_TIMEOUT_S = 900

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data") / "digits"
    write_digits(directory, max_per_class=10, seed=3)  # 6/2/2: the minimums ValidateDataset asks
    return directory


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "state"
    yield root
    info = load_info(root)
    if info is not None:  # a cloud `mlops up` started and the test did not stop
        mlops_main(["down", "--root", str(root)])


def run_to_end(target, digits: Path) -> ex.ExecutionView:
    execution = upload_dataset(target, digits, "digits")
    sfn = target.client("stepfunctions")
    return follow(sfn, execution["executionArn"], poll_s=1.0, timeout_s=RUN_TIMEOUT_S)


def start_run_and_wait_for_training(target, digits: Path) -> str:
    """Upload; return the execution ARN once it waits for its tuning job (a training runs)."""
    execution = upload_dataset(target, digits, "digits")
    sfn = target.client("stepfunctions")
    history = ex.History(execution["executionArn"])

    def at_check_tuning() -> bool:
        view = ex.describe(sfn, execution["executionArn"], history)
        assert view.status == "RUNNING", f"{view.status}: {view.error}: {view.cause}"
        return any(step.name == "CheckTuning" for step in view.steps)

    wait_for(at_check_tuning, RUN_TIMEOUT_S, "the execution to reach CheckTuning", interval=0.5)
    return execution["executionArn"]


def predict(target, digits: Path) -> requests.Response:
    image = next((digits / "test" / "003.three").iterdir())
    return requests.post(
        f"{target.api_url}/predict",
        data=image.read_bytes(),
        headers={"Content-Type": "image/png", "x-api-key": target.api_key},
        timeout=60,
    )


def snapshot_of_run(target, arn: str) -> dict:
    """What must come back after a restart: execution, history, records, model, endpoint."""
    sfn = target.client("stepfunctions")
    described = sfn.describe_execution(executionArn=arn)
    events = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
    history = [(e["id"], e["type"]) for page in events for e in page["events"]]
    s3 = target.client("s3")
    records = s3.list_objects_v2(
        Bucket=target.artifacts_bucket, Prefix=f"runs/{described['name']}/"
    ).get("Contents", [])
    sagemaker = target.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=target.output("EndpointName"))
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    return {
        "status": described["status"],
        "output": described.get("output"),
        "history": history,
        "records": sorted((r["Key"], r["ETag"]) for r in records),
        "endpoint_config": endpoint["EndpointConfigName"],
        "model": config["ProductionVariants"][0]["ModelName"],
        "objects": _count_objects(s3, target.data_bucket),
        "api_key": target.api_key,
    }


def _count_objects(s3, bucket: str) -> int:
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
    return sum(len(page.get("Versions", [])) for page in pages)


def assert_back(target, arn: str, before: dict, digits: Path) -> None:
    after = snapshot_of_run(target, arn)
    assert after["status"] == "SUCCEEDED"
    for key in ("output", "history", "records", "endpoint_config", "model", "api_key"):
        assert after[key] == before[key], key
    assert after["objects"] >= before["objects"]
    endpoint = target.client("sagemaker").describe_endpoint(
        EndpointName=target.output("EndpointName")
    )
    assert endpoint["EndpointStatus"] == "InService", endpoint
    response = predict(target, digits)
    assert response.status_code == 200, response.text


def assert_stopped_clearly(target, arn: str) -> None:
    described = target.client("stepfunctions").describe_execution(executionArn=arn)
    assert described["status"] == "ABORTED", described
    assert described["error"] == STOPPED_ERROR
    assert "local cloud stopped" in described["cause"]
    pages = target.client("stepfunctions").get_paginator("get_execution_history")
    events = [e for page in pages.paginate(executionArn=arn) for e in page["events"]]
    assert events[-1]["type"] == "ExecutionAborted"


def test_state_lasts_across_kill_and_down(root, digits):
    process, _ = start_cloud_process(root, parameters=PARAMETERS)
    try:
        target = local_target(root)
        first = run_to_end(target, digits)
        assert first.status == "SUCCEEDED", f"{first.error}: {first.cause}"
        before = snapshot_of_run(target, first.arn)
        assert predict(target, digits).status_code == 200
        second = start_run_and_wait_for_training(target, digits)
        time.sleep(1.5)  # at least one snapshot while the training runs
        os.kill(process.pid, signal.SIGKILL)
    finally:
        stop_cloud_process(process)  # also kills what the dead cloud left in its group

    # 1. after kill -9
    process, _ = start_cloud_process(root, parameters=PARAMETERS)
    try:
        target = local_target(root)
        assert_back(target, first.arn, before, digits)
        assert_stopped_clearly(target, second)
        groups = target.client("logs").describe_log_groups()["logGroups"]
        assert any(group["logGroupName"].startswith("/aws/lambda/") for group in groups)
        third = run_to_end(target, digits)
        assert third.status == "SUCCEEDED", f"{third.error}: {third.cause}"
        assert third.arn not in {first.arn, second}
    finally:
        stop_cloud_process(process)

    # 2. `mlops down` in the middle of a run, then `mlops up`
    parameters = [arg for k, v in PARAMETERS.items() for arg in ("--parameter", f"{k}={v}")]
    assert mlops_main(["up", "--root", str(root), *parameters]) == 0
    target = local_target(root)
    before = snapshot_of_run(target, third.arn)
    fourth = start_run_and_wait_for_training(target, digits)
    time.sleep(1.5)
    assert mlops_main(["down", "--root", str(root)]) == 0
    assert mlops_main(["up", "--root", str(root), *parameters]) == 0
    target = local_target(root)
    assert_back(target, third.arn, before, digits)
    assert_stopped_clearly(target, fourth)
    sfn = target.client("stepfunctions")
    names = {e["name"] for e in ex.list_executions(sfn, target.state_machine_arn)}
    assert {first.name, third.name} <= names and len(names) == 4
    fifth = upload_dataset(target, digits, "digits")  # the same data set starts a new run
    assert fifth["name"] not in names
    assert mlops_main(["down", "--root", str(root)]) == 0
