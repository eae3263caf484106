"""Benchmark 2: what serving adds around the model's forward pass.

Part 1, the model server: requests/s of mlops/local/model_server.py (HTTP, inference.py's
decode + preprocess + forward + JSON) against the bare forward of the same network on the same
preprocessed tensor, batch 1, one process each, one intra-op thread each, one client on a
kept-alive connection. The sides alternate in blocks of about half a second. The goal is on
wall-clock requests/s, because waiting is part of serving's cost (a network stall costs no
CPU); requests per CPU-second of the server is reported beside it, and the difference between
the two is time the server spends waiting. Measured at the template's default ImageSize (224,
what AWS serves; the goal) and at the local pipeline's 32 pixels, where the forward pass is so
cheap that fixed per-request costs show.

Part 2, the API proxy: p50/p99 latency of `mlops predict`'s request (POST api_url/predict with
x-api-key: local API Gateway -> predict Lambda -> InvokeEndpoint) against a direct
InvokeEndpoint of the same endpoint on the local SageMaker from a boto3 client, alternating
request by request; the predict Lambda invoked through the Lambda API is timed too, to split
the proxy's cost between the API server and the Lambda hop. The endpoint is created here with
boto3 from a model.tar.gz that train.py wrote (1 tiny epoch), under the name the template gives
it, so the predict Lambda finds it.

Earlier versions also ran both parts with TCP_NODELAY forced on in every http.server (a
sitecustomize module): that fix is in the servers themselves now (waitress and werkzeug set
TCP_NODELAY on accepted sockets; urllib3 and http.client send a request's headers and body in
one write), and the variant measured the same as the code (docs/performance.md).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    PYTHON,
    REPO_ROOT,
    SINGLE_THREAD_ENV,
    Settings,
    at_least,
    at_most,
    base_env,
    digits,
    info,
    log,
    median,
    percentile,
    process_cpu_seconds,
    ratio,
    result,
    trained_model,
)
from tests.support.model_server import model_server

NAME = "serving"
TITLE = "Serving overhead: model server and API proxy"
# Issue 17's goals: the server at >= 95% of the bare forward's requests/s at 224 px (what AWS
# serves), >= 90% at 32 px (where fixed per-request costs show); the API adds <= 10% at p50.
SERVER_GOALS = {224: 0.95, 32: 0.90}
API_P50_GOAL = 0.10
GOAL_IMAGE_SIZE = 224  # template.yaml's ImageSize default: what the AWS endpoint serves
LOCAL_IMAGE_SIZE = 32  # samconfig.toml's local ImageSize: what the local pipeline serves
# The usage plan's throttle raised to API Gateway's account-level defaults (10,000 requests/s,
# burst 5,000): the issue asks for 0 errors at this load, and on AWS the user would raise the
# usage plan the same way (ApiRateLimit/ApiBurstLimit at deploy time). At the template's
# defaults (20/s, burst 40) the load would get 429s, as
# tests/reliability/test_api_throttle.py shows.
CLOUD_PARAMETERS = {"PollSeconds": "1", "ApiRateLimit": "10000", "ApiBurstLimit": "5000"}
API_EVENT = REPO_ROOT / "tests" / "events" / "api_predict_png.json"  # API Gateway's proxy event


@dataclass(frozen=True)
class Size:
    rounds: int
    block_s: float
    server_image_sizes: tuple[int, ...]
    api_image_size: int
    api_requests: int


def size_for(quick: bool) -> Size:
    """--quick: only the local 32-px model, so it runs in well under a minute."""
    if quick:
        return Size(2, 0.2, (LOCAL_IMAGE_SIZE,), LOCAL_IMAGE_SIZE, 8)
    return Size(8, 0.5, (GOAL_IMAGE_SIZE, LOCAL_IMAGE_SIZE), GOAL_IMAGE_SIZE, 80)


# ---------------------------------------------------------------------------------------------
# Part 1: model server against the bare forward
# ---------------------------------------------------------------------------------------------


def request_image(settings: Settings, image_size: int) -> bytes:
    """A real test-split PNG at the model's input size (what a client would send)."""
    data = digits(settings, per_class=5, size=image_size)
    return sorted((data / "test").rglob("*.png"))[0].read_bytes()


