"""Shutdown leaves nothing running: jobs, tuning workers and model servers all stop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from mlops.local.sagemaker.processes import live_process_count
from tests.support.waiting import wait_for

from .helpers import (
    REGION,
    hyperparameters,
    make_config,
    training_request,
    tuning_request,
    wait_endpoint,
)

pytestmark = pytest.mark.timeout(120)


def test_shutdown_stops_tuning_jobs_training_jobs_and_model_servers(
    service_factory: Any, s3: Any
) -> None:
    service = service_factory()
    sm = boto3.client("sagemaker", endpoint_url=service.url, region_name=REGION)
    sm.create_endpoint(EndpointName="ep-life", EndpointConfigName=make_config(sm, s3, "l1"))
    assert wait_endpoint(sm, "ep-life")["EndpointStatus"] == "InService"
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(
            "tune-life",
            strategy="Random",
            max_jobs=6,
            max_parallel=2,
            static={"epochs": 500, "epoch-seconds": 0.1},
        )
    )
    sm.create_training_job(
        **training_request(
            "tj-life", HyperParameters=hyperparameters(epochs=500, **{"epoch-seconds": 0.1})
        )
    )
    # a model server and two training scripts (the service runs two jobs at once)
    wait_for(live_process_count, 20, "a model server and two trainings", done=lambda n: n >= 3)

    started = time.monotonic()
    service.shutdown()

    assert time.monotonic() - started < 30
    assert live_process_count() == 0
    tuning = service.backend.tuning_jobs["tune-life"]
    assert tuning.status == "Stopped"
    assert all(job.is_terminal for job in service.backend.training_jobs.values())
    alive = [t.name for t in threading.enumerate() if t.name.startswith(("tuning-", "training-"))]
    assert alive == []


def test_delete_while_creating_cancels_the_deployment(sm: Any, s3: Any) -> None:
    sm.create_endpoint(
        EndpointName="ep-cancel",
        EndpointConfigName=make_config(sm, s3, "k1", load_seconds=30),
    )
    wait_for(live_process_count, 20, "the model server of ep-cancel to start")
    sm.delete_endpoint(EndpointName="ep-cancel")
    wait_for(live_process_count, 20, "no model server left", done=lambda count: count == 0)


def test_standalone_service_serves_until_sigterm(tmp_path: Path, aws_env: None) -> None:
    url_file = tmp_path / "url"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops.local.sagemaker",
            "--state-dir",
            str(tmp_path / "state"),
            "--url-file",
            str(url_file),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(url_file.exists, 30, f"the service to write its URL to {url_file}")
        sm = boto3.client("sagemaker", endpoint_url=url_file.read_text(), region_name=REGION)
        assert sm.list_endpoints()["Endpoints"] == []
    finally:
        process.terminate()
        assert process.wait(20) == 0
