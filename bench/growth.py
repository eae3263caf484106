"""Benchmark: how upload, validation and one epoch's data path grow with the data set.

Curves, not points (issue 17), measured in one run on one local cloud (persistence on, as
`mlops up` runs it), at 1k, 5k and 20k images of 10 classes, and at the middle size with 133
classes (the dog-breed count) beside 10:

- **upload**: `mlops upload`'s transfer (mlops/upload.py: 16 threads, one client) of every
  file; files/s. Beside it at the smallest size, side by side: the transfer as it was before
  (one `upload_file` after the other) and the same PutObjects on one thread.
- **validation**: the ValidateDataset Lambda invoked through the local cloud's Lambda API
  (its template environment, Timeout and MemorySize), which lists the prefix, compares it with
  the manifest and reads and checks every image. The listing alone (the same paginated
  ListObjectsV2, from here) is timed too: the rest is reading images.
- **epoch**: train.py's own data path in a child process (`load_data`: every image checked
  once; `build_loaders`; one pass of the train loader: decode, resize, crop, to tensor) with
  its defaults (workers 0 here, batch 64, 32 px), in CPU seconds of the one-thread child.
  The network's step is left out of the curve (its cost per image does not depend on the
  data set's size) and reported once per image.
- **report**: drawing the figures and rendering the HTML of a run whose tuning job had 2 and
  50 trials (pipeline_report's draw + render, what `mlops report` and the console's report
  page run). The trials come from leaderboard.json in one GET whatever their number, so the
  collection is left out; the console's /tuning-jobs page (SageMaker's own listing) is not
  measured: the local SageMaker would have to run 50 trainings to list them.

Sizes are measured in the order 1k, 5k/10, 5k/133, 5k/133, 5k/10, 20k, 1k: the class
comparison is A B B A and the smallest size is the mean of both ends, so a drift in the
machine's load falls on both sides of each ratio (upload and validation are wall seconds).

The images are scikit-learn's digits as 32-px PNGs (about 500 bytes), reused round-robin to
reach 20k; labels are the folder names. Checks: each curve's growth exponent (slope of log
time over log size, smallest to largest; images, or trials for the report) <= 1.1; upload
>= 200 files/s at the largest size; 133 classes cost at most 1.25x the time per image of 10
at the same image count. Figures: docs/images/growth-images.png and docs/images/growth-classes.png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import mimetypes
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REPO_ROOT,
    SINGLE_THREAD_ENV,
    Settings,
    at_least,
    at_most,
    base_env,
    info,
    log,
    result,
    run_child,
)

NAME = "growth"
TITLE = "Growth: upload, validation, epoch data path at 1k-20k images; report at 2-50 trials"
GOAL_EXPONENT = 1.1
GOAL_FILES_PER_S = 200.0
GOAL_CLASS_RATIO = 1.25
IMAGE_SIZE = 32
FIGURES = REPO_ROOT / "docs" / "images"
EPOCH_LINE = "[growth-epoch] "
# Per class: one valid and one test image first, then 80/10/10.
SPLIT_CYCLE = ("train",) * 8 + ("valid", "test")
REPORT_TRIALS = (2, 50)
CLOUD_PARAMETERS = {"MinTrainImagesPerClass": "1", "MinEvalImagesPerClass": "1"}


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    classes: tuple[int, int]  # (few, many) at the middle size
    model_batches: int


def plan_for(quick: bool) -> Plan:
    if quick:
        return Plan(sizes=(200, 400), classes=(10, 133), model_batches=1)
    return Plan(sizes=(1_000, 5_000, 20_000), classes=(10, 133), model_batches=4)


# -- data ---------------------------------------------------------------------------------------
def digit_pngs() -> list[bytes]:
    """Every digit of scikit-learn's set as a 32-px RGB PNG (the demo data's images)."""
    from sklearn.datasets import load_digits

    from mlops.sample_data import digit_image

    encoded = []
    for pixels in load_digits().images:
        buffer = io.BytesIO()
        digit_image(pixels, IMAGE_SIZE).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def write_dataset(root: Path, images: int, classes: int, pngs: list[bytes]) -> Path:
    """`images` files in `classes` folders, every class in every split (cached per run)."""
    if (root / "test").is_dir():
        return root
    for index in range(images):
        class_index, position = index % classes, index // classes
        split = SPLIT_CYCLE[(position + 8) % len(SPLIT_CYCLE)]  # valid, test, then train...
        folder = root / split / f"{class_index:03d}.class-{class_index}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:06d}.png").write_bytes(pngs[index % len(pngs)])
    return root


# -- the local cloud ---------------------------------------------------------------------------
@contextlib.contextmanager
def cloud(settings: Settings) -> Iterator[Any]:
    from mlops.local.process import start_cloud_process, stop_cloud_process
    from mlops.target import local_target

    root = settings.scratch(f"{NAME}-cloud")
    process, _ = start_cloud_process(root, parameters=CLOUD_PARAMETERS)
    try:
        yield local_target(root)
    finally:
        stop_cloud_process(process)


def validate_function(target: Any) -> str:
    """The deployed ValidateDataset function's name (template.yaml's FunctionName)."""
    names = [
        f["FunctionName"]
        for page in target.client("lambda").get_paginator("list_functions").paginate()
        for f in page["Functions"]
        if f["FunctionName"].endswith("-validate-dataset")
    ]
    if len(names) != 1:
        raise RuntimeError(f"expected one *-validate-dataset function, found {names}")
    return names[0]


def warm_up(target: Any, function: str) -> None:
    """One invocation (a missing manifest: DatasetInvalid at once) starts the function's
    worker, so the smallest size is not charged a cold start the larger ones do not pay."""
    event = {
        "bucket": target.data_bucket,
        "manifest_key": f"bench/{NAME}/none/manifest.json",
        "dataset": "none",
        "execution_name": "bench-warm-up",
    }
    target.client("lambda").invoke(FunctionName=function, Payload=json.dumps(event).encode())


# -- measurements ------------------------------------------------------------------------------
def measure_upload(target: Any, data: Path, dataset: str) -> dict[str, Any]:
    from pipeline_common.naming import dataset_prefix

    from mlops.manifest import build_manifest, list_dataset_files
    from mlops.upload import upload_client_config, upload_files

    files = list_dataset_files(data)
    s3 = target.client("s3", config=upload_client_config())
    sent = upload_files(
        s3, target.data_bucket, dataset_prefix(dataset), files, stream=io.StringIO()
    )
    manifest = build_manifest(dataset, files, sha256=sent.sha256)
    again = upload_files(
        s3, target.data_bucket, dataset_prefix(dataset), files, stream=io.StringIO()
    )
    return {
        "files": len(files),
        "seconds": sent.seconds,
        "files_per_s": sent.files_per_s,
        "again_seconds": again.seconds,
        "again_skipped": again.skipped,
        "manifest": manifest,
    }


def measure_upload_baselines(target: Any, data: Path) -> dict[str, float]:
    """At one size, side by side: before (serial upload_file), one thread, 16 threads."""
    from mlops.manifest import list_dataset_files
    from mlops.upload import UPLOAD_WORKERS, upload_client_config, upload_files

    files = list_dataset_files(data)
    s3 = target.client("s3", config=upload_client_config())
    rates: dict[str, float] = {}
    started = time.perf_counter()
    for item in files:
        content_type = mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"
        s3.upload_file(
            str(item.path),
            target.data_bucket,
            f"datasets/serial-before/{item.key}",
            ExtraArgs={"ContentType": content_type},
        )
    rates["before_serial_upload_file"] = len(files) / (time.perf_counter() - started)
    for workers in (1, UPLOAD_WORKERS):
        prefix = f"datasets/threads-{workers}/"
        sent = upload_files(
            s3, target.data_bucket, prefix, files, workers=workers, stream=io.StringIO()
        )
        rates[f"put_object_{workers}_threads"] = sent.files_per_s
    return rates


def measure_validation(
    target: Any, function: str, dataset: str, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Invoke ValidateDataset on the uploaded set (manifest outside the trigger's prefix)."""
    from botocore.config import Config
    from pipeline_common.naming import dataset_prefix

    s3 = target.client("s3")
    key = f"bench/{NAME}/{dataset}/manifest.json"
    s3.put_object(Bucket=target.data_bucket, Key=key, Body=json.dumps(manifest).encode())
    started = time.perf_counter()
    pages = 0
    for _ in s3.get_paginator("list_objects_v2").paginate(
        Bucket=target.data_bucket, Prefix=dataset_prefix(dataset)
    ):
        pages += 1
    listing_s = time.perf_counter() - started
    event = {
        "bucket": target.data_bucket,
        "manifest_key": key,
        "dataset": dataset,
        "execution_name": f"bench-{dataset}",
    }
    config = Config(read_timeout=1000, retries={"max_attempts": 1})
    started = time.perf_counter()
    answer = target.client("lambda", config=config).invoke(
        FunctionName=function, Payload=json.dumps(event).encode()
    )
    seconds = time.perf_counter() - started
    payload = json.loads(answer["Payload"].read() or b"null")
    if answer.get("FunctionError"):
        raise RuntimeError(f"ValidateDataset failed on {dataset}: {str(payload)[:500]}")
    return {"seconds": seconds, "listing_s": listing_s, "list_pages": pages}


