"""Benchmark 1: what the smdebug hook and the in-job rules cost the training loop.

train.py runs as SageMaker runs it, twice per pair: once plain, once with the hook config the
local SageMaker writes for the pipeline's profiled retrain (SMDEBUG_CONFIG_FILE_PATH, the
collections and save intervals of functions/shared's COLLECTION_SAVE_INTERVALS) and
`--run-rules true`. Same data, same seed, same steps; the order alternates (A B, B A, ...) so
drift in the machine's load falls on both sides.

Throughput is steady state: images of epochs 2..E divided by the time between the end of
epoch 1 and the end of epoch E, read at the script's own `[metric] ... split=valid` lines, so
process start-up, data scanning, the first-step tensor save and the test split are left out.
The goal is on images per CPU-second of the training process (one intra-op thread), which is
what it would do on an idle core, as the median of the pairs' ratios (a pair that ran while
the load changed cannot move it); wall-clock images/s is reported beside it. The rules run
once after training, so they are reported as their own seconds, not folded into throughput.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_common.training import collection_configurations

from bench.common import (
    SINGLE_THREAD_ENV,
    ChildRun,
    Settings,
    at_least,
    digits,
    info,
    log,
    median,
    ratio,
    result,
    run_training,
    split_sizes,
)

NAME = "debug_overhead"
TITLE = "Debugging overhead: hooked/unhooked training throughput"
GOAL = 0.90
EPOCH_END = r"^\[metric\] epoch=\d+ split=valid "


@dataclass(frozen=True)
class Size:
    per_class: int
    image_size: int
    batch_size: int
    epochs: int
    pairs: int


def size_for(quick: bool) -> Size:
    """32-pixel digits (the local pipeline's ImageSize): the hook's per-step cost is fixed
    while the forward/backward cost grows with pixels, so small images are the worst case."""
    if quick:
        return Size(per_class=12, image_size=32, batch_size=16, epochs=4, pairs=1)
    return Size(per_class=30, image_size=32, batch_size=32, epochs=6, pairs=3)


def pipeline_hook_config(tensor_dir: Path) -> dict[str, Any]:
    """The JSON the local SageMaker writes for the profiled retrain's DebugHookConfig."""
    return {
        "LocalPath": str(tensor_dir),
        "S3OutputPath": "s3://bench/debug",
        "CollectionConfigurations": collection_configurations(),
    }


def run_variant(data: Path, job_dir: Path, size: Size, hooked: bool) -> ChildRun:
    arguments: dict[str, Any] = {
        "model": "resnet18",
        "epochs": size.epochs,
        "batch_size": size.batch_size,
        "image_size": size.image_size,
        "lr": 0.02,
        "hflip": "false",
        "workers": 0,
        "seed": 0,
    }
    extra_env = dict(SINGLE_THREAD_ENV)
    if hooked:
        config = job_dir / "debughookconfig.json"
        job_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(pipeline_hook_config(job_dir / "tensors")))
        extra_env["SMDEBUG_CONFIG_FILE_PATH"] = str(config)
        arguments["run_rules"] = "true"
    return run_training(data, job_dir, arguments, timeout_s=600, **extra_env)


def steady_state(run: ChildRun, images_per_epoch: int) -> dict[str, float]:
    """Images, CPU seconds and wall seconds from the end of epoch 1 to the end of the last."""
    ends = run.matching(EPOCH_END)
    if len(ends) < 2 or ends[0].cpu_s is None or ends[-1].cpu_s is None:
        raise RuntimeError(f"expected 2+ epoch lines with CPU times in {run.log_path}")
    return {
        "images": images_per_epoch * (len(ends) - 1),
        "cpu_s": ends[-1].cpu_s - ends[0].cpu_s,
        "wall_s": ends[-1].wall_s - ends[0].wall_s,
    }


def rules_seconds(run: ChildRun) -> float | None:
    """Wall seconds from the test metric line to the rules summary line (the in-job rules)."""
    test, rules = run.first(r"split=test "), run.first(r"^\[rules\] ")
    return rules.wall_s - test.wall_s if test and rules else None


def run_pairs(settings: Settings, size: Size, data: Path) -> list[dict[str, Any]]:
    """Plain and hooked jobs in alternating order; per pair: steady state, job CPU, rules."""
    sizes = split_sizes(data)
    images_per_epoch = sizes["train"] + sizes["valid"]
    work = settings.scratch(NAME)
    pairs = []
    for pair in range(size.pairs):
        order = ("plain", "hooked") if pair % 2 == 0 else ("hooked", "plain")
        measured: dict[str, Any] = {}
        for variant in order:
            log(f"{NAME}: pair {pair + 1}/{size.pairs}, {variant}")
            job = run_variant(data, work / f"{variant}-{pair}", size, variant == "hooked")
            measured[variant] = {**steady_state(job, images_per_epoch), "job_cpu_s": job.cpu_s}
            if variant == "hooked":
                measured["rules_s"] = rules_seconds(job)
        pairs.append(measured)
    return pairs


def hook_ms_per_step(pair: dict[str, Any], steps: int) -> float:
    """Extra CPU milliseconds per step of the hooked job: the hook's cost in absolute terms,
    which does not shrink on faster hardware the way the ratio's denominator does."""
    return 1000 * (pair["hooked"]["cpu_s"] - pair["plain"]["cpu_s"]) / steps


def steady_steps(data: Path, size: Size) -> int:
    """Training + validation steps in epochs 2..E (what the steady-state window covers)."""
    sizes = split_sizes(data)
    per_epoch = sum(math.ceil(n / size.batch_size) for n in sizes.values())
    return per_epoch * (size.epochs - 1)


def pair_ratio(pair: dict[str, Any], key: str) -> float:
    """hooked/unhooked throughput of one pair = plain seconds / hooked seconds (same images)."""
    return ratio(pair["plain"][key], pair["hooked"][key]) or float("nan")


def run(settings: Settings) -> dict[str, Any]:
    size = size_for(settings.quick)
    data = digits(settings, size.per_class, size.image_size)
    pairs = run_pairs(settings, size, data)
    cpu_ratios = [pair_ratio(p, "cpu_s") for p in pairs]
    wall_ratios = [pair_ratio(p, "wall_s") for p in pairs]
    job_ratios = [pair_ratio(p, "job_cpu_s") for p in pairs]
    rules = [p["rules_s"] for p in pairs if p["rules_s"] is not None]
    per_step = [hook_ms_per_step(p, steady_steps(data, size)) for p in pairs]
    # The median over pairs: one pair that ran while the machine's load changed cannot move it.
    checks = [
        at_least("hooked/unhooked images per CPU-s (median of pairs)", median(cpu_ratios), GOAL),
        info("  same per wall-s", median(wall_ratios)),
        info("  hook CPU ms per step (train + valid)", median(per_step)),
        info("  whole job incl. start-up + rules, CPU ratio", median(job_ratios)),
        info("  in-job rules, seconds after training", median(rules) if rules else None),
    ]
    measurements = {
        "size": size.__dict__,
        "pairs": pairs,
        "pair_ratios_cpu": cpu_ratios,
        "pair_ratios_wall": wall_ratios,
        "pair_ratios_job_cpu": job_ratios,
        "hook_ms_per_step": per_step,
        "steady_steps": steady_steps(data, size),
    }
    notes = [
        "resnet18, 32-px digits, one intra-op thread, hook config of the profiled retrain",
        f"per-pair CPU ratios: {', '.join(f'{r:.3f}' for r in cpu_ratios)}",
    ]
    return result(NAME, TITLE, checks, measurements, notes)
