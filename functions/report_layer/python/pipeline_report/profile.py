"""The profiled retrain's system profile (CPU, memory, GPU over time), from what it recorded.

Sources, in order: SageMaker Profiler's system metrics under the job's ProfilerConfig output
(the local SageMaker writes its samples there in the same format), else the samples train.py
took itself (training/profiler.py) inside the job's output.tar.gz.
"""

from __future__ import annotations

import json
import logging
import tarfile
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pipeline_common.s3io import output_archive_uri, parse_s3_uri, read_tar_member

from pipeline_report.records import read_object
from pipeline_report.target import Target

log = logging.getLogger(__name__)

MAX_PROFILER_FILES = 200
# train.py's own profile (training/profiler.py), inside the job's output.tar.gz.
SYSTEM_METRICS_FILE = "system-metrics.json"
# Its path inside output.tar.gz (training/profiler.py writes it under SM_OUTPUT_DATA_DIR).
SYSTEM_METRICS_MEMBER = f"profiler/{SYSTEM_METRICS_FILE}"


@dataclass
class Profile:
    source: str
    times_s: list[float] = field(default_factory=list)
    # 100 = one core busy (local samples, cpu_count set); the Profiler's is a mean over cores
    cpu_percent: list[float] = field(default_factory=list)
    memory_mib: list[float] = field(default_factory=list)
    memory_percent: list[float] = field(default_factory=list)  # the Profiler's: % of the host
    gpu_percent: list[float] = field(default_factory=list)
    cpu_count: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)


# -- system profile -------------------------------------------------------------------------------
def system_profile(target: Target, job: dict[str, Any], notes: list[str]) -> Profile | None:
    """The Profiler's system metrics (the local SageMaker writes them too), else train.py's."""
    name = job["TrainingJobName"]
    profiler_path = job.get("ProfilerConfig", {}).get("S3OutputPath")
    if profiler_path:
        prefix = f"{profiler_path.rstrip('/')}/{name}/profiler-output/system/"
        profile = profile_from_profiler_output(target.client("s3"), prefix)
        if profile is not None:
            return profile
    # Without SageMaker's Profiler (closed with Debugger): the samples train.py took itself,
    # in the Profiler's format, inside the job's output.tar.gz.
    profile = profile_from_job_output(target.client("s3"), job)
    if profile is None:
        notes.append(
            f"No system profile: {name} has no Profiler output and no {SYSTEM_METRICS_FILE} "
            "in its output.tar.gz."
        )
    return profile


def profile_from_job_output(s3: Any, job: dict[str, Any]) -> Profile | None:
    """profiler/system-metrics.json that train.py wrote into SM_OUTPUT_DATA_DIR."""
    model_uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model_uri:
        return None
    uri = output_archive_uri(model_uri)
    try:
        archive = read_object(s3, *parse_s3_uri(uri))
        raw = read_tar_member(archive, SYSTEM_METRICS_MEMBER) if archive is not None else None
    except (ClientError, BotoCoreError, OSError, tarfile.TarError) as exc:
        log.warning("reading %s: %s", uri, exc)
        return None
    if raw is None:
        return None
    return profile_from_system_metrics(
        raw.decode(errors="replace").splitlines(), f"{uri} ({SYSTEM_METRICS_MEMBER})", files=1
    )


def profile_from_profiler_output(s3: Any, prefix_uri: str) -> Profile | None:
    """SageMaker Profiler system metrics: JSON lines `{"Type", "Name", "Dimension", "Value",
    "Timestamp"}` under `<ProfilerConfig.S3OutputPath>/<job>/profiler-output/system/`.

    The local SageMaker writes its samples here in the same format (CPU, memory), which is how
    the pipeline's own report gets a profile locally. CPU is averaged over cores, GPU over
    devices, per timestamp rounded to the second.
    """
    bucket, prefix = parse_s3_uri(prefix_uri)
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(
            item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".json")
        )
    if not keys:
        return None
    lines = [
        line
        for key in sorted(keys)[:MAX_PROFILER_FILES]
        for line in (read_object(s3, bucket, key) or b"").decode().splitlines()
    ]
    return profile_from_system_metrics(lines, prefix_uri, min(len(keys), MAX_PROFILER_FILES))


def profile_from_system_metrics(lines: list[str], source: str, files: int) -> Profile | None:
    """Profiler system-metrics JSON lines -> a profile: CPU averaged over cores, GPU over
    devices, per timestamp rounded to the second."""
    series: dict[str, dict[int, list[float]]] = {"cpu": {}, "gpu": {}, "memory": {}}
    for line in lines:
        _add_profiler_sample(series, line)
    stamps = sorted(set().union(*(s.keys() for s in series.values())))
    if not stamps:
        return None

    def mean_at(kind: str, stamp: int) -> float:
        values = series[kind].get(stamp, [])
        return sum(values) / len(values) if values else float("nan")

    return Profile(
        source=source,
        times_s=[float(t - stamps[0]) for t in stamps],
        cpu_percent=[mean_at("cpu", t) for t in stamps],
        memory_mib=[],
        memory_percent=[mean_at("memory", t) for t in stamps] if series["memory"] else [],
        gpu_percent=[mean_at("gpu", t) for t in stamps] if series["gpu"] else [],
        summary={"files read": files, "memory": "used %"},
    )


def _add_profiler_sample(series: dict[str, dict[int, list[float]]], line: str) -> None:
    try:
        item = json.loads(line)
        kind = str(item.get("Type", "")).lower()
        dimension = str(item.get("Dimension", ""))
        stamp = int(float(item["Timestamp"]))
        value = float(item["Value"])
    except (ValueError, KeyError, TypeError):
        return
    if kind == "gpu" and "Memory" in dimension:
        return
    if kind in series:
        series[kind].setdefault(stamp, []).append(value)
