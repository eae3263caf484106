"""The usage plan's throttle at the template's defaults (ApiRateLimit 20/s, ApiBurstLimit 40).

A cloud of its own, deployed from template.yaml with samconfig.toml's local overrides and
nothing else, so the throttle is the one a default deployment gets on AWS: a burst beyond 40
requests with the key gets API Gateway's 429 `{"message": "Too Many Requests"}`.

The burst's bodies are declared over API Gateway's 10 MB and never sent: API Gateway decides
both the throttle and the size from the headers, so an admitted request is answered 413 by the
size check and a throttled one 429, and no Lambda runs (a hundred concurrent predict
invocations would start a hundred worker processes on a 2-core machine). The serving cloud of
the other API tests raises the limits instead (conftest.py says why). Everything this module
starts is stopped at its end, also on failure.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from mlops.local.cloud_info import CloudInfo
from mlops.local.process import start_cloud_process, stop_cloud_process

BURST_REQUESTS = 100
RATE, BURST = 20, 40  # template.yaml's ApiRateLimit / ApiBurstLimit defaults
OVER_10_MB = 11 * 1024 * 1024


@pytest.fixture(scope="module")
def default_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudInfo]:
    root = tmp_path_factory.mktemp("throttle-cloud")
    process, info = start_cloud_process(root)
    try:
        yield info
    finally:
        stop_cloud_process(process)


def declared_oversize_post(info: CloudInfo, key: str) -> tuple[int, dict[str, Any]]:
    """POST /predict declaring an 11 MiB body that is never sent; (status, JSON answer)."""
    url = urlsplit(f"{info.api_url}/predict")
    request = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nx-api-key: {key}\r\n"
        f"Content-Type: image/png\r\nContent-Length: {OVER_10_MB}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_default_deployment_has_the_templates_throttle(default_cloud: CloudInfo) -> None:
    parameters = default_cloud.deployment["parameters"]
    assert (parameters["ApiRateLimit"], parameters["ApiBurstLimit"]) == (str(RATE), str(BURST))


def test_burst_beyond_40_gets_429_at_the_default_limits(default_cloud: CloudInfo) -> None:
    barrier = threading.Barrier(BURST_REQUESTS)

    def one(_: int) -> tuple[int, dict[str, Any]]:
        barrier.wait(timeout=60)
        return declared_oversize_post(default_cloud, default_cloud.api_key)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=BURST_REQUESTS) as pool:
        answers = list(pool.map(one, range(BURST_REQUESTS)))
    elapsed = time.monotonic() - started

    counts = Counter(status for status, _ in answers)
    admitted_at_most = BURST + RATE * elapsed + 1  # the bucket refills while the burst arrives
    assert set(counts) <= {413, 429}, counts
    assert counts[413] >= BURST, counts  # the bucket starts full
    assert counts[413] <= admitted_at_most, (counts, elapsed)
    assert counts[429] >= BURST_REQUESTS - admitted_at_most > 0, (counts, elapsed)
    throttled = {json.dumps(body) for status, body in answers if status == 429}
    assert throttled == {json.dumps({"message": "Too Many Requests"})}


def test_throttled_key_is_admitted_again_after_the_refill(default_cloud: CloudInfo) -> None:
    """After a burst, a second at 20/s refills the bucket: a real prediction request reaches
    the function (no endpoint in this cloud, so predict itself answers, not the gateway)."""
    statuses = []
    while 429 not in statuses and len(statuses) < 10 * BURST:  # empty the bucket
        statuses.append(declared_oversize_post(default_cloud, default_cloud.api_key)[0])
    assert statuses[-1] == 429, Counter(statuses)

    time.sleep(1.0)
    headers = {"Content-Type": "image/png", "x-api-key": default_cloud.api_key}
    response = requests.post(
        f"{default_cloud.api_url}/predict", data=b"\x89PNG", headers=headers, timeout=120
    )

    assert response.status_code != 429, response.text
    assert response.json().get("message") != "Too Many Requests", response.text


def test_wrong_key_is_403_not_429_at_the_default_limits(default_cloud: CloudInfo) -> None:
    assert declared_oversize_post(default_cloud, "not-the-key") == (403, {"message": "Forbidden"})
