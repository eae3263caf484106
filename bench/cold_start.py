"""Benchmark 4: Lambda cold start and the predict function's deployment package.

Cold start: each handler module is imported in a fresh interpreter and called once, timed
inside that interpreter (interpreter start-up is the same for every function and is left
out), against a bare `import boto3` in a fresh interpreter. The child gets what the local
Lambda runtime gives a worker (mlops/local/lambda_runtime.py `_environment`): only the reserved
variables, the function's own Environment from template.yaml (Globals merged, intrinsics
resolved by the local deployer), the code folder as cwd and first on PYTHONPATH, the layer's
python/ after it. AWS_ENDPOINT_URL points at a moto server started here, so the first call's
AWS requests get real (empty-account) answers instead of retries, and InvokeEndpoint at a stub
that answers a prediction at once. Events come from
tests/events where one fits; a handler that raises on its first call still counts (the import
and the first call's set-up are what cold start costs).

Bytecode: measured rounds read compiled bytecode from a private cache (PYTHONPYCACHEPREFIX,
filled by a warm-up round), as a package with .pyc files would; one more round compiles
everything from source, as a layer built with `pip install --no-compile` does at every cold
start on AWS (its /opt is read-only, so nothing is cached).

Package size: the predict folder zipped + the layer (pipeline_common plus the installed
distributions of functions/shared/requirements.txt and everything they require, the way the
layer's Makefile installs them) zipped, in MB, against Lambda's limits.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import (
    FUNCTIONS_DIR,
    LAYER_DIR,
    PYTHON,
    REPO_ROOT,
    Settings,
    at_most,
    info,
    log,
    median,
    result,
    run_child,
)

NAME = "cold_start"
TITLE = "Lambda cold start and predict package size"
GOAL = 2.0  # issue 17: the worst handler within twice a bare `import boto3`
EVENTS = REPO_ROOT / "tests" / "events"
LAMBDA_UNZIPPED_LIMIT_MB = 250.0  # function + layers, unzipped
MB = 1024 * 1024

CHILD = """
import json, sys, time
started = time.perf_counter()
import {module} as handler_module
imported = time.perf_counter()
outcome = "ok"
if {call}:
    class Context:
        function_name = "bench"; function_version = "$LATEST"; memory_limit_in_mb = 256
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
        aws_request_id = "00000000-0000-0000-0000-000000000000"
        log_group_name = "/aws/lambda/bench"; log_stream_name = "bench"
        def get_remaining_time_in_millis(self): return 60000
    try:
        handler_module.{handler}(json.loads(sys.argv[1]), Context())
    except Exception as error:
        outcome = type(error).__name__
called = time.perf_counter()
print("BENCH " + json.dumps({{"import_s": imported - started, "call_s": called - imported,
                              "outcome": outcome}}))
"""


# Where a handler's import time goes: the building blocks of the functions, added one by one in
# one fresh interpreter (each step's time excludes the steps before it).
BREAKDOWN = """
import json, time
steps = {}
def step(name, started):
    steps[name] = time.perf_counter() - started
t = time.perf_counter(); import boto3; step("import boto3", t)
t = time.perf_counter(); boto3.client("sagemaker-runtime"); step("first boto3 client", t)
t = time.perf_counter(); boto3.client("s3"); step("second boto3 client", t)
t = time.perf_counter()
from aws_lambda_powertools import Logger, Metrics
Logger(); Metrics(); step("powertools Logger + Metrics", t)
t = time.perf_counter()
from aws_lambda_powertools import Tracer
Tracer(); step("powertools Tracer (imports aws_xray_sdk)", t)
t = time.perf_counter()
from aws_lambda_powertools.utilities.parser import event_parser
import pydantic; step("powertools parser + pydantic", t)
t = time.perf_counter()
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
APIGatewayRestResolver(); step("powertools event_handler", t)
print("BENCH " + json.dumps(steps))
"""


def function_dirs() -> list[Path]:
    return sorted(p.parent for p in FUNCTIONS_DIR.glob("*/app.py") if p.parent.name != "shared")


def first_event(function: str) -> dict[str, Any]:
    """The test event that fits the function's first call, {} where none does."""

    def load(name: str) -> dict[str, Any]:
        return json.loads((EVENTS / name).read_text())

    if function == "trigger":
        return load("s3_manifest_created.json")
    if function == "validate_dataset":
        return load("validate_dataset.json")
    if function == "predict":
        return load("api_predict_png.json")
    if function == "start_tuning":
        return {"execution_name": "bench-0", "dataset": load("validated_dataset.json")}
    if function == "start_profiled_training":
        return {
            "execution_name": "bench-0",
            "dataset": load("validated_dataset.json"),
            "best": load("best_trial.json"),
        }
    return {}