def measure_epoch(settings: Settings, data: Path, model_batches: int) -> dict[str, float]:
    command = [PYTHON, "-m", "bench.growth", "--epoch", str(data)]
    command += ["--model-batches", str(model_batches)]
    run = run_child(
        command,
        env=base_env(**SINGLE_THREAD_ENV),
        cwd=REPO_ROOT,
        log_path=settings.scratch(f"{NAME}-epoch") / f"{data.name}.log",
        timeout_s=1800,
    )
    line = run.first(r"^\[growth-epoch\] ")
    if line is None:
        raise RuntimeError(f"no {EPOCH_LINE!r} line from the epoch child:\n{run.tail()}")
    return json.loads(line.text[len(EPOCH_LINE) :])


def measure_set(
    settings: Settings,
    target: Any,
    function: str,
    plan: Plan,
    images: int,
    classes: int,
    round_: int = 0,
) -> dict[str, Any]:
    """Upload, validate and pass over one data set; `round_` names a fresh prefix so a
    repeat uploads everything again."""
    folder = f"g{images}-c{classes}"
    dataset = f"{folder}-r{round_}"
    data = write_dataset(settings.work_dir / "data" / folder, images, classes, PNGS.get())
    upload = measure_upload(target, data, dataset)
    validation = measure_validation(target, function, dataset, upload.pop("manifest"))
    epoch = measure_epoch(settings, data, plan.model_batches)
    log(
        f"{NAME}: {images} images, {classes} classes: upload {upload['seconds']:.1f} s "
        f"({upload['files_per_s']:.0f}/s), validation {validation['seconds']:.1f} s, "
        f"epoch data path {epoch['epoch_s']:.1f} CPU s (+ check {epoch['scan_s']:.1f} CPU s)"
    )
    return {
        "images": images,
        "classes": classes,
        "folder": folder,
        **_prefixed(upload, "upload"),
        **_prefixed(validation, "validation"),
        **_prefixed(epoch, "epoch"),
    }


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of repeated measurements of one data set (numbers averaged, the rest kept)."""
    merged = dict(rows[0])
    for key, value in rows[0].items():
        values = [row[key] for row in rows]
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and len(set(values)) > 1:
            merged[key] = statistics.fmean(values)
    return merged


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}_{key}": value for key, value in values.items()}


class _Pngs:
    """The digit PNGs, encoded once per process on first use."""

    def __init__(self) -> None:
        self.cached: list[bytes] | None = None

    def get(self) -> list[bytes]:
        if self.cached is None:
            self.cached = digit_pngs()
        return self.cached


PNGS = _Pngs()


# -- the report at 2 against 50 trials ---------------------------------------------------------
def report_data(trials: int) -> Any:
    """A finished run's report data with a tuning job of `trials` trials (no other records).

    The report reads the trials from leaderboard.json in one GET whatever their number, so
    what grows with them is drawing and rendering, timed here on this data."""
    from datetime import UTC, datetime, timedelta

    from pipeline_report import analysis as an
    from pipeline_report import executions as ex
    from pipeline_report.collect import RunData
    from pipeline_report.describe import Tuning

    started = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [
        {
            "name": f"bench-tuning-{index:03d}-abcdef",
            "status": "Completed" if index % 7 else "Stopped",
            "objective": 0.5 + 0.4 * math.sin(index),
            "hyperparameters": {"lr": 10 ** (-4 + 3 * (index % 11) / 10), "batch_size": 64},
            "failure_reason": None,
            "started": (started + timedelta(minutes=index)).isoformat(),
            "ended": (started + timedelta(minutes=index + 5)).isoformat(),
        }
        for index in range(trials)
    ]
    tuning = Tuning(
        job_name="bench-tuning",
        status="Completed",
        strategy="Bayesian",
        objective_metric="valid:loss",
        objective_type="Minimize",
        trials=an.sort_trials(rows, "Minimize"),
        trials_source="leaderboard.json (written by FindBest)",
        best_name=rows[0]["name"],
        best_objective=rows[0]["objective"],
        best_hyperparameters=rows[0]["hyperparameters"],
        counters={"Completed": trials},
        max_jobs=trials,
        learning_rate="lr",
        learning_rate_log=True,
        learning_rate_range=(1e-4, 1e-1),
    )
    view = ex.ExecutionView(
        arn="arn:aws:states:us-east-1:123456789012:execution:pipeline:bench",
        name="bench",
        status="SUCCEEDED",
        started=started,
        stopped=started + timedelta(hours=1),
        input={},
        output={},
        error=None,
        cause=None,
    )
    return RunData(
        view=view,
        target_name="bench",
        generated=started,
        timeline=[],
        records={},
        tuning=tuning,
    )


def measure_report(trials: int, rounds: int) -> dict[str, float]:
    """Median seconds to draw the figures and render the HTML (the console serves the same)."""
    from pipeline_report.build import draw as draw_figures
    from pipeline_report.render import render

    data = report_data(trials)
    draw_figures(data)  # matplotlib's first figure pays its imports and font cache
    timings, size = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        html = render(data, draw_figures(data))
        timings.append(time.perf_counter() - started)
        size = len(html)
    return {"trials": trials, "seconds": statistics.median(timings), "html_bytes": size}


# -- checks, figures, run ------------------------------------------------------------------
def exponent(points: list[tuple[int, float]]) -> float | None:
    """Slope of log(time) over log(size) between the smallest and largest size."""
    (n0, t0), (n1, t1) = points[0], points[-1]
    if n1 == n0 or t0 <= 0 or t1 <= 0:
        return None
    return math.log(t1 / t0) / math.log(n1 / n0)


CURVES = {
    "upload": "upload_seconds",
    "validation": "validation_seconds",
    "epoch data path (CPU s)": "epoch_epoch_s",
    "image check, train.py setup (CPU s)": "epoch_scan_s",
}


def draw(curve_rows: list[dict[str, Any]], class_rows: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    sizes = [row["images"] for row in curve_rows]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, key in CURVES.items():
        axes.plot(sizes, [row[key] for row in curve_rows], marker="o", label=label)
    first = curve_rows[0]["validation_seconds"]
    axes.plot(sizes, [first * n / sizes[0] for n in sizes], "k:", label="linear (from validation)")
    axes.set(xscale="log", yscale="log", xlabel="images", ylabel="seconds")
    axes.set_title("Time against data set size (10 classes, 32-px PNGs, local cloud)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    images_path = FIGURES / "growth-images.png"
    figure.savefig(images_path, dpi=100)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 3.5))
    labels = list(CURVES)
    width = 0.38
    for offset, row in zip((-width / 2, width / 2), class_rows, strict=True):
        xs = [i + offset for i in range(len(labels))]
        axes.bar(xs, [row[CURVES[k]] for k in labels], width, label=f"{row['classes']} classes")
    axes.set_xticks(range(len(labels)), labels)
    axes.set_ylabel("seconds")
    axes.set_title(f"{class_rows[0]['images']} images: 10 against 133 classes")
    axes.legend()
    figure.tight_layout()
    classes_path = FIGURES / "growth-classes.png"
    figure.savefig(classes_path, dpi=100)
    plt.close(figure)
    return [images_path, classes_path]


def per_image(row: dict[str, Any], key: str) -> float:
    """Seconds per image the step handles: the epoch passes over the train split only (its
    share differs a little between 10 and 133 classes), the rest over every image."""
    count = row["epoch_train_images"] if key == "epoch_epoch_s" else row["images"]
    return row[key] / count


def checks_for(
    curve_rows: list[dict[str, Any]], class_rows: list[dict[str, Any]], baselines: dict
) -> list[dict[str, Any]]:
    checks = []
    for label, key in CURVES.items():
        points = [(row["images"], row[key]) for row in curve_rows]
        checks.append(at_most(f"{label}: growth exponent", exponent(points), GOAL_EXPONENT))
    largest = curve_rows[-1]
    checks.append(
        at_least(
            f"upload files/s at {largest['images']} images",
            largest["upload_files_per_s"],
            GOAL_FILES_PER_S,
        )
    )
    for name, rate in baselines.items():
        checks.append(info(f"  upload files/s at {curve_rows[0]['images']}: {name}", rate))
    few, many = class_rows
    for label, key in CURVES.items():
        ratio = per_image(many, key) / per_image(few, key) if few[key] else None
        checks.append(
            at_most(
                f"{label}: {many['classes']}/{few['classes']} classes, per image",
                ratio,
                GOAL_CLASS_RATIO,
            )
        )
    seconds_each = largest["validation_seconds"] / largest["images"]
    checks.append(
        info("validation s per 100k images (local, from the largest)", 1e5 * seconds_each)
    )
    listing = [(row["images"], row["validation_listing_s"]) for row in curve_rows]
    checks.append(
        info("  listing alone (moto's ListObjectsV2): growth exponent", exponent(listing))
    )
    share = largest["validation_listing_s"] / largest["validation_seconds"]
    checks.append(info("  listing share of validation at the largest", share))
    checks.append(
        info(
            "network step ms per image (resnet18, 32 px, 1 thread)",
            largest["epoch_model_ms_per_image"],
        )
    )
    return checks


def report_checks(reports: list[dict[str, float]]) -> list[dict[str, Any]]:
    points = [(int(r["trials"]), r["seconds"]) for r in reports]
    few, many = reports[0], reports[-1]
    return [
        at_most(
            f"report (draw + render): growth exponent, {points[0][0]} -> {points[-1][0]} trials",
            exponent(points),
            GOAL_EXPONENT,
        ),
        info(f"  report s at {few['trials']:.0f} trials", few["seconds"]),
        info(f"  report s at {many['trials']:.0f} trials", many["seconds"]),
    ]


def run(settings: Settings) -> dict[str, Any]:
    plan = plan_for(settings.quick)
    middle = plan.sizes[len(plan.sizes) // 2] if len(plan.sizes) > 2 else plan.sizes[-1]
    small = plan.sizes[0]
    few_classes, many_classes = plan.classes
    with cloud(settings) as target:
        function = validate_function(target)
        warm_up(target, function)

        def measure(images: int, classes: int, round_: int) -> dict[str, Any]:
            return measure_set(settings, target, function, plan, images, classes, round_)

        # Order S, M10, M133, M133, M10, (others), L, S: the class comparison is A B B A and
        # the smallest size is taken at both ends, so a drift in the machine's load falls on
        # both sides of each ratio (wall-time figures; the epoch's are CPU seconds).
        first = measure(small, few_classes, 0)
        few = [measure(middle, few_classes, 1)]
        many = [measure(middle, many_classes, 1), measure(middle, many_classes, 2)]
        few.append(measure(middle, few_classes, 2))
        others = [measure(n, few_classes, 1) for n in plan.sizes if n not in (small, middle)]
        last = measure(small, few_classes, 3)
        baselines = measure_upload_baselines(target, settings.work_dir / "data" / first["folder"])
    curve_rows = sorted(
        [mean_row([first, last]), mean_row(few), *others], key=lambda row: row["images"]
    )
    few_row, many_row = mean_row(few), mean_row(many)
    rounds = 1 if settings.quick else 3
    reports = [measure_report(trials, rounds) for trials in REPORT_TRIALS]
    figures = [] if settings.quick else draw(curve_rows, [few_row, many_row])
    notes = [f"figure: {path.relative_to(REPO_ROOT)}" for path in figures]
    return result(
        NAME,
        TITLE,
        checks_for(curve_rows, [few_row, many_row], baselines) + report_checks(reports),
        {
            "curve": curve_rows,
            "classes": [few_row, many_row],
            "repeats": {"smallest": [first, last], "few_classes": few, "many_classes": many},
            "upload_baselines": baselines,
            "report": reports,
        },
        notes,
    )


# -- the epoch child -----------------------------------------------------------------------
def epoch_child(data: Path, model_batches: int) -> None:
    """train.py's data path on `data`: check every image, then one pass of the train loader;
    then the network's step on a few batches (ms per image). Prints one JSON line."""
    import os

    for split in ("train", "valid", "test"):
        os.environ[f"SM_CHANNEL_{split.upper()}"] = str(data / split)
    import torch

    from training import train

    args = train.get_args_parser().parse_args(
        ["--image-size", str(IMAGE_SIZE), "--workers", "0", "--batch-size", "64"]
    )
    started, cpu = time.perf_counter(), time.process_time()
    classes, splits = train.load_data(args)
    scan_s, scan_wall_s = time.process_time() - cpu, time.perf_counter() - started
    loaders = train.build_loaders(args, splits)
    started, cpu = time.perf_counter(), time.process_time()
    kept = []  # a few batches for the network's step; the others are dropped as they come
    for batch in loaders["train"]:
        if len(kept) <= model_batches:
            kept.append(batch)
    epoch_s, epoch_wall_s = time.process_time() - cpu, time.perf_counter() - started
    model = train.build_model(args, len(classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    timed = kept
    started, images = 0.0, 0
    for index, (inputs, targets) in enumerate(timed):
        if index == 1:  # the first step warms up
            started = time.process_time()
        optimizer.zero_grad()
        loss_fn(model(inputs), targets).backward()
        optimizer.step()
        images += len(targets) if index else 0
    model_ms = 1000 * (time.process_time() - started) / images if images else math.nan
    train_images = len(splits["train"].samples)
    print(
        EPOCH_LINE
        + json.dumps(
            {
                "scan_s": scan_s,
                "epoch_s": epoch_s,
                "scan_wall_s": scan_wall_s,
                "epoch_wall_s": epoch_wall_s,
                "train_images": train_images,
                "model_ms_per_image": model_ms,
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth")
    parser.add_argument("--epoch", type=Path, required=True, help="data set folder")
    parser.add_argument("--model-batches", type=int, default=4)
    args = parser.parse_args(argv)
    epoch_child(args.epoch, args.model_batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
