"""AWS's request limits at the local API and the local Lambda runtime, on the toy template.

The toy cloud runs as its own process (as `mlops up` starts it): the API in front of the real
Lambda runtime seam, so a limit crossed here fails the way AWS fails (docs/limits.md has the
sources), and the memory measured is that of the process serving the API. Everything is
stopped at the end of the module, also when a test fails.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest
import requests
from botocore.exceptions import ClientError

from mlops.local.cloud_info import CloudInfo
from mlops.local.lambda_runtime import SYNC_REQUEST_LIMIT_BYTES, SYNC_RESPONSE_LIMIT_BYTES
from mlops.local.process import start_cloud_process, stop_cloud_process

TOY = Path(__file__).parent / "toy" / "template.yaml"
MIB = 1024 * 1024
PNG_HEADER = b"\x89PNG\r\n\x1a\n"
MEMORY_GROWTH_LIMIT = 20 * MIB


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudInfo]:
    root = tmp_path_factory.mktemp("toy-api-cloud")
    process, info = start_cloud_process(root, template=TOY)
    try:
        yield info
    finally:
        stop_cloud_process(process)


@pytest.fixture(scope="module")
def lambda_client(cloud: CloudInfo):
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=cloud.region
    )
    return session.client("lambda", endpoint_url=cloud.moto_url)


def echo(cloud: CloudInfo, body, key: str | None = "default", query: str = "", **headers):
    headers = {"Content-Type": "image/png", **headers}
    if key is not None:
        headers["x-api-key"] = cloud.api_key if key == "default" else key
    url = f"{cloud.api_url}/echo{query}"
    return requests.post(url, data=body, headers=headers, timeout=120)


def toy_function(cloud: CloudInfo) -> str:
    return cloud.deployment["functions"]["ToyFunction"]


def image_of(size: int) -> bytes:
    return PNG_HEADER + b"\x01" * (size - len(PNG_HEADER))


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_api_image_of_4_mib_reaches_the_function(cloud: CloudInfo) -> None:
    """4 MiB base64-encoded is about 5.6 MB of event: under Lambda's 6 MB."""
    response = echo(cloud, image_of(4 * MIB))

    assert response.status_code == 200, response.text
    encoded_length = len(base64.b64encode(b"x" * 4 * MIB))
    assert response.json() == {"isBase64Encoded": True, "length": encoded_length}


def test_api_image_of_5_mib_gets_api_gateways_413(cloud: CloudInfo) -> None:
    """5 MiB is under API Gateway's 10 MB, but base64-encoded in the event it is about 7 MB:
    Lambda refuses the invocation and API Gateway answers 413 "Request Too Long"."""
    response = echo(cloud, image_of(5 * MIB))

    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}
    assert response.headers["Content-Type"] == "application/json"


def test_lambda_invoke_over_6_mb_is_request_entity_too_large(cloud, lambda_client) -> None:
    payload = json.dumps({"padding": "x" * SYNC_REQUEST_LIMIT_BYTES}).encode()

    with pytest.raises(ClientError) as raised:
        lambda_client.invoke(FunctionName=toy_function(cloud), Payload=payload)

    error = raised.value.response
    assert error["Error"]["Code"] == "RequestEntityTooLargeException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert str(SYNC_REQUEST_LIMIT_BYTES) in error["Error"]["Message"]


def test_lambda_invoke_at_6_mb_runs(cloud, lambda_client) -> None:
    padding = "x" * (SYNC_REQUEST_LIMIT_BYTES - len(json.dumps({"padding": ""})))
    payload = json.dumps({"padding": padding}).encode()
    assert len(payload) == SYNC_REQUEST_LIMIT_BYTES

    response = lambda_client.invoke(FunctionName=toy_function(cloud), Payload=payload)

    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read())["greeting"]


def test_api_function_answer_over_6_mb_is_a_502(cloud: CloudInfo, lambda_client) -> None:
    over = SYNC_RESPONSE_LIMIT_BYTES  # the body alone; the proxy response around it adds more

    response = echo(cloud, b"x", query=f"?respond_bytes={over}")

    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}


def test_lambda_answer_over_6_mb_is_function_response_size_too_large(cloud, lambda_client) -> None:
    event = {"httpMethod": "POST", "queryStringParameters": {"respond_bytes": "6300000"}}

    response = lambda_client.invoke(
        FunctionName=toy_function(cloud), Payload=json.dumps(event).encode()
    )

    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert str(SYNC_RESPONSE_LIMIT_BYTES) in error["errorMessage"]


def test_api_chunked_upload_reaches_the_function(cloud: CloudInfo) -> None:
    image = image_of(300_000)
    pieces = (image[i : i + 4096] for i in range(0, len(image), 4096))

    response = echo(cloud, pieces)

    assert response.status_code == 200, response.text
    assert response.json()["length"] == len(base64.b64encode(image))


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_api_unauthenticated_100_mb_is_refused_in_constant_memory(
    cloud: CloudInfo, framing: str
) -> None:
    piece = b"\0" * MIB
    body = piece * 100 if framing == "content-length" else (piece for _ in range(100))
    echo(cloud, b"warm", key="wrong")  # the first answer allocates what every answer needs
    before = rss(cloud.pid)

    response = echo(cloud, body, key="wrong")

    growth = rss(cloud.pid) - before
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}
    assert growth < MEMORY_GROWTH_LIMIT, f"the cloud grew by {growth / MIB:.1f} MiB"