def template_environments() -> dict[str, dict[str, str]]:
    """Folder name -> the function's Environment.Variables, resolved as the local cloud does."""
    import boto3

    from mlops.local.deploy import FUNCTION, LocalDeployer
    from mlops.local.template import REGION

    images = {"TrainingImage": "bench/training:1", "InferenceImage": "bench/inference:1"}
    session = boto3.Session(region_name=REGION)
    deployer = LocalDeployer(REPO_ROOT / "template.yaml", "bench", images, session, "unused")
    deployer._assign_references()  # names and ARNs only; creates nothing
    environments = {}
    for resource in deployer.resources.values():
        if resource["Type"] != FUNCTION:
            continue
        props = deployer._function_properties(deployer.resolver.resolve(resource["Properties"]))
        folder = Path(props["CodeUri"]).name
        variables = props.get("Environment", {}).get("Variables", {})
        environments[folder] = {k: str(v) for k, v in variables.items()}
    return environments


def runtime_env(code_dir: Path, variables: dict[str, str], urls: dict[str, str]) -> dict[str, str]:
    """What mlops/local/lambda_runtime.py gives a worker, endpoints set to moto and the stub."""
    name = f"bench-{code_dir.name}"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join([str(code_dir), str(LAYER_DIR)]),
        "PYTHONUNBUFFERED": "1",
        "LAMBDA_TASK_ROOT": str(code_dir),
        "_HANDLER": "app.lambda_handler",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": urls["moto"],
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": urls["runtime"],
        **variables,
    }


def measure_child(
    work: Path, cwd: Path, env: dict[str, str], module: str, event: dict | None, tag: str
) -> dict[str, Any]:
    """Import `module` (and call its handler with `event`) in a fresh interpreter."""
    script = CHILD.format(module=module, call=event is not None, handler="lambda_handler")
    return bench_line(work, cwd, env, [PYTHON, "-c", script, json.dumps(event or {})], tag)