def bare_forward(model_dir: Path, image: bytes) -> Callable[[], None]:
    """The network alone on the tensor inference.py would make from `image` (batch 1)."""
    from training import inference

    loaded = inference.model_fn(str(model_dir))
    batch = loaded.transform(inference.open_image(image)).unsqueeze(0)

    def forward() -> None:
        with torch.inference_mode():
            loaded.network(batch)

    return forward


def server_request(port: int, image: bytes) -> Callable[[], None]:
    """One POST /invocations on a kept-alive connection, as a client library would send it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "image/png", "Accept": "application/json"}

    def call() -> None:
        connection.request("POST", "/invocations", body=image, headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"model server answered {response.status}: {body[:200]!r}")

    return call


def timed_block(call: Callable[[], None], count: int, cpu: Callable[[], float]) -> tuple:
    """(wall seconds, CPU seconds) of `count` calls; CPU of whichever process does the work."""
    cpu_before, started = cpu(), time.perf_counter()
    for _ in range(count):
        call()
    return time.perf_counter() - started, cpu() - cpu_before


def block_count(call: Callable[[], None], block_s: float) -> int:
    """Calls per block so that a block lasts about `block_s` (CPU ticks are 10 ms)."""
    started = time.perf_counter()
    for _ in range(3):
        call()
    each = (time.perf_counter() - started) / 3
    return max(3, min(500, round(block_s / max(each, 1e-4))))


def server_vs_forward(settings: Settings, image_size: int, size: Size) -> dict[str, Any]:
    """Alternate blocks of bare forwards and requests to the server; totals per side."""
    model_dir = trained_model(settings, image_size)
    image = request_image(settings, image_size)
    work = settings.scratch(f"{NAME}-server-{image_size}")
    env = base_env(**SINGLE_THREAD_ENV, MODEL_SERVER_LOG_LEVEL="WARNING")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.ExitStack() as stack:
            sides = {"forward": (bare_forward(model_dir, image), time.thread_time)}
            process, port = stack.enter_context(
                model_server(model_dir, work, name="server", python=PYTHON, env=env, cwd=REPO_ROOT)
            )
            sides["server"] = (server_request(port, image), cpu_of(process.pid))
            totals = alternate(sides, size)
    finally:
        torch.set_num_threads(threads)
    return summarize_server(totals, image_size)


def cpu_of(pid: int) -> Callable[[], float]:
    return lambda: process_cpu_seconds(pid) or 0.0


def alternate(
    sides: dict[str, tuple[Callable[[], None], Callable[[], float]]], size: Size
) -> dict[str, dict[str, float]]:
    """Round-robin blocks of each side, the order rotated every round (drift hits all)."""
    counts = {side: block_count(call, size.block_s) for side, (call, _) in sides.items()}
    totals = {side: {"calls": 0, "wall_s": 0.0, "cpu_s": 0.0} for side in sides}
    names = list(sides)
    for round_index in range(size.rounds):
        shift = round_index % len(names)
        for side in names[shift:] + names[:shift]:
            call, cpu = sides[side]
            wall_s, cpu_s = timed_block(call, counts[side], cpu)
            totals[side]["calls"] += counts[side]
            totals[side]["wall_s"] += wall_s
            totals[side]["cpu_s"] += cpu_s
    return totals


def per_call_ms(seconds: float, calls: float) -> float | None:
    return 1000 * seconds / calls if calls else None


def summarize_server(totals: dict[str, dict[str, float]], image_size: int) -> dict[str, Any]:
    rates = {
        side: {
            "per_wall_s": values["calls"] / values["wall_s"],
            "per_cpu_s": values["calls"] / values["cpu_s"] if values["cpu_s"] else None,
            "wall_ms": per_call_ms(values["wall_s"], values["calls"]),
            "cpu_ms": per_call_ms(values["cpu_s"], values["calls"]),
            **values,
        }
        for side, values in totals.items()
    }
    forward = rates["forward"]
    return {
        "image_size": image_size,
        "rates": rates,
        "wall_ratio": ratio(rates["server"]["per_wall_s"], forward["per_wall_s"]),
        "cpu_ratio": ratio(rates["server"]["per_cpu_s"], forward["per_cpu_s"]),
    }


# ---------------------------------------------------------------------------------------------
# Part 2: the API proxy against a direct InvokeEndpoint
# ---------------------------------------------------------------------------------------------


def model_archive(model_dir: Path) -> bytes:
    """model.tar.gz with the model folder's files at its root, as SageMaker packs SM_MODEL_DIR."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=str(path.relative_to(model_dir)), recursive=False)
    return buffer.getvalue()


