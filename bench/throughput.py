"""Benchmark: train.py's training throughput against a bare PyTorch loop, and job start-up.

Side by side in one run, alternating order (A B, B A) so drift in the machine's load falls on
both sides:

- **train.py** as SageMaker runs it (SM_* channels, its own default of data workers, the
  profiler on), on the demo's data: all 1,797 digits as 32-pixel PNGs, resnet18, batch 64.
- **the bare loop** (this module run with `--bare`): the same data decoded once through the
  serving transform into tensors before the clock starts, the same network, optimiser, loss,
  batch size and image size (built by train.py's own `build_model` / `build_optimizer`), one
  training pass and one validation pass an epoch with nothing else: no DataLoader, no
  augmentation, no metrics, no checkpoints.

Throughput is steady state, images of epochs 2..E (train + valid) over the wall time from the
end of epoch 1 to the end of epoch E, read at each process's `[metric] epoch=N split=valid`
lines (the same window as bench/debug_overhead.py). The goal is train.py / bare >= 0.9.
Both run with one intra-op thread (OMP_NUM_THREADS=1, as bench/debug_overhead.py): on this
shared 2-core machine two OpenMP threads wait on each other's time slices (5 images/s against
27 with one thread, measured at load 14), which would measure the machine's load rather than
train.py's overhead. train.py's own thread choice (`pin_threads`) is left out by this.

Start-up of a job is process start to its first training step, estimated from outside as the
wall time at the end of epoch 1 minus one steady-state epoch (the first epoch = start-up + one
epoch); the time to train.py's `[setup]` line (imports, scanning and checking every image,
building the model and loaders) is reported beside it. Goal: under 10 s for the demo's jobs.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REPO_ROOT,
    SINGLE_THREAD_ENV,
    ChildRun,
    Settings,
    at_least,
    at_most,
    base_env,
    digits,
    info,
    log,
    median,
    ratio,
    result,
    run_child,
    run_training,
    split_sizes,
)

NAME = "throughput"
TITLE = "Training throughput: train.py against a bare PyTorch loop; job start-up"
GOAL_RATIO = 0.9
GOAL_STARTUP_S = 10.0
EPOCH_END = r"^\[metric\] epoch=\d+ split=valid "
SETUP_LINE = r"^\[setup\] model="
MODEL = "resnet18"
BATCH_SIZE = 64  # samconfig.toml's local BatchSizes
IMAGE_SIZE = 32  # samconfig.toml's local ImageSize
LEARNING_RATE = 0.02


@dataclass(frozen=True)
class Size:
    per_class: int
    epochs: int
    pairs: int


def size_for(quick: bool) -> Size:
    """The demo's data set (all 1,797 digits: no class has 200) unless quick."""
    if quick:
        return Size(per_class=20, epochs=2, pairs=1)
    return Size(per_class=200, epochs=2, pairs=2)


def run_train_py(data: Path, job_dir: Path, size: Size) -> ChildRun:
    arguments = {
        "model": MODEL,
        "epochs": size.epochs,
        "batch_size": BATCH_SIZE,
        "image_size": IMAGE_SIZE,
        "lr": LEARNING_RATE,
        "hflip": "false",
        "seed": 0,
    }
    return run_training(data, job_dir, arguments, timeout_s=900, **SINGLE_THREAD_ENV)


def run_bare(data: Path, job_dir: Path, size: Size) -> ChildRun:
    job_dir.mkdir(parents=True, exist_ok=True)
    command = [PYTHON, "-m", "bench.throughput", "--bare", str(data), "--epochs", str(size.epochs)]
    return run_child(
        command,
        env=base_env(**SINGLE_THREAD_ENV),
        cwd=REPO_ROOT,
        log_path=job_dir / "bare.log",
        timeout_s=900,
    )


def steady_state(run: ChildRun, images_per_epoch: int) -> dict[str, float]:
    """Images/s from the end of epoch 1 to the end of the last epoch; start-up estimates."""
    ends = run.matching(EPOCH_END)
    if len(ends) < 2:
        raise RuntimeError(f"expected 2+ epoch lines in {run.log_path}")
    wall = ends[-1].wall_s - ends[0].wall_s
    epoch_s = wall / (len(ends) - 1)
    setup = run.first(SETUP_LINE)
    return {
        "images_per_s": images_per_epoch * (len(ends) - 1) / wall,
        "epoch_s": epoch_s,
        "startup_s": ends[0].wall_s - epoch_s,
        "setup_line_s": setup.wall_s if setup else None,
        "job_wall_s": run.wall_s,
    }


