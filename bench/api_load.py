"""Benchmark: the local API under load, beside a direct InvokeEndpoint under the same load.

2,000 predictions at concurrency 32 through the local API (POST /predict with x-api-key: the
werkzeug server, the proxy event, the predict Lambda, InvokeEndpoint) and 2,000 direct
InvokeEndpoint calls of the same endpoint at the same concurrency from boto3, in alternating
blocks of 100 so drift on a shared machine hits both sides. Reported: errors (goal 0, the issue's
acceptance), p50/p99 latency of each side and their ratio. Also the growth of the local cloud's
resident memory while an unauthenticated 100 MB body is refused (goal: under 20 MiB), measured on
the process that serves the API.

The endpoint is created with boto3 from a model.tar.gz that train.py wrote (1 tiny epoch) under
the template's endpoint name (bench/serving.py's helpers), so the predict Lambda finds it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    Settings,
    at_most,
    digits,
    info,
    log,
    median,
    percentile,
    ratio,
    result,
    trained_model,
)
from bench.serving import CLOUD_PARAMETERS, cloud_clients, deploy_endpoint

NAME = "api_load"
TITLE = "Local API under load (concurrency 32) beside a direct InvokeEndpoint"
IMAGE_SIZE = 32
MIB = 1024 * 1024
MEMORY_GOAL_MIB = 20


@dataclass(frozen=True)
class Size:
    requests: int  # per side
    concurrency: int
    block: int
    refused_mib: int


def size_for(quick: bool) -> Size:
    return Size(64, 8, 32, 20) if quick else Size(2000, 32, 100, 100)


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def api_call(cloud: Any, image: bytes) -> Callable[[], str | None]:
    """POST /predict with a session per client thread; None or the error."""
    import requests

    local = threading.local()
    headers = {"Content-Type": "image/png", "x-api-key": cloud.api_key}

    def call() -> str | None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            response = session.post(f"{cloud.api_url}/predict", data=image, headers=headers)
        except requests.RequestException as error:
            return f"{type(error).__name__}: {error}"
        if response.status_code != 200 or "class_index" not in response.json():
            return f"{response.status_code}: {response.text[:200]}"
        return None

    return call


def direct_call(runtime: Any, endpoint: str, image: bytes) -> Callable[[], str | None]:
    def call() -> str | None:
        try:
            runtime.invoke_endpoint(
                EndpointName=endpoint,
                ContentType="image/png",
                Accept="application/json",
                Body=image,
            )["Body"].read()
        except Exception as error:  # counted, not raised: the errors are the measurement
            return f"{type(error).__name__}: {error}"
        return None

    return call


def block(call: Callable[[], str | None], count: int, pool: ThreadPoolExecutor) -> list[tuple]:
    """`count` calls at the pool's concurrency: (seconds, error) each."""

    def timed(_: int) -> tuple[float, str | None]:
        started = time.perf_counter()
        error = call()
        return time.perf_counter() - started, error

    return list(pool.map(timed, range(count)))


def under_load(sides: dict[str, Callable[[], str | None]], size: Size) -> dict[str, Any]:
    """Alternate blocks of each side until each has sent `size.requests`."""
    samples: dict[str, list[tuple]] = {side: [] for side in sides}
    walls = dict.fromkeys(sides, 0.0)
    with ThreadPoolExecutor(max_workers=size.concurrency) as pool:
        for call in sides.values():  # warm: Lambda workers, model server, pools
            block(call, size.concurrency, pool)
        while any(len(values) < size.requests for values in samples.values()):
            for side, call in sides.items():
                count = min(size.block, size.requests - len(samples[side]))
                started = time.perf_counter()
                samples[side] += block(call, count, pool)
                walls[side] += time.perf_counter() - started
    return {side: summarize(values, walls[side]) for side, values in samples.items()}


def summarize(values: list[tuple], wall_s: float) -> dict[str, Any]:
    latencies = [seconds * 1000 for seconds, _ in values]
    errors = [error for _, error in values if error]
    return {
        "n": len(values),
        "errors": len(errors),
        "first_errors": errors[:5],
        "p50_ms": median(latencies),
        "p99_ms": percentile(latencies, 99),
        "per_s": len(values) / wall_s if wall_s else None,
    }


def refused_body_growth(cloud: Any, mib: int) -> dict[str, Any]:
    """RSS growth of the cloud process across one unauthenticated `mib` MB upload."""
    import requests

    url, headers = f"{cloud.api_url}/predict", {"Content-Type": "image/png", "x-api-key": "wrong"}
    requests.post(url, data=b"warm", headers=headers, timeout=60)
    before = rss_bytes(cloud.pid)
    response = requests.post(url, data=b"\0" * (mib * MIB), headers=headers, timeout=120)
    growth = rss_bytes(cloud.pid) - before
    return {"status": response.status_code, "growth_mib": growth / MIB, "mib": mib}


def run(settings: Settings) -> dict[str, Any]:
    from mlops.local.process import CloudStartError, start_cloud_process, stop_cloud_process

    size = size_for(settings.quick)
    model_dir = trained_model(settings, IMAGE_SIZE)
    image = sorted((digits(settings, 5, IMAGE_SIZE) / "test").rglob("*.png"))[0].read_bytes()
    root = settings.scratch(f"{NAME}-cloud")
    try:
        process, cloud = start_cloud_process(root, parameters=CLOUD_PARAMETERS)
    except CloudStartError as error:
        reason = f"the local cloud does not start: {str(error).splitlines()[0]}"
        return result(NAME, TITLE, [info("API errors under load", None)], {}, [reason])
    try:
        clients = cloud_clients(cloud)
        endpoint = deploy_endpoint(cloud, clients, model_dir)
        log(f"{NAME}: {size.requests} requests per side at concurrency {size.concurrency}")
        sides = {
            "api": api_call(cloud, image),
            "direct": direct_call(clients["runtime"], endpoint, image),
        }
        load = under_load(sides, size)
        log(f"{NAME}: an unauthenticated {size.refused_mib} MB body")
        refused = refused_body_growth(cloud, size.refused_mib)
    finally:
        stop_cloud_process(process)
    return result(NAME, TITLE, checks(load, refused, size), {"load": load, "refused": refused})


def checks(load: dict[str, Any], refused: dict[str, Any], size: Size) -> list[dict[str, Any]]:
    api, direct = load["api"], load["direct"]
    text = "{p50_ms:.0f} / {p99_ms:.0f}"
    return [
        at_most(
            f"API errors in {api['n']} requests at concurrency {size.concurrency}", api["errors"], 0
        ),
        info("  InvokeEndpoint errors (same load)", direct["errors"]),
        info("  p50 / p99 ms: API", text.format(**api)),
        info("  p50 / p99 ms: InvokeEndpoint", text.format(**direct)),
        info("  API/InvokeEndpoint p50", ratio(api["p50_ms"], direct["p50_ms"])),
        info("  API/InvokeEndpoint p99", ratio(api["p99_ms"], direct["p99_ms"])),
        info("  requests/s: API, InvokeEndpoint", f"{api['per_s']:.1f}, {direct['per_s']:.1f}"),
        at_most(
            f"cloud RSS growth (MiB), unauthenticated {refused['mib']} MB body "
            f"(answered {refused['status']})",
            refused["growth_mib"] if refused["status"] == 403 else None,
            MEMORY_GOAL_MIB,
        ),
    ]
