"""Benchmark 6: peak memory of a training job and of the model server, resnet18 and resnet50.

Peak RSS is the kernel's high-water mark (VmHWM) of the process doing the work: train.py (one
process: --workers 0) sampled while it runs, the model server after a few requests. (ru_maxrss
at exit would add ~130 MB that the CUDA build of torch touches while the interpreter shuts down;
it is kept in results.json as exit_max_rss_mb.) Both are set against
what the model itself needs, computed in this process on the same architecture:

- parameters: count x 4 bytes (float32);
- activations: one forward pass of a training batch (the server: one image), with forward hooks
  on every leaf module summing the bytes of the distinct output tensors (an in-place ReLU's
  output shares its input's storage and is counted once).

and against the fixed cost of the runtime, measured in the same run: a fresh interpreter that
imports what train.py imports (torch, torchvision, smdebug, pandas ...) or what inference.py
imports. The ratio reported is (peak RSS - runtime) / (parameters + activations): how many
times the model's own bytes the process holds beyond the runtime. Training also keeps the
gradients and SGD's momentum (2 x parameters more) and the tensors autograd saves for backward,
so about 2-4 is expected there; serving should stay near 1-2.

Part 2, bad and costly input: the model server's peak memory growth for one request of each of
the costliest inputs under the API's 4 MiB image limit (tests/reliability/bad_images.py's
worst_inputs: the most pixels decoded, in the widest modes, a progressive JPEG, a huge baseline
JPEG decoded at a reduced scale, PNG text) and of every kind of bad image. Each costly input
gets a fresh server, warmed by one ordinary request; growth = VmHWM after the request - VmHWM
before it. Goal: under 100 MB for the worst.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.common import (
    PYTHON,
    REPO_ROOT,
    SINGLE_THREAD_ENV,
    TRAINING_DIR,
    ChildRun,
    Settings,
    at_most,
    base_env,
    digits,
    info,
    log,
    peak_rss_bytes,
    result,
    run_child,
    run_training,
)
from tests.support.model_server import model_server

NAME = "memory"
TITLE = "Memory: peak RSS against parameters + activations"
ARCHITECTURES = ("resnet18", "resnet50")
MB = 1024 * 1024
GROWTH_GOAL_MB = 100.0
HIGH_WATER = "print('BENCH', open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
TRAIN_IMPORTS = f"import sys; sys.path.insert(0, '.'); import train; {HIGH_WATER}"
SERVE_IMPORTS = f"import sys; sys.path.insert(0, '.'); import inference; {HIGH_WATER}"


@dataclass(frozen=True)
class Size:
    architectures: tuple[str, ...]
    image_size: int
    batch_size: int
    requests: int


def size_for(quick: bool) -> Size:
    """224 px is the template's ImageSize default (what AWS trains and serves)."""
    if quick:
        return Size(("resnet18",), image_size=32, batch_size=8, requests=2)
    return Size(ARCHITECTURES, image_size=224, batch_size=16, requests=5)


def model_bytes(arch: str, batch: int, image_size: int, training: bool) -> dict[str, int]:
    """float32 parameter bytes and the activation bytes of one forward pass of `batch`."""
    from training.inference import build_model

    model = build_model(arch, num_classes=10).train(training)
    outputs: list[torch.Tensor] = []  # kept alive, so no freed storage's address is reused

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        for tensor in output if isinstance(output, tuple | list) else (output,):
            if isinstance(tensor, torch.Tensor):
                outputs.append(tensor)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros(batch, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in outputs}
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "parameters": parameters,
        "parameter_bytes": 4 * parameters,
        "activations": sum(storages.values()),
    }


def runtime_rss(settings: Settings, imports: str, tag: str) -> int:
    """Peak RSS of a fresh interpreter that only imports what the process under test imports."""
    run = run_child(
        [PYTHON, "-c", imports],
        env=base_env(**SINGLE_THREAD_ENV),
        cwd=TRAINING_DIR,
        log_path=settings.scratch(NAME) / f"{tag}.log",
        timeout_s=120,
    )
    line = run.first(r"^BENCH ")
    if line is None:
        raise RuntimeError(f"no VmHWM line in {run.log_path}")
    return int(line.text.split()[1]) * 1024


def training_peak(settings: Settings, arch: str, size: Size) -> tuple[ChildRun, Path]:
    """One train.py job (1 epoch) with its peak RSS; returns it and the model folder."""
    data = digits(settings, per_class=5, size=size.image_size)
    job_dir = settings.scratch(NAME) / arch
    arguments = {
        "model": arch,
        "epochs": 1,
        "batch_size": size.batch_size,
        "image_size": size.image_size,
        "hflip": "false",
        "workers": 0,
    }
    run = run_training(data, job_dir, arguments, timeout_s=600, **SINGLE_THREAD_ENV)
    return run, job_dir / "model"


