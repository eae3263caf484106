"""Fixtures for the handler unit tests.

Each test loads the handler module afresh inside moto's ``mock_aws`` with the environment
that template.yaml gives that function (Globals + its own variables, resolved with test
values), so module-level boto3 clients talk to moto and a variable the code reads but the
template does not set fails here. SageMaker answers that moto cannot give (rule statuses,
metrics, endpoint states) come from botocore's Stubber, which validates every request and
response against the service model too.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import boto3
import pytest
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import sam_template  # noqa: E402

sys.path.insert(0, str(sam_template.layer_path()))

ECR = "763104351884.dkr.ecr.us-east-1.amazonaws.com"
TEST_PARAMETERS = {
    "TrainingImage": f"{ECR}/pytorch-training:2.6-gpu-py312",
    "InferenceImage": f"{ECR}/pytorch-inference:2.6-cpu-py312",
}


class FakeContext:
    """The attributes of a LambdaContext that Powertools reads."""

    function_name = "test-function"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/test-function"
    log_stream_name = "stream"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


@pytest.fixture(autouse=True)
def lambda_like_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Lambda runtime sets, minus anything that could reach a real account."""
    monkeypatch.setenv("AWS_REGION", sam_template.REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", sam_template.REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def context() -> FakeContext:
    return FakeContext()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def names() -> dict[str, str]:
    """Physical names template.yaml gives its resources (with the test parameters)."""
    return sam_template.physical_names(TEST_PARAMETERS)


@pytest.fixture
def buckets(aws: None, names: dict[str, str]) -> SimpleNamespace:
    """The data and artifacts buckets, created in moto under their template names."""
    s3 = boto3.client("s3")
    for logical_id in ("DataBucket", "ArtifactsBucket"):
        s3.create_bucket(Bucket=names[logical_id])
    return SimpleNamespace(s3=s3, data=names["DataBucket"], artifacts=names["ArtifactsBucket"])


@pytest.fixture
def load_handler(aws: None, monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleType]:
    """Import functions/<folder>/app.py with its template environment, inside the mock."""

    def load(folder: str, **parameters: str) -> ModuleType:
        logical_id = sam_template.function_for_folder(folder)
        resolver = sam_template.template_resolver({**TEST_PARAMETERS, **parameters})
        for name, value in sam_template.function_environment(logical_id, resolver).items():
            monkeypatch.setenv(name, value)
        path = ROOT / "functions" / folder / "app.py"
        spec = importlib.util.spec_from_file_location(f"{folder}_app_{uuid.uuid4().hex}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # pydantic resolves annotations through sys.modules
        spec.loader.exec_module(module)
        return module

    return load