def run_pairs(settings: Settings, size: Size, data: Path) -> list[dict[str, Any]]:
    sizes = split_sizes(data)
    images_per_epoch = sizes["train"] + sizes["valid"]
    work = settings.scratch(NAME)
    runners = {"train_py": run_train_py, "bare": run_bare}
    pairs = []
    for pair in range(size.pairs):
        order = ("train_py", "bare") if pair % 2 == 0 else ("bare", "train_py")
        measured: dict[str, Any] = {}
        for variant in order:
            log(f"{NAME}: pair {pair + 1}/{size.pairs}, {variant}")
            job = runners[variant](data, work / f"{variant}-{pair}", size)
            measured[variant] = steady_state(job, images_per_epoch)
        measured["ratio"] = ratio(
            measured["train_py"]["images_per_s"], measured["bare"]["images_per_s"]
        )
        pairs.append(measured)
    return pairs


def run(settings: Settings) -> dict[str, Any]:
    size = size_for(settings.quick)
    data = digits(settings, size.per_class, IMAGE_SIZE)
    pairs = run_pairs(settings, size, data)
    ratios = [p["ratio"] for p in pairs]
    startups = [p["train_py"]["startup_s"] for p in pairs]
    train_py = [p["train_py"]["images_per_s"] for p in pairs]
    bare = [p["bare"]["images_per_s"] for p in pairs]
    setups = [p["train_py"]["setup_line_s"] or float("nan") for p in pairs]
    checks = [
        at_least("train.py / bare loop images/s (median of pairs)", median(ratios), GOAL_RATIO),
        info("  images/s train.py / bare", f"{median(train_py):.0f} / {median(bare):.0f}"),
        at_most("job start-up: process start to first step, s", median(startups), GOAL_STARTUP_S),
        info("  process start to [setup] line, s", f"{median(setups):.1f}"),
    ]
    sizes = split_sizes(data)
    notes = [
        f"{MODEL}, {IMAGE_SIZE} px, batch {BATCH_SIZE}, {size.epochs} epochs, "
        f"{sizes['train']} train + {sizes['valid']} valid images, {size.pairs} pair(s)",
        "pair ratios: " + ", ".join(f"{r:.2f}" for r in ratios),
    ]
    measurements = {"size": size.__dict__, "pairs": pairs}
    return result(NAME, TITLE, checks, measurements, notes)


# ---------------------------------------------------------------------------------------------
# The bare loop (a child process: python -m bench.throughput --bare DATA --epochs N)
# ---------------------------------------------------------------------------------------------


def decoded(split_dir: Path, classes: list[str], image_size: int) -> tuple[Any, Any]:
    """Every image of a split through the serving transform, stacked: (images, labels)."""
    import torch
    from PIL import Image

    from training import inference

    transform = inference.build_eval_transform(image_size, inference.resize_size_for(image_size))
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            with Image.open(path) as image:
                images.append(transform(inference.to_rgb(image)))
            labels.append(index)
    return torch.stack(images), torch.tensor(labels)


def bare_loop(data: Path, epochs: int) -> None:
    """Train and validate over pre-decoded tensors, printing train.py's epoch line format."""
    import torch
    from torch import nn

    from training import data as training_data
    from training import train

    args = train.get_args_parser().parse_args(
        [
            f"--model={MODEL}",
            f"--batch-size={BATCH_SIZE}",
            f"--image-size={IMAGE_SIZE}",
            f"--lr={LEARNING_RATE}",
            f"--epochs={epochs}",
        ]
    )
    torch.manual_seed(0)
    classes = training_data.find_classes(data / "train")
    x_train, y_train = decoded(data / "train", classes, IMAGE_SIZE)
    x_valid, y_valid = decoded(data / "valid", classes, IMAGE_SIZE)
    model = train.build_model(args, len(classes))
    optimizer, scheduler = train.build_optimizer(args, model)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            if len(batch) < 2:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(x_valid), BATCH_SIZE):
                criterion(
                    model(x_valid[start : start + BATCH_SIZE]), y_valid[start : start + BATCH_SIZE]
                )
        scheduler.step()
        seconds = time.perf_counter() - started
        print(f"[metric] epoch={epoch} split=valid seconds={seconds:.3f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the bare PyTorch loop of bench/throughput.py")
    parser.add_argument("--bare", type=Path, required=True, help="data set root")
    parser.add_argument("--epochs", type=int, required=True)
    args = parser.parse_args(argv)
    bare_loop(args.bare, args.epochs)


if __name__ == "__main__":
    main(sys.argv[1:])