def serving_peak(settings: Settings, model_dir: Path, arch: str, size: Size) -> int:
    """VmHWM of a model server after `size.requests` predictions."""
    work = settings.scratch(NAME)
    image = sorted((digits(settings, 5, size.image_size) / "test").rglob("*.png"))[0]
    env = base_env(**SINGLE_THREAD_ENV, MODEL_SERVER_LOG_LEVEL="WARNING")
    with model_server(
        model_dir, work, name=f"{arch}-server", python=PYTHON, env=env, cwd=REPO_ROOT
    ) as (process, port):
        for _ in range(size.requests):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=image.read_bytes(),
                headers={"Content-Type": "image/png"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                json.loads(response.read())
        peak = peak_rss_bytes(process.pid)
    if peak is None:
        raise RuntimeError(f"could not read the model server's VmHWM (pid {process.pid})")
    return peak


def post(port: int, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code


def input_growth(settings: Settings, model_dir: Path) -> dict[str, Any]:
    """Peak RSS growth of a fresh, warmed model server for each costly input (and the corpus)."""
    from tests.reliability.bad_images import corpus, worst_inputs

    work = settings.scratch(NAME)
    warm = sorted((digits(settings, 5, 32) / "test").rglob("*.png"))[0].read_bytes()
    inputs = worst_inputs()[:3] if settings.quick else worst_inputs()
    growth: dict[str, Any] = {}
    for image in [*inputs, None]:
        tag = image.kind if image is not None else "bad-image-corpus"
        env = base_env(**SINGLE_THREAD_ENV, MODEL_SERVER_LOG_LEVEL="WARNING")
        with model_server(
            model_dir, work, name=f"growth-{tag}", python=PYTHON, env=env, cwd=REPO_ROOT
        ) as (process, port):
            assert post(port, warm, "image/png") == 200
            before = peak_rss_bytes(process.pid) or 0
            if image is not None:
                statuses = [post(port, image.body, image.content_type)]
            else:  # every bad image once, in one server: the most any of them added
                statuses = [post(port, bad.body, bad.content_type) for bad in corpus()]
            after = peak_rss_bytes(process.pid) or 0
        growth[tag] = {
            "growth_mb": (after - before) / MB,
            "statuses": sorted(set(statuses)),
            "bytes": len(image.body) if image is not None else None,
        }
        log(f"{NAME}: {tag}: +{(after - before) / MB:.1f} MB, status {sorted(set(statuses))}")
    return growth


def figures(peak: int, runtime: int, model: dict[str, int]) -> dict[str, float]:
    own = model["parameter_bytes"] + model["activations"]
    return {
        "peak_rss_mb": peak / MB,
        "runtime_rss_mb": runtime / MB,
        "parameters_mb": model["parameter_bytes"] / MB,
        "activations_mb": model["activations"] / MB,
        "peak_over_model": peak / own,
        "excess_over_model": (peak - runtime) / own,
    }


def run(settings: Settings) -> dict[str, Any]:
    size = size_for(settings.quick)
    log(f"{NAME}: runtime baselines")
    train_runtime = runtime_rss(settings, TRAIN_IMPORTS, "train-imports")
    serve_runtime = runtime_rss(settings, SERVE_IMPORTS, "serve-imports")
    measurements: dict[str, Any] = {"size": size.__dict__}
    checks = []
    for arch in size.architectures:
        log(f"{NAME}: {arch} training job and model server")
        job, model_dir = training_peak(settings, arch, size)
        serve_peak = serving_peak(settings, model_dir, arch, size)
        train = figures(
            job.peak_rss_bytes,
            train_runtime,
            model_bytes(arch, size.batch_size, size.image_size, training=True),
        )
        train["exit_max_rss_mb"] = job.exit_max_rss_bytes / MB
        serve = figures(
            serve_peak, serve_runtime, model_bytes(arch, 1, size.image_size, training=False)
        )
        measurements[arch] = {"training": train, "serving": serve}
        for role, values in (("training", train), ("serving", serve)):
            checks.append(
                info(
                    f"{arch} {role}: (peak - runtime) / (params + activations)",
                    values["excess_over_model"],
                )
            )
            checks.append(
                info(
                    "  peak / runtime / params / activations MB",
                    f"{values['peak_rss_mb']:.0f} / {values['runtime_rss_mb']:.0f} / "
                    f"{values['parameters_mb']:.0f} / {values['activations_mb']:.0f}",
                )
            )
    log(f"{NAME}: model server memory per request, costly and bad input")
    growth = input_growth(settings, model_dir)
    measurements["input_growth"] = growth
    worst_tag = max(growth, key=lambda tag: growth[tag]["growth_mb"])
    checks.append(
        at_most(
            f"model server peak growth for one request, worst input ({worst_tag}), MB",
            growth[worst_tag]["growth_mb"],
            GROWTH_GOAL_MB,
        )
    )
    server_errors = [tag for tag, g in growth.items() if any(s >= 500 for s in g["statuses"])]
    checks.append(info("inputs answered with a 5xx", ", ".join(server_errors) or "none"))
    notes = [
        f"{size.image_size}px, training batch {size.batch_size}, one intra-op thread, "
        "--workers 0; activations counted once per storage"
    ]
    return result(NAME, TITLE, checks, measurements, notes)