def deploy_endpoint(cloud: Any, clients: dict[str, Any], model_dir: Path) -> str:
    """CreateModel + CreateEndpointConfig + CreateEndpoint under the template's endpoint name."""
    outputs, parameters = cloud.deployment["outputs"], cloud.deployment["parameters"]
    endpoint, bucket = outputs["EndpointName"], outputs["ArtifactsBucketName"]
    key = "bench/serving/model.tar.gz"
    clients["s3"].put_object(Bucket=bucket, Key=key, Body=model_archive(model_dir))
    sagemaker = clients["sagemaker"]
    sagemaker.create_model(
        ModelName=f"{endpoint}-bench",
        PrimaryContainer={
            "Image": parameters["InferenceImage"],
            "ModelDataUrl": f"s3://{bucket}/{key}",
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
        },
        ExecutionRoleArn=outputs["SageMakerRoleArn"],
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{endpoint}-bench",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{endpoint}-bench",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-bench")
    wait_in_service(sagemaker, endpoint, timeout_s=180)
    return endpoint


def wait_in_service(sagemaker: Any, endpoint: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = sagemaker.describe_endpoint(EndpointName=endpoint)
        if described["EndpointStatus"] == "InService":
            return described
        if described["EndpointStatus"] == "Failed":
            raise RuntimeError(f"endpoint {endpoint} failed: {described.get('FailureReason')}")
        time.sleep(0.5)
    raise TimeoutError(f"endpoint {endpoint} not InService after {timeout_s:.0f} s")


def api_vs_direct(settings: Settings, size: Size) -> dict[str, Any]:
    """Latency through the local API against InvokeEndpoint; {"skipped": why} without a cloud."""
    from mlops.local.process import CloudStartError, start_cloud_process, stop_cloud_process

    model_dir = trained_model(settings, size.api_image_size)
    root = settings.scratch(f"{NAME}-cloud")
    image = sorted((digits(settings, 5, size.api_image_size) / "test").rglob("*.png"))[0]
    try:
        process, cloud = start_cloud_process(root, parameters=CLOUD_PARAMETERS)
    except CloudStartError as error:
        return {"skipped": f"the local cloud does not start: {str(error).splitlines()[0]}"}
    try:
        clients = cloud_clients(cloud)
        endpoint = deploy_endpoint(cloud, clients, model_dir)
        paths = request_paths(root, clients, cloud, endpoint, image)
        return latencies(paths, size.api_requests)
    finally:
        stop_cloud_process(process)


def cloud_clients(cloud: Any) -> dict[str, Any]:
    import boto3

    env = cloud.client_env()
    session = boto3.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=cloud.region,
    )
    return {
        "s3": session.client("s3", endpoint_url=cloud.moto_url),
        "sagemaker": session.client("sagemaker", endpoint_url=cloud.sagemaker_url),
        "runtime": session.client("sagemaker-runtime", endpoint_url=cloud.sagemaker_url),
        "lambda": session.client("lambda", endpoint_url=cloud.moto_url),
    }


def request_paths(
    root: Path, clients: dict[str, Any], cloud: Any, endpoint: str, image: Path
) -> dict[str, Callable[[], None]]:
    """`mlops predict`'s request through the API; the predict Lambda invoked directly with the
    event the API would send (to split the proxy's cost between API server and Lambda); and
    InvokeEndpoint from a boto3 client (the baseline)."""
    import requests

    from mlops.runs import predict_file
    from mlops.target import local_target

    target = local_target(root)
    body = image.read_bytes()

    def through_api() -> None:
        answer = predict_file(target, image, requests)
        if "error" in answer:
            raise RuntimeError(f"POST /predict failed: {answer}")

    event = json.loads(API_EVENT.read_text())
    event["body"] = base64.b64encode(body).decode()
    payload = json.dumps(event).encode()
    function = cloud.deployment["outputs"]["PredictFunctionName"]

    def lambda_only() -> None:
        response = clients["lambda"].invoke(FunctionName=function, Payload=payload)
        answer = json.loads(response["Payload"].read())
        if "FunctionError" in response or answer.get("statusCode") != 200:
            raise RuntimeError(f"predict Lambda failed: {str(answer)[:300]}")

    def direct() -> None:
        response = clients["runtime"].invoke_endpoint(
            EndpointName=endpoint, ContentType="image/png", Accept="application/json", Body=body
        )
        response["Body"].read()

    return {"api": through_api, "lambda": lambda_only, "direct": direct}


def latencies(paths: dict[str, Callable[[], None]], count: int) -> dict[str, Any]:
    """Round-robin the paths request by request after a warm-up (Lambda cold start, pools)."""
    for _ in range(3):
        for call in paths.values():
            call()
    samples: dict[str, list[float]] = {side: [] for side in paths}
    names = list(paths)
    for index in range(count):
        shift = index % len(names)
        for side in names[shift:] + names[:shift]:
            started = time.perf_counter()
            paths[side]()
            samples[side].append((time.perf_counter() - started) * 1000)
    stats = {
        side: {"p50_ms": median(values), "p99_ms": percentile(values, 99), "n": len(values)}
        for side, values in samples.items()
    }
    overhead = ratio(stats["api"]["p50_ms"], stats["direct"]["p50_ms"])
    return {
        **stats,
        "p50_added": overhead - 1 if overhead is not None else None,
        "p50_added_ms": stats["api"]["p50_ms"] - stats["direct"]["p50_ms"],
        "p50_api_server_ms": stats["api"]["p50_ms"] - stats["lambda"]["p50_ms"],
        "p50_lambda_ms": stats["lambda"]["p50_ms"] - stats["direct"]["p50_ms"],
    }


def api_checks(api: dict[str, Any]) -> list[dict[str, Any]]:
    """The goal row plus the latencies of each path."""
    label = "API p50 added over InvokeEndpoint"
    if "skipped" in api:
        return [info(label, None, goal=f"<= {API_P50_GOAL:g}")]
    return [
        at_most(label, api["p50_added"], API_P50_GOAL),
        info("  p50 added ms: API server / Lambda hop", api_split_text(api)),
        info("  p50 / p99 ms: API", latency_text(api["api"])),
        info("  p50 / p99 ms: Lambda invoke", latency_text(api["lambda"])),
        info("  p50 / p99 ms: InvokeEndpoint", latency_text(api["direct"])),
    ]


def api_split_text(api: dict[str, Any]) -> str:
    return f"{api['p50_api_server_ms']:.1f} / {api['p50_lambda_ms']:.1f}"


def latency_text(stats: dict[str, float]) -> str:
    return f"{stats['p50_ms']:.1f} / {stats['p99_ms']:.1f}"


def run(settings: Settings) -> dict[str, Any]:
    size = size_for(settings.quick)
    measurements: dict[str, Any] = {"size": size.__dict__}
    checks = []
    notes = []
    for image_size in size.server_image_sizes:
        log(f"{NAME}: model server against bare forward at {image_size} px")
        server = server_vs_forward(settings, image_size, size)
        measurements[f"server_{image_size}px"] = server
        label = f"server/forward requests per wall-s, {image_size}px"
        checks.append(at_least(label, server["wall_ratio"], SERVER_GOALS[image_size]))
        checks.append(info(f"  same per CPU-s of the server, {image_size}px", server["cpu_ratio"]))
        rates = server["rates"]
        notes.append(
            f"{image_size}px per request: forward {rates['forward']['wall_ms']:.1f} ms wall / "
            f"{rates['forward']['cpu_ms']:.1f} ms CPU; server {rates['server']['wall_ms']:.1f} ms "
            f"wall / {rates['server']['cpu_ms']:.1f} ms CPU"
        )
    log(f"{NAME}: API proxy against direct InvokeEndpoint")
    api = api_vs_direct(settings, size)
    measurements["api"] = api
    checks.extend(api_checks(api))
    if "skipped" in api:
        notes.append(f"API part skipped: {api['skipped']}")
    return result(NAME, TITLE, checks, measurements, notes)
