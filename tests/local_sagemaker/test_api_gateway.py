"""The local API Gateway's HTTP side: framing, API Gateway's own answers, limits, load.

The server runs in-process on 127.0.0.1 with an integration that runs a small proxy handler in
the test's process (the toy cloud tests in tests/local_cloud run the same server in front of the
real Lambda runtime). Every test stops the server it started, also on failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from mlops.local.api import ApiConfig, LambdaInvokeError, LocalApiServer
from mlops.local.deploy import ApiRoute

KEY = "the-key"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


def echo(event: dict[str, Any]) -> dict[str, Any]:
    """A proxy handler that reports what API Gateway sent it, or misbehaves when asked."""
    query = event.get("queryStringParameters") or {}
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    if "refuse" in query:
        raise LambdaInvokeError(query["refuse"], "refused by the test")
    raw = event["body"] or ""
    data = base64.b64decode(raw) if event["isBase64Encoded"] else raw.encode()
    answer = {
        "isBase64Encoded": event["isBase64Encoded"],
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "headers": sorted(event["headers"] or {}),
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(answer),
    }


def invoke(function_name: str, event: dict[str, Any]) -> tuple[Any, bool]:
    if function_name == "failing":
        return {"errorType": "ValueError", "errorMessage": "boom"}, True
    return echo(event), False


@pytest.fixture
def api() -> Iterator[LocalApiServer]:
    config = ApiConfig(
        routes=[
            ApiRoute("POST", "/echo", "echo", api_key_required=True),
            ApiRoute("POST", "/open", "echo", api_key_required=False),
            ApiRoute("POST", "/failing", "failing", api_key_required=True),
        ],
        api_key=KEY,
        binary_media_types=["image~1png"],
        stage="v1",
    )
    server = LocalApiServer(config, invoke, integration_timeout_s=1.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def post(api: LocalApiServer, body: Any, path: str = "/echo", key: str | None = KEY, **kw):
    headers = {"Content-Type": "image/png", **({"x-api-key": key} if key else {})}
    headers.update(kw.pop("headers", {}))
    return requests.post(f"{api.url}{path}", data=body, headers=headers, timeout=30, **kw)


def raw_exchange(
    api: LocalApiServer, request: bytes, timeout: float = 10, half_close: bool = False
) -> bytes:
    """Send raw bytes, read until the server closes: what a hand-written client sees."""
    port = int(api.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)  # the client gives up sending
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_json(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_api_binds_loopback_only(api: LocalApiServer) -> None:
    assert api.base_url.startswith("http://127.0.0.1:")
    assert api._server is not None and api._server.server_address[0] == "127.0.0.1"


def test_api_chunked_upload_reaches_the_function_whole(api: LocalApiServer) -> None:
    pieces = [PNG[i : i + 1000] for i in range(0, len(PNG), 1000)]

    response = post(api, iter(pieces))  # a generator: requests sends Transfer-Encoding: chunked

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["isBase64Encoded"] is True
    assert answer["sha256"] == hashlib.sha256(PNG).hexdigest()


def test_api_chunked_upload_is_one_request_on_the_wire(api: LocalApiServer) -> None:
    body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (PNG[:100], PNG[100:]))
    request = (
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        + f"x-api-key: {KEY}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + body
        + b"0\r\n\r\n"
    )

    raw = raw_exchange(api, request)

    assert raw.count(b"HTTP/1.1 ") == 1, raw[:500]  # no "second request" made of the chunks
    status, answer = status_and_json(raw)
    assert status == 200 and answer["length"] == len(PNG)


@pytest.mark.parametrize("value", ["abc", "-1", "12, 13", "1e3", "0x10"])
def test_api_bad_content_length_is_a_json_400(api: LocalApiServer, value: str) -> None:
    request = (
        f"POST /v1/echo HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\n"
        f"Content-Length: {value}\r\n\r\nabc"
    ).encode()

    status, answer = status_and_json(raw_exchange(api, request))

    assert status == 400
    assert "Content-Length" in answer["message"]
    assert post(api, PNG).status_code == 200  # and the server goes on serving


def test_api_malformed_request_line_is_a_json_400(api: LocalApiServer) -> None:
    status, answer = status_and_json(raw_exchange(api, b"NOT A REQUEST\r\n\r\n"))

    assert status == 400
    assert answer["message"]


def test_api_body_shorter_than_its_content_length_is_400(api: LocalApiServer) -> None:
    request = (
        f"POST /v1/echo HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nContent-Length: 100\r\n\r\n"
    ).encode() + b"short"

    status, answer = status_and_json(raw_exchange(api, request, half_close=True))

    assert status == 400 and "ended after 5 of 100" in answer["message"]


def test_api_wrong_key_is_403_before_the_body_is_read(api: LocalApiServer) -> None:
    """Headers declaring 50 MB and no body at all: the answer comes without waiting for it."""
    request = (
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nx-api-key: wrong\r\nContent-Length: 52428800\r\n\r\n"
    )
    started = time.monotonic()

    status, answer = status_and_json(raw_exchange(api, request))

    assert (status, answer) == (403, {"message": "Forbidden"})
    assert time.monotonic() - started < 10  # waited at most the short idle limit, not 50 MB


def test_api_missing_key_answers_forbidden_after_the_whole_upload(api: LocalApiServer) -> None:
    """A client that sends the whole body first (requests does) still reads the 403."""
    response = post(api, b"\0" * (12 * 1024 * 1024), key=None)

    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}
    assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"


def test_api_unknown_route_is_missing_authentication_token(api: LocalApiServer) -> None:
    response = post(api, PNG, path="/nowhere")

    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token"}


def test_api_body_over_10_mb_is_413_by_content_length(api: LocalApiServer) -> None:
    response = post(api, b"\0" * (10 * 1024 * 1024 + 1))

    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}


def test_api_chunked_body_over_10_mb_is_413(api: LocalApiServer) -> None:
    piece = b"\0" * (1024 * 1024)

    response = post(api, (piece for _ in range(11)))

    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}


def test_api_body_of_exactly_10_mb_is_accepted(api: LocalApiServer) -> None:
    response = post(api, b"\1" * (10 * 1024 * 1024))

    assert response.status_code == 200
    assert response.json()["length"] == 10 * 1024 * 1024


def test_api_integration_timeout_is_504(api: LocalApiServer) -> None:
    response = post(api, PNG, path="/echo?sleep=3")

    assert response.status_code == 504
    assert response.json() == {"message": "Endpoint request timed out"}


def test_api_lambda_refusing_a_large_request_is_413(api: LocalApiServer) -> None:
    response = post(api, PNG, path="/echo?refuse=RequestEntityTooLargeException")

    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}


def test_api_lambda_throttling_is_500(api: LocalApiServer) -> None:
    response = post(api, PNG, path="/echo?refuse=TooManyRequestsException")

    assert response.status_code == 500
    assert response.json() == {"message": "Internal server error"}


def test_api_function_error_is_502(api: LocalApiServer) -> None:
    response = post(api, PNG, path="/failing")

    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}


def test_api_expect_100_continue_gets_one_interim_answer(api: LocalApiServer) -> None:
    request = (
        f"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nx-api-key: {KEY}\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(PNG)}\r\n\r\n"
    ).encode() + PNG

    raw = raw_exchange(api, request)

    assert raw.count(b"100 Continue") == 1, raw[:300]
    assert b"HTTP/1.1 200 OK" in raw


def test_api_head_request_gets_headers_only(api: LocalApiServer) -> None:
    raw = raw_exchange(api, b"HEAD /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n")

    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403") and body == b""


def test_api_route_without_key_requirement_needs_none(api: LocalApiServer) -> None:
    response = post(api, PNG, path="/open", key=None)

    assert response.status_code == 200
    assert response.headers["x-amzn-RequestId"]


def test_api_holds_a_burst_of_connections_without_resets(api: LocalApiServer) -> None:
    """Many connections at once: the listen backlog (5 with http.server) must not overflow."""
    barrier = threading.Barrier(64)

    def one(_: int) -> int:
        barrier.wait(timeout=30)
        return post(api, PNG).status_code

    with ThreadPoolExecutor(max_workers=64) as pool:
        statuses = list(pool.map(one, range(64)))
        statuses += list(pool.map(lambda _: post(api, PNG).status_code, range(300)))

    assert statuses == [200] * len(statuses)


# -- the usage plan's throttle ------------------------------------------------------------------
class Clock:
    """A clock the test moves: the token bucket refills without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttled_api(clock: Clock) -> Iterator[LocalApiServer]:
    """The API with a usage plan throttle of 2 requests per second, burst 3."""
    config = ApiConfig(
        routes=[
            ApiRoute("POST", "/echo", "echo", api_key_required=True),
            ApiRoute("POST", "/open", "echo", api_key_required=False),
        ],
        api_key=KEY,
        binary_media_types=["image~1png"],
        stage="v1",
        rate_limit=2.0,
        burst_limit=3,
    )
    server = LocalApiServer(config, invoke, integration_timeout_s=5.0, clock=clock)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def statuses_of(api: LocalApiServer, count: int, **kw) -> list[int]:
    return [post(api, PNG, **kw).status_code for _ in range(count)]


