"""Fixtures for the local SageMaker tests: a moto server (S3, Logs), the service, clients.

Every service is shut down in a ``finally`` (through the fixture), and each test checks that no
process it started survives, so a failing test leaves nothing running.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.processes import kill_all_processes, live_process_count
from mlops.local.sagemaker.service import LocalSageMakerService

from .helpers import (
    ARTIFACTS_BUCKET,
    DATA_BUCKET,
    FIXTURE_CODE,
    REGION,
    client_config,
)

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Dummy credentials and a region for every boto3 client of the test session."""
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def moto_url(aws_env: None) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def make_sourcedir(source: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(source.glob("*.py")):
            archive.add(path, arcname=path.name)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def s3(moto_url: str) -> Any:
    client = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    for bucket in (DATA_BUCKET, ARTIFACTS_BUCKET):
        client.create_bucket(Bucket=bucket)
    for split in ("train", "valid"):
        for label in ("000.zero", "001.one"):
            for index in range(3):
                key = f"datasets/tiny/{split}/{label}/{index:04d}.txt"
                client.put_object(Bucket=DATA_BUCKET, Key=key, Body=f"{label} {index}".encode())
    client.put_object(
        Bucket=ARTIFACTS_BUCKET,
        Key="code/fixture/sourcedir.tar.gz",
        Body=make_sourcedir(FIXTURE_CODE),
    )
    return client


@pytest.fixture
def service_factory(
    moto_url: str, s3: Any, tmp_path: Path
) -> Iterator[Callable[..., LocalSageMakerService]]:
    """Start services with config overrides; all are shut down after the test."""
    started: list[LocalSageMakerService] = []

    def start(**overrides: Any) -> LocalSageMakerService:
        settings: dict[str, Any] = {
            "state_dir": tmp_path / f"state{len(started)}",
            "region": REGION,
            "max_concurrent_jobs": 2,
            "aws_endpoint_urls": {"s3": moto_url, "logs": moto_url, "cloudwatch": moto_url},
            "alarm_poll_interval_s": 0.1,
            "strict_responses": True,
            "stop_grace_s": 2.0,
            "log_flush_interval_s": 0.2,
            "resource_sample_interval_s": 0.2,
            "ping_interval_s": 0.05,
            "endpoint_start_timeout_s": 20.0,
        }
        settings.update(overrides)
        service = LocalSageMakerService(SageMakerConfig(**settings)).start()
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.shutdown()
        leftovers = live_process_count()
        kill_all_processes()
        assert leftovers == 0, f"{leftovers} processes survived the service shutdown"


@pytest.fixture
def service(service_factory: Callable[..., LocalSageMakerService]) -> LocalSageMakerService:
    return service_factory()


@pytest.fixture
def sm(service: LocalSageMakerService) -> Any:
    return boto3.client(
        "sagemaker", endpoint_url=service.url, region_name=REGION, config=client_config()
    )


@pytest.fixture
def runtime(service: LocalSageMakerService) -> Any:
    return boto3.client(
        "sagemaker-runtime", endpoint_url=service.url, region_name=REGION, config=client_config()
    )


@pytest.fixture
def cloudwatch(moto_url: str) -> Any:
    return boto3.client("cloudwatch", endpoint_url=moto_url, region_name=REGION)


@pytest.fixture
def logs(moto_url: str) -> Any:
    return boto3.client("logs", endpoint_url=moto_url, region_name=REGION)