def bench_line(
    work: Path, cwd: Path, env: dict[str, str], command: list[str], tag: str
) -> dict[str, Any]:
    """Run a child that prints one `BENCH <json>` line; return the JSON."""
    run = run_child(command, env=env, cwd=cwd, log_path=work / f"{tag}.log", timeout_s=120)
    line = run.first(r"^BENCH ")
    if line is None:
        raise RuntimeError(f"no BENCH line from {' '.join(command[:2])} in {cwd}:\n{run.tail()}")
    return json.loads(line.text[len("BENCH ") :])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class _RuntimeStub(BaseHTTPRequestHandler):
    """Answers every InvokeEndpoint with a fixed prediction, at once (moto's runtime cannot
    take binary bodies, and its 500 would make botocore retry with back-off)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    answer = json.dumps({"class_index": 0, "label": "zero", "top_k": []}).encode()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def runtime_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RuntimeStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def one_round(
    work: Path, urls: dict[str, str], environments: dict[str, dict[str, str]], cache: dict
) -> dict[str, dict[str, Any]]:
    """The boto3 baseline and every handler once, each in a fresh interpreter."""
    baseline_env = {**runtime_env(FUNCTIONS_DIR, {}, urls), **cache}
    samples = {"boto3": measure_child(work, FUNCTIONS_DIR, baseline_env, "boto3", None, "boto3")}
    for code_dir in function_dirs():
        variables = environments.get(code_dir.name, {})
        env = {**runtime_env(code_dir, variables, urls), **cache}
        event = first_event(code_dir.name)
        samples[code_dir.name] = measure_child(work, code_dir, env, "app", event, code_dir.name)
    predict = FUNCTIONS_DIR / "predict"
    env = {**runtime_env(predict, environments.get("predict", {}), urls), **cache}
    samples["breakdown"] = bench_line(work, predict, env, [PYTHON, "-c", BREAKDOWN], "breakdown")
    return samples


def cold_starts(settings: Settings) -> dict[str, Any]:
    work = settings.scratch(NAME)
    environments = template_environments()
    rounds = 1 if settings.quick else 3  # --quick also skips the no-bytecode round
    warm = {"PYTHONPYCACHEPREFIX": str(work / "pycache")}
    cold = {"PYTHONPYCACHEPREFIX": str(work / "empty-pycache"), "PYTHONDONTWRITEBYTECODE": "1"}
    with moto_server() as moto_url, runtime_stub() as runtime_url:
        urls = {"moto": moto_url, "runtime": runtime_url}
        log(f"{NAME}: warm-up round (fills the bytecode cache and the page cache)")
        one_round(work, urls, environments, warm)
        no_pyc = None
        if not settings.quick:
            log(f"{NAME}: no-bytecode round")
            no_pyc = one_round(work, urls, environments, cold)
        measured = []
        for index in range(rounds):
            log(f"{NAME}: round {index + 1}/{rounds}")
            measured.append(one_round(work, urls, environments, warm))
    return summarize(measured, no_pyc)


def total_s(sample: dict[str, Any]) -> float:
    return sample["import_s"] + sample["call_s"]


def summarize(measured: list[dict[str, dict]], no_pyc: dict[str, dict] | None) -> dict[str, Any]:
    names = [name for name in measured[0] if name != "breakdown"]
    per_function = {
        name: {
            "import_ms": 1000 * median([r[name]["import_s"] for r in measured]),
            "call_ms": 1000 * median([r[name]["call_s"] for r in measured]),
            "total_ms": 1000 * median([total_s(r[name]) for r in measured]),
            "first_call_outcome": measured[-1][name]["outcome"],
            "no_bytecode_total_ms": 1000 * total_s(no_pyc[name]) if no_pyc else None,
        }
        for name in names
    }
    baseline = per_function["boto3"]
    for values in per_function.values():
        values["ratio"] = values["total_ms"] / baseline["total_ms"]
        if no_pyc:
            values["no_bytecode_ratio"] = (
                values["no_bytecode_total_ms"] / baseline["no_bytecode_total_ms"]
            )
    breakdown = {
        step: 1000 * median([r["breakdown"][step] for r in measured])
        for step in measured[0]["breakdown"]
    }
    return {"per_function": per_function, "import_breakdown_ms": breakdown}


# ---------------------------------------------------------------------------------------------
# Package size
# ---------------------------------------------------------------------------------------------


def requirement_closure(requirements_file: Path) -> list[importlib.metadata.Distribution]:
    """The installed distributions a `pip install -r` of the file brings, extras included."""
    from packaging.requirements import Requirement

    wanted: list[tuple[str, frozenset[str]]] = []
    for line in requirements_file.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            wanted.append((requirement.name, frozenset(requirement.extras)))
    found: dict[str, importlib.metadata.Distribution] = {}
    while wanted:
        name, extras = wanted.pop()
        dist = importlib.metadata.distribution(name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in found and not extras:
            continue
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras or {""}):
                wanted.append((requirement.name, frozenset(requirement.extras)))
    return sorted(found.values(), key=lambda d: d.metadata["Name"].lower())


def distribution_files(dist: importlib.metadata.Distribution) -> Iterator[tuple[Path, str]]:
    """(path on disk, path inside the layer's python/) of a distribution, bytecode left out."""
    for file in dist.files or []:
        if "__pycache__" in file.parts or file.suffix == ".pyc":
            continue
        path = Path(dist.locate_file(file))
        if path.is_file() and ".." not in file.parts:
            yield path, f"python/{file.as_posix()}"


def zip_size(archive_path: Path, members: Iterator[tuple[Path, str]]) -> tuple[float, float]:
    """(zipped MB, unzipped MB) of the members written with zipfile's default deflate."""
    unzipped = 0
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in members:
            archive.write(path, name)
            unzipped += path.stat().st_size
    return archive_path.stat().st_size / MB, unzipped / MB


def folder_members(folder: Path, prefix: str) -> Iterator[tuple[Path, str]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path, f"{prefix}{path.relative_to(folder).as_posix()}"


def package_size(settings: Settings) -> dict[str, Any]:
    """The predict function's zip and the shared layer's zip as `sam build` would make them."""
    work = settings.scratch(f"{NAME}-package")
    requirements = FUNCTIONS_DIR / "shared" / "requirements.txt"
    dists = requirement_closure(requirements)
    function = zip_size(work / "predict.zip", folder_members(FUNCTIONS_DIR / "predict", ""))
    layer_code = folder_members(LAYER_DIR, "python/")
    third_party = (member for dist in dists for member in distribution_files(dist))
    layer = zip_size(work / "layer.zip", iter([*layer_code, *third_party]))
    boto = [d for d in dists if d.metadata["Name"].lower() in ("boto3", "botocore", "s3transfer")]
    boto_zip = zip_size(work / "boto.zip", (m for d in boto for m in distribution_files(d)))
    return {
        "function_zip_mb": function[0],
        "layer_zip_mb": layer[0],
        "total_zip_mb": function[0] + layer[0],
        "total_unzipped_mb": function[1] + layer[1],
        "boto_in_layer_zip_mb": boto_zip[0],
        "layer_distributions": [f"{d.metadata['Name']}=={d.version}" for d in dists],
    }


# ---------------------------------------------------------------------------------------------


def with_without(values: dict[str, Any]) -> str:
    without = values["no_bytecode_total_ms"]
    return f"{values['total_ms']:.0f} / {'-' if without is None else f'{without:.0f}'}"


def run(settings: Settings) -> dict[str, Any]:
    starts = cold_starts(settings)
    per_function = starts["per_function"]
    package = package_size(settings)
    handlers = {k: v for k, v in per_function.items() if k != "boto3"}
    worst = max(handlers, key=lambda k: handlers[k]["ratio"])
    checks = [
        at_most(f"cold start / import boto3, worst ({worst})", handlers[worst]["ratio"], GOAL),
        info("  predict cold start / import boto3", handlers["predict"]["ratio"]),
        info("  import boto3 ms", per_function["boto3"]["total_ms"]),
        info("  predict cold start ms, with / without .pyc", with_without(handlers["predict"])),
        info("predict package MB zipped (function + layer)", package["total_zip_mb"]),
        info(
            "  MB unzipped",
            package["total_unzipped_mb"],
            goal=f"(Lambda limit {LAMBDA_UNZIPPED_LIMIT_MB:g})",
        ),
    ]
    notes = [
        ", ".join(
            f"{k} {v['import_ms']:.0f}+{v['call_ms']:.0f} ms" for k, v in per_function.items()
        ),
        f"layer carries boto3/botocore/s3transfer: {package['boto_in_layer_zip_mb']:.1f} MB "
        "zipped of the package (functions/shared/requirements.txt pins them)",
        "import breakdown (ms): "
        + ", ".join(f"{k} {v:.0f}" for k, v in starts["import_breakdown_ms"].items()),
    ]
    measurements = {**starts, "package": package}
    return result(NAME, TITLE, checks, measurements, notes)
