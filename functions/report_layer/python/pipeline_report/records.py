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
from pipeline_common.s3io import output_archive_uri

from pipeline_report.target import Target

MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


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


def tar_member(archive: bytes, name: str) -> bytes | None:
    """A file of a .tar.gz by its base name (SageMaker archives may prefix `./`)."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.rsplit("/", 1)[-1] == name:
                extracted = tar.extractfile(member)
                return extracted.read() if extracted else None
    return None


def read_output_files(s3: Any, model_artifacts_uri: str, names: tuple[str, ...]) -> dict[str, Any]:
    """JSON files the training script wrote to SM_OUTPUT_DATA_DIR (`history.json`,
    `rule_statuses.json`), read from the job's output.tar.gz; absent ones are left out."""
    bucket, key = parse_s3_uri(output_archive_uri(model_artifacts_uri))
    archive = read_object(s3, bucket, key)
    found: dict[str, Any] = {}
    for name in names if archive is not None else ():
        raw = tar_member(archive, name)
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
