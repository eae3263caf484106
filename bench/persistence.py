"""Benchmark: what the local cloud's persistence (state that lasts) costs, on vs off side by side.

Two local clouds run in this one benchmark, one with persistence on (the default) and one with
`MLOPS_LOCAL_PERSISTENCE=off` (starts empty, writes nothing). Both get the same work:

- upload: the demo's data set (every image of scikit-learn's digits) put into the data bucket
  with boto3 as `mlops upload` does, without the manifest (so no run starts); repeated,
  alternating on/off, and compared by median wall time;
- pipeline: one whole run (as bench/orchestration.py: upload, manifest, follow to the end) on
  each cloud, compared by execution wall time; and, less noisy than a ratio of two trainings on
  a shared machine, the time the persistence thread itself spent (its log line at stop) as a
  share of the execution: its wall time (waits for fsync and for a core included) and its CPU
  time (`time.thread_time`, what it took from the request threads).

Goal (issue 13): persistence adds under 5% to the upload and to the pipeline run.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import orchestration
from bench.common import Settings, at_most, digits, info, log, median, result, skipped

NAME = "persistence"
PARTS_ENV = "MLOPS_BENCH_PERSISTENCE_PARTS"
TITLE = "Cost of the local cloud's persistence (state that lasts), on vs off"
GOAL = 0.05
SPENT = re.compile(r"state (\S+): (\d+) writes, ([0-9.]+) s spent(?:, ([0-9.]+) s CPU)?")


@contextlib.contextmanager
def cloud(settings: Settings, label: str, persist: bool, parameters: dict) -> Iterator[Any]:
    """A local cloud in its own empty folder; yields (target, root); stopped in a finally."""
    from mlops.local.persistence import PERSISTENCE_ENV
    from mlops.local.process import start_cloud_process, stop_cloud_process
    from mlops.target import local_target

    root = settings.scratch(f"{NAME}-{label}")
    env = {PERSISTENCE_ENV: "on" if persist else "off"}
    process, _ = start_cloud_process(root, parameters=parameters, extra_env=env)
    try:
        yield local_target(root), root
    finally:
        stop_cloud_process(process)


def upload_files(target: Any, data: Path, prefix: str) -> float:
    """Every file of the data set, one PutObject each (what `mlops upload` does); seconds."""
    s3 = target.client("s3")
    files = sorted(p for p in data.rglob("*") if p.is_file())
    started = time.perf_counter()
    for path in files:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        s3.upload_file(
            str(path),
            target.data_bucket,
            f"{prefix}/{path.relative_to(data)}",
            ExtraArgs={"ContentType": content_type},
        )
    return time.perf_counter() - started


def persister_seconds(root: Path) -> dict[str, dict[str, float]]:
    """Per service, the persistence thread's wall and CPU seconds and its snapshot writes
    (logged once the cloud stopped)."""
    spent: dict[str, dict[str, float]] = {}
    log_file = root / "cloud.log"
    for match in SPENT.finditer(log_file.read_text() if log_file.exists() else ""):
        entry = spent.setdefault(match.group(1), {"writes": 0, "wall_s": 0.0, "cpu_s": 0.0})
        entry["writes"] += int(match.group(2))
        entry["wall_s"] += float(match.group(3))
        entry["cpu_s"] += float(match.group(4) or 0.0)
    return spent


def total(spent: dict[str, dict[str, float]], field: str) -> float:
    return sum(entry[field] for entry in spent.values())


def describe_spent(spent: dict[str, dict[str, float]]) -> str:
    return ", ".join(
        f"{name} {e['wall_s']:.2f} wall / {e['cpu_s']:.2f} CPU s ({e['writes']:.0f} writes)"
        for name, e in spent.items()
    )


def measure_uploads(settings: Settings, data: Path, rounds: int) -> dict[str, Any]:
    files = sum(1 for p in data.rglob("*") if p.is_file())
    times: dict[bool, list[float]] = {True: [], False: []}
    with (
        cloud(settings, "upload-on", True, {}) as (on, on_root),
        cloud(settings, "upload-off", False, {}) as (off, _),
    ):
        for index in range(rounds):
            for persist, target in ((True, on), (False, off)):
                seconds = upload_files(target, data, f"datasets/bench-{index}")
                times[persist].append(seconds)
                log(f"{NAME}: upload {files} files, persistence {persist}: {seconds:.1f} s")
        time.sleep(1.5)  # the last snapshot of the on-cloud is part of the cost
    return {
        "files": files,
        "on_s": times[True],
        "off_s": times[False],
        "ratio": median(times[True]) / median(times[False]) - 1.0,
        "persister_s": persister_seconds(on_root),
    }


def measure_pipeline(settings: Settings) -> dict[str, Any]:
    size = orchestration.size_for(settings.quick)
    data = digits(settings, size.per_class, 32)
    parameters = orchestration.parameters(size)
    runs: dict[bool, dict[str, Any]] = {}
    for persist in (False, True):
        label = "pipeline-on" if persist else "pipeline-off"
        with cloud(settings, label, persist, parameters) as (target, root):
            orchestration.upload_and_start(root, data, "bench")
            view = orchestration.follow(target, size.timeout_s)
            if view.status != "SUCCEEDED":
                raise RuntimeError(f"the pipeline run ({label}) ended {view.status}")
            runs[persist] = {"execution_s": view.duration_s}
        runs[persist]["persister_s"] = persister_seconds(root)
        log(f"{NAME}: pipeline, persistence {persist}: {view.duration_s:.0f} s")
    spent = runs[True]["persister_s"]
    return {
        "on_s": runs[True]["execution_s"],
        "off_s": runs[False]["execution_s"],
        "ratio": runs[True]["execution_s"] / runs[False]["execution_s"] - 1.0,
        "persister_s": spent,
        "persister_share": total(spent, "wall_s") / runs[True]["execution_s"],
        "persister_cpu_share": total(spent, "cpu_s") / runs[True]["execution_s"],
    }


def run(settings: Settings) -> dict[str, Any]:
    from mlops.local.process import CloudStartError

    per_class = 20 if settings.quick else None  # None: every image, as `make demo`
    data = digits(settings, per_class or 1000, 16)
    rounds = 1 if settings.quick else 3
    # MLOPS_BENCH_PERSISTENCE_PARTS=pipeline (or upload) runs one half, e.g. on a busy machine.
    parts = os.environ.get(PARTS_ENV, "upload,pipeline").split(",")
    try:
        uploads = measure_uploads(settings, data, rounds) if "upload" in parts else None
        pipeline = measure_pipeline(settings)
    except (CloudStartError, RuntimeError, TimeoutError) as error:
        return skipped(NAME, TITLE, f"{type(error).__name__}: {str(error).splitlines()[0]}")
    checks = []
    if uploads is not None:
        checks += [
            at_most("upload: median wall on / off - 1", uploads["ratio"], GOAL),
            info(
                f"  upload of {uploads['files']} files on / off s (medians)",
                f"{median(uploads['on_s']):.1f} / {median(uploads['off_s']):.1f}",
            ),
        ]
    checks += [
        at_most("pipeline: persistence thread busy / execution", pipeline["persister_share"], GOAL),
        at_most(
            "pipeline: persistence thread CPU / execution", pipeline["persister_cpu_share"], GOAL
        ),
        info(
            "  pipeline execution on / off s (one run each, noisy)",
            f"{pipeline['on_s']:.0f} / {pipeline['off_s']:.0f} ({pipeline['ratio']:+.1%})",
        ),
    ]
    notes = [
        "persistence thread per service, pipeline run: " + describe_spent(pipeline["persister_s"]),
        f"machine load while measuring: {os.getloadavg()[0]:.1f}",
    ]
    if uploads is not None:
        notes.insert(
            0, "persistence thread per service, uploads: " + describe_spent(uploads["persister_s"])
        )
    return result(NAME, TITLE, checks, {"upload": uploads, "pipeline": pipeline}, notes)
