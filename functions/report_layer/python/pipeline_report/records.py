"""Reading what the pipeline recorded in S3: run records and the jobs' output archives.

The run records (`runs/<execution>/`, named in pipeline_common.records; docs/contracts.md) are
the pipeline's own account of a run; the training job's output.tar.gz holds what train.py
recorded (history.json, confusion.json). A missing record is normal (a failed run stops
early), so readers return None for it rather than raise.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from pipeline_common.naming import class_label
from pipeline_common.records import RUN_RECORDS, record_key
from pipeline_common.s3io import MISSING_CODES, output_archive_uri, parse_s3_uri, read_tar_member

from pipeline_report.target import Target


def read_object(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
            return None
        raise


def read_record(target: Target, execution: str, name: str) -> dict[str, Any] | None:
    """One run record of `execution` (e.g. `gate.json`), or None when the run wrote none."""
    raw = read_object(target.client("s3"), target.artifacts_bucket, record_key(execution, name))
    return json.loads(raw) if raw is not None else None


def read_records(target: Target, execution: str) -> dict[str, dict[str, Any] | None]:
    return {name: read_record(target, execution, name) for name in RUN_RECORDS}


def read_output_archive(s3: Any, model_artifacts_uri: str) -> bytes | None:
    """The job's output.tar.gz (SM_OUTPUT_DATA_DIR), or None when it has none."""
    bucket, key = parse_s3_uri(output_archive_uri(model_artifacts_uri))
    return read_object(s3, bucket, key)


def read_output_files(s3: Any, model_artifacts_uri: str, names: tuple[str, ...]) -> dict[str, Any]:
    """JSON files the training script wrote to SM_OUTPUT_DATA_DIR (`history.json`,
    `rule_statuses.json`), read from the job's output.tar.gz; absent ones are left out."""
    return output_files(read_output_archive(s3, model_artifacts_uri), names)


def output_files(archive: bytes | None, names: tuple[str, ...]) -> dict[str, Any]:
    """read_output_files's JSON files from an output.tar.gz already read."""
    found: dict[str, Any] = {}
    for name in names if archive is not None else ():
        raw = read_tar_member(archive, name)
        if raw is not None:
            found[name] = json.loads(raw)
    return found


@dataclass
class Confusion:
    """The test pass of the profiled retrain, as train.py recorded it (confusion.json)."""

    labels: list[str]
    matrix: list[list[int]]
    accuracy: float | None
    per_class_accuracy: dict[str, float | None]
    images: int


def confusion_from_record(record: Any) -> Confusion | None:
    """confusion.json (pipeline_common.metrics.confusion_record) -> a Confusion; None when the
    job recorded none or the record is not that shape."""
    if not isinstance(record, dict):
        return None
    classes, matrix = record.get("classes"), record.get("matrix")
    if not isinstance(classes, list) or not isinstance(matrix, list) or not classes:
        return None
    per_class = record.get("per_class_accuracy") or {}
    return Confusion(
        labels=[class_label(str(name)) for name in classes],
        matrix=[[int(n) for n in row] for row in matrix],
        accuracy=record.get("accuracy"),
        per_class_accuracy={class_label(str(k)): v for k, v in per_class.items()},
        images=int(record.get("images") or sum(map(sum, matrix))),
    )


# -- Grad-CAM explanations (training/explain.py writes explanations/ into SM_OUTPUT_DATA_DIR) -----
EXPLANATIONS_INDEX = "explanations/index.json"
# What the report embeds at most, whatever an index lists (train.py writes 16 of about 20 kB).
MAX_EXPLANATIONS = 32
MAX_EXPLANATION_PNG_BYTES = 256 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Explanation:
    """One test image with its Grad-CAM overlay (`png` None when the archive lacks it)."""

    image: str
    true_label: str
    predicted_label: str
    confidence: float | None
    correct: bool
    png: bytes | None


@dataclass
class Explanations:
    """explanations/index.json and its overlays; `error` says why a job recorded none."""

    method: str
    layer: str | None
    test_images: int | None
    misclassified: int | None
    images: list[Explanation]
    error: str | None = None


def archive_files(archive: bytes, prefix: str) -> dict[str, bytes]:
    """Regular files of a .tar.gz under `prefix` (a leading `./` ignored), by that path."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./")
            if member.isfile() and name.startswith(prefix) and member.size <= (1 << 20):
                extracted = tar.extractfile(member)
                if extracted is not None:
                    found[name] = extracted.read()
    return found


def explanations_from_archive(archive: bytes | None) -> Explanations | None:
    """The explanations an output.tar.gz holds; None when it holds no index (older jobs)."""
    if archive is None:
        return None
    files = archive_files(archive, EXPLANATIONS_INDEX.split("/", 1)[0] + "/")
    raw = files.get(EXPLANATIONS_INDEX)
    if raw is None:
        return None
    try:
        index = json.loads(raw)
    except ValueError as exc:
        return Explanations("Grad-CAM", None, None, None, [], f"unreadable index: {exc}")
    if not isinstance(index, dict):
        return Explanations("Grad-CAM", None, None, None, [], "index is not a JSON object")
    entries = index.get("images") if isinstance(index.get("images"), list) else []
    images = []
    for entry in entries[:MAX_EXPLANATIONS]:
        if not isinstance(entry, dict):
            continue
        png = files.get(str(entry.get("file", "")))
        if png is not None and (
            not png.startswith(PNG_SIGNATURE) or len(png) > MAX_EXPLANATION_PNG_BYTES
        ):
            png = None
        confidence = entry.get("confidence")
        images.append(
            Explanation(
                image=str(entry.get("image", "")),
                true_label=str(entry.get("true_label", "")),
                predicted_label=str(entry.get("predicted_label", "")),
                confidence=float(confidence) if isinstance(confidence, int | float) else None,
                correct=bool(entry.get("correct")),
                png=png,
            )
        )
    return Explanations(
        method=str(index.get("method") or "Grad-CAM"),
        layer=str(index["layer"]) if index.get("layer") else None,
        test_images=_int_or_none(index.get("test_images")),
        misclassified=_int_or_none(index.get("misclassified")),
        images=images,
        error=str(index["error"]) if index.get("error") else None,
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
