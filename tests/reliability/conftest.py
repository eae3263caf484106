"""Fixtures of the reliability tests: one local cloud with a real model behind the endpoint.

The serving cloud is shared by every API test of a session (bad input, fuzzing, load, logs):
train.py runs one epoch on tiny digits while the cloud starts, the model is deployed with boto3
without a pipeline run, and everything is stopped at the end, also when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops.local.cloud_info import CloudInfo
from mlops.local.process import start_cloud_process
from mlops.target import Target, local_target
from tests.support.datasets import write_tiny_digits

from .helpers import (
    Api,
    deploy_model,
    finish_training,
    model_archive,
    start_tiny_training,
    stop_all,
)

# The usage plan's throttle raised to API Gateway's account-level defaults (10,000 requests/s,
# burst 5,000) for the shared serving cloud: the issue asks for 0 errors at 2,000 requests at
# concurrency 32 (test_api_load.py), and the fuzzer sends hundreds of requests back to back; on
# AWS the user would raise the usage plan the same way (ApiRateLimit/ApiBurstLimit at deploy
# time). test_api_throttle.py shows the template's defaults (20/s, burst 40) answering 429s.
LOAD_LIMITS = {"ApiRateLimit": "10000", "ApiBurstLimit": "5000"}


@dataclass
class ServingCloud:
    root: Path
    info: CloudInfo
    target: Target
    api: Api
    endpoint: str
    digits: Path


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 digits per class (6 train, 2 valid, 2 test) as 16x16 PNGs."""
    return write_tiny_digits(tmp_path_factory.mktemp("reliability-digits"))


@pytest.fixture(scope="session")
def serving_cloud(
    tmp_path_factory: pytest.TempPathFactory, tiny_digits: Path
) -> Iterator[ServingCloud]:
    work = tmp_path_factory.mktemp("reliability-train")
    training = start_tiny_training(tiny_digits, work)
    root = tmp_path_factory.mktemp("reliability-cloud")
    process = None
    try:
        process, info = start_cloud_process(root, parameters=LOAD_LIMITS)
        target = local_target(root)
        archive = model_archive(finish_training(training, work))
        parameters = info.deployment["parameters"]
        endpoint = deploy_model(target, parameters, archive, "mlops-reliability-1")
        yield ServingCloud(
            root=root,
            info=info,
            target=target,
            api=Api(url=info.api_url, key=info.api_key),
            endpoint=endpoint,
            digits=tiny_digits,
        )
    finally:
        stop_all(training, process)


@pytest.fixture(scope="session")
def api(serving_cloud: ServingCloud) -> Api:
    return serving_cloud.api


@pytest.fixture(scope="session")
def digit_png(tiny_digits: Path) -> bytes:
    return sorted((tiny_digits / "test" / "003.three").iterdir())[0].read_bytes()
