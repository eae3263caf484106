"""Benchmark: the drift monitor's false alarms on clean traffic and its detection of shifts.

A real train.py job (the demo's 32-px digits, 12 epochs, from scratch) writes the model and
its monitoring baseline on the validation split. Batches of held-back test images then go
through the model server's own code (training/inference.py: decode, predict, the projected
embedding every answer carries), are turned into captured requests in AWS's format and judged
by the monitor's code (pipeline_common.drift.features_of + compare), exactly as
functions/monitor_endpoint judges a window. No local cloud: the endpoint's plumbing is tested
in tests/e2e/test_monitoring_local.py; this measures the statistics over many batches.

Clean batches are drawn from the test split (never seen in training, like the validation
split); shifted ones are the same images inverted, rotated by 90 degrees, with Gaussian noise
(sigma 80 of 255), or replaced by images of another kind (random shapes). Goals: clean batches
called drifted <= 1 % (ALPHA); every shifted batch found, and found by the embedding test.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import Image
from pipeline_common.capture import parse_line
from pipeline_common.drift import ALPHA, CHECKS, compare, features_of

from bench.common import (
    REPO_ROOT,
    Settings,
    at_least,
    at_most,
    digits,
    info,
    log,
    result,
    run_training,
)
from tests.support.shifts import SHIFTS, png

NAME = "drift"
TITLE = "Drift monitor: false alarms on clean batches, detection of shifted ones"
BATCH = 30


def captured(body: bytes, answer: dict[str, Any]) -> Any:
    """One request as data capture records it (the line the monitor reads)."""
    from mlops.local.sagemaker.capture import capture_line

    config = {
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }
    response = (json.dumps(answer).encode(), "application/json")
    line = capture_line(config, (body, "image/png"), response, datetime.now(UTC))
    return parse_line(json.dumps(line))


def judge(model: Any, baseline: dict[str, Any], bodies: list[bytes], seed: int) -> list:
    sys.path.insert(0, str(REPO_ROOT / "training"))
    import inference

    requests = []
    for body in bodies:
        image = inference.decode_request(body, "image/png")
        requests.append(captured(body, inference.predict(image, model)))
    return compare(baseline, features_of(requests), seed=seed)


def run(settings: Settings) -> dict[str, Any]:
    data = digits(settings, per_class=60 if settings.quick else 180, size=32)
    job = settings.scratch("drift-model")
    epochs = 4 if settings.quick else 12
    log(f"drift: training the model ({epochs} epochs)")
    run_training(
        data,
        job,
        {
            "model": "resnet18",
            "epochs": epochs,
            "batch_size": 64,
            "lr": 0.03,
            "image_size": 32,
            "workers": 0,
            "pretrained": "false",
            "hflip": "false",
        },
        timeout_s=3600,
    )
    sys.path.insert(0, str(REPO_ROOT / "training"))
    import inference

    model = inference.model_fn(str(job / "model"))
    baseline = json.loads((job / "model" / "baseline.json").read_text())
    tests = sorted((data / "test").glob("*/*.png"))
    pick, rng = random.Random(0), np.random.default_rng(0)
    clean_batches = 20 if settings.quick else 100
    shifted_batches = 5 if settings.quick else 20
    clean_alarms, per_check = 0, dict.fromkeys(CHECKS, 0)
    for index in range(clean_batches):
        found = judge(model, baseline, [p.read_bytes() for p in pick.sample(tests, BATCH)], index)
        clean_alarms += any(f.drifted for f in found)
        for f in found:
            per_check[f.check] += f.drifted
    detection: dict[str, dict[str, int]] = {}
    for name, shift in SHIFTS.items():
        counts = {"batches": shifted_batches, "found": 0}
        counts.update(dict.fromkeys(CHECKS, 0))
        for index in range(shifted_batches):
            bodies = [png(shift(Image.open(p), rng)) for p in pick.sample(tests, BATCH)]
            found = judge(model, baseline, bodies, 1000 + index)
            counts["found"] += any(f.drifted for f in found)
            for f in found:
                counts[f.check] += f.drifted
        detection[name] = counts
        log(f"drift: {name}: {counts}")
    false_rate = clean_alarms / clean_batches
    checks = [
        at_most(f"clean batches called drifted ({clean_batches} of {BATCH})", false_rate, ALPHA),
        *(
            at_least(f"{name}: found by the embedding test", c["embedding"] / c["batches"], 1.0)
            for name, c in detection.items()
        ),
        info("validation images in the baseline", baseline["count"]),
    ]
    measurements = {
        "clean": {"batches": clean_batches, "alarms": clean_alarms, "per_check": per_check},
        "shifted": detection,
        "batch": BATCH,
        "baseline_images": baseline["count"],
    }
    return result(NAME, TITLE, checks, measurements)