def test_api_throttle_answers_429_after_the_burst(throttled_api: LocalApiServer) -> None:
    assert statuses_of(throttled_api, 3) == [200, 200, 200]

    response = post(throttled_api, PNG)

    assert response.status_code == 429
    assert response.json() == {"message": "Too Many Requests"}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    assert response.headers["x-amzn-RequestId"]


def test_api_throttle_refills_at_the_rate_up_to_the_burst(
    throttled_api: LocalApiServer, clock: Clock
) -> None:
    assert statuses_of(throttled_api, 4) == [200, 200, 200, 429]

    clock.now += 0.5  # 2 per second: one token back
    assert statuses_of(throttled_api, 2) == [200, 429]
    clock.now += 0.25  # half a token: still throttled
    assert statuses_of(throttled_api, 1) == [429]
    clock.now += 60  # a long pause fills the bucket to the burst, not beyond
    assert statuses_of(throttled_api, 4) == [200, 200, 200, 429]


def test_api_throttle_comes_after_the_key_check(throttled_api: LocalApiServer) -> None:
    """A wrong key is 403 even with an empty bucket, and it takes no token."""
    assert statuses_of(throttled_api, 4) == [200, 200, 200, 429]

    assert statuses_of(throttled_api, 5, key="wrong") == [403] * 5
    assert statuses_of(throttled_api, 1, key=None) == [403]
    assert statuses_of(throttled_api, 1, path="/nowhere") == [403]


