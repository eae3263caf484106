"""Load on the local API: 2,000 predictions at concurrency 32, zero errors, p50/p99 printed.

Each client thread keeps one session, but the local API answers `Connection: close` (werkzeug's
threaded server), so every request is a new connection: the listen backlog is exercised too
(http.server's backlog of 5 reset 2-6 of 500 requests at this concurrency). Traffic goes to
127.0.0.1 only, bounded in count (2,000) and time (each request 60 s, the test
LOAD_TIMEOUT_S). The numbers are machine-dependent; bench/api_load.py measures them beside a
direct InvokeEndpoint, and docs/reliability.md records a run.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import LOAD_LIMITS, ServingCloud
from .helpers import Api

REQUESTS = 2000
CONCURRENCY = 32
LOAD_TIMEOUT_S = 900

pytestmark = pytest.mark.timeout(LOAD_TIMEOUT_S + 300)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def send_all(api: Api, image: bytes) -> tuple[list[float], list[str], float]:
    """(latencies in seconds, errors, wall seconds) of REQUESTS posts at CONCURRENCY."""
    local = threading.local()
    headers = {"Content-Type": "image/png", "x-api-key": api.key}

    def one(_: int) -> tuple[float, str | None]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.perf_counter()
        try:
            response = session.post(api.predict_url, data=image, headers=headers, timeout=60)
        except requests.RequestException as error:
            return time.perf_counter() - started, f"{type(error).__name__}: {error}"
        elapsed = time.perf_counter() - started
        if response.status_code != 200 or "class_index" not in response.json():
            return elapsed, f"{response.status_code}: {response.text[:200]}"
        return elapsed, None

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        results = list(pool.map(one, range(REQUESTS), timeout=LOAD_TIMEOUT_S))
    wall = time.perf_counter() - started
    return [r[0] for r in results], [r[1] for r in results if r[1]], wall


def test_api_load_2000_requests_at_concurrency_32_without_errors(
    serving_cloud: ServingCloud, api: Api, digit_png: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    # Deployed with the usage plan raised (conftest.py says why): at the template's 20/s, burst
    # 40, this load would be answered 429 (test_api_throttle.py).
    parameters = serving_cloud.info.deployment["parameters"]
    assert {name: parameters[name] for name in LOAD_LIMITS} == LOAD_LIMITS
    api.post(digit_png).raise_for_status()  # warm one worker and the model server

    latencies, errors, wall = send_all(api, digit_png)

    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    with capsys.disabled():
        print(
            f"\nload: {REQUESTS} requests, concurrency {CONCURRENCY}, {len(errors)} errors, "
            f"{wall:.1f} s wall, {REQUESTS / wall:.1f} req/s, p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
            f"mean {statistics.mean(latencies) * 1000:.0f} ms"
        )
    assert len(latencies) == REQUESTS
    assert errors == [], errors[:5]
