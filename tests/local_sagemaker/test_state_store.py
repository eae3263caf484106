"""The local SageMaker's records survive a restart: snapshot in one service, restore in another.

A completed training job (with its metrics), a tuning job, an endpoint that serves a model, and
a training job that was still running when the snapshot was taken (it comes back Failed with
the reason). The second service shares the first one's state folder, as `mlops up` does.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from mlops.local.persistence import decode_snapshot, encode_snapshot
from mlops.local.sagemaker import store
from tests.support.waiting import wait_for

from .helpers import (
    REGION,
    client_config,
    hyperparameters,
    invoke,
    make_config,
    training_request,
    tuning_request,
    wait_endpoint,
    wait_training,
    wait_tuning,
)

pytestmark = pytest.mark.timeout(180)


def clients(service: Any) -> tuple[Any, Any]:
    kwargs = {"endpoint_url": service.url, "region_name": REGION, "config": client_config()}
    return boto3.client("sagemaker", **kwargs), boto3.client("sagemaker-runtime", **kwargs)


def round_trip(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Through the same encoding as the file on disk."""
    return decode_snapshot(encode_snapshot(snapshot), None)  # type: ignore[arg-type]


def test_store_restores_jobs_endpoints_and_fails_running_jobs(service_factory, s3, tmp_path):
    first = service_factory(state_dir=tmp_path / "sm")
    sm, runtime = clients(first)
    sm.create_training_job(**training_request("done-job"))
    done = wait_training(sm, "done-job")
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    sm.create_hyper_parameter_tuning_job(**tuning_request("tune-a", max_jobs=1, max_parallel=1))
    tuned = wait_tuning(sm, "tune-a")
    config = make_config(sm, s3, "v1")
    sm.create_endpoint(EndpointName="ep-kept", EndpointConfigName=config)
    assert wait_endpoint(sm, "ep-kept")["EndpointStatus"] == "InService"
    slow = training_request(
        "slow-job", HyperParameters=hyperparameters(epochs=50, **{"epoch-seconds": 1})
    )
    sm.create_training_job(**slow)
    wait_for(
        lambda: sm.describe_training_job(TrainingJobName="slow-job")["SecondaryStatus"],
        60,
        "slow-job to be Training",
        done=lambda status: status == "Training",
    )
    snapshot = round_trip(store.snapshot(first.backend))
    first.shutdown()  # the processes are gone, as after a crash

    second = service_factory(state_dir=tmp_path / "sm")
    respawn = store.restore(second.backend, snapshot)
    assert [endpoint.name for endpoint in respawn] == ["ep-kept"]
    store.respawn_endpoints(second.backend, respawn)
    sm, runtime = clients(second)

    again = sm.describe_training_job(TrainingJobName="done-job")
    for key in ("TrainingJobStatus", "FinalMetricDataList", "SecondaryStatusTransitions"):
        assert again[key] == done[key], key
    tuned_again = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-a")
    assert tuned_again["BestTrainingJob"] == tuned["BestTrainingJob"]
    assert tuned_again["HyperParameterTuningJobStatus"] == tuned["HyperParameterTuningJobStatus"]

    stopped = sm.describe_training_job(TrainingJobName="slow-job")
    assert stopped["TrainingJobStatus"] == "Failed"
    assert "local cloud stopped" in stopped["FailureReason"]

    endpoint = wait_endpoint(sm, "ep-kept")
    assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")
    assert endpoint["EndpointConfigName"] == config
    assert invoke(runtime, "ep-kept", {"x": 2})["body"]["version"] == "v1"


def test_store_a_new_job_with_a_stale_folder_starts_clean(service, s3, tmp_path):
    """A job folder no record owns (state lost) never mixes into a new job of that name."""
    sm, _ = clients(service)
    stale = service.config.state_dir / "jobs" / "reused-name" / "output" / "tensors"
    stale.mkdir(parents=True)
    (stale / "old.txt").write_text("left over")
    sm.create_training_job(**training_request("reused-name"))
    described = wait_training(sm, "reused-name")
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert not (stale / "old.txt").exists()