def test_api_throttled_body_is_not_read(throttled_api: LocalApiServer) -> None:
    """The 429 is decided from the headers: a 100 MB declared body gets it without sending."""
    statuses_of(throttled_api, 3)
    request = (
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nx-api-key: " + KEY.encode() + b"\r\n"
        b"Content-Type: image/png\r\nContent-Length: 104857600\r\n\r\n"
    )

    status, body = status_and_json(raw_exchange(throttled_api, request, half_close=True))

    assert (status, body) == (429, {"message": "Too Many Requests"})


def test_api_route_without_key_is_not_throttled_by_the_usage_plan(
    throttled_api: LocalApiServer,
) -> None:
    assert statuses_of(throttled_api, 10, path="/open", key=None) == [200] * 10


def test_api_burst_beyond_the_limit_is_throttled_under_concurrency(
    throttled_api: LocalApiServer,
) -> None:
    """20 requests at once with the clock standing still: exactly the burst (3) gets through."""
    barrier = threading.Barrier(20)

    def one(_: int) -> int:
        barrier.wait(timeout=30)
        return post(throttled_api, PNG).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(one, range(20)))

    assert statuses == [200] * 3 + [429] * 17


# -- the local SageMaker service runs on the same server ------------------------------------------
SAGEMAKER_JSON = {"Content-Type": "application/x-amz-json-1.1"}


def test_sagemaker_service_binds_loopback_only(service) -> None:
    assert service.url.startswith("http://127.0.0.1:")


def test_sagemaker_service_reads_a_chunked_request(service) -> None:
    headers = {**SAGEMAKER_JSON, "X-Amz-Target": "SageMaker.ListEndpoints"}

    response = requests.post(service.url, data=iter([b"{", b"}"]), headers=headers, timeout=30)

    assert response.status_code == 200, response.text
    assert response.json()["Endpoints"] == []


def test_sagemaker_service_bad_content_length_is_a_json_400(service) -> None:
    port = int(service.url.rsplit(":", 1)[1])
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: SageMaker.ListEndpoints\r\n"
        b"Content-Length: twelve\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        raw = b"".join(iter(lambda: sock.recv(65536), b""))

    status, answer = status_and_json(raw)
    assert status == 400
    assert answer["__type"] == "ValidationError" and "Content-Length" in answer["message"]
