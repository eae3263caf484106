"""Helpers shared by the handler unit tests (data sets, events, archives)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support import EVENTS

ROOT = Path(__file__).resolve().parents[2]

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG_BYTES = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def image_bytes(fmt: str = "PNG", mode: str = "RGB", size: tuple[int, int] = (8, 8)) -> bytes:
    """A real, decodable image (validate_dataset decodes every file it accepts)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, color=0).save(buffer, format=fmt)
    return buffer.getvalue()


GOOD_PNG = image_bytes()
METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": r"split=train loss=([0-9.]+)"},
    {"Name": "valid:loss", "Regex": r"split=valid loss=([0-9.]+)"},
    {"Name": "valid:accuracy", "Regex": r"split=valid loss=[0-9.]+ accuracy=([0-9.]+)"},
    {"Name": "test:accuracy", "Regex": r"split=test loss=[0-9.]+ accuracy=([0-9.]+)"},
]


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def upload_dataset(
    s3: Any,
    bucket: str,
    name: str = "digits",
    counts: dict[str, dict[str, int]] | None = None,
    manifest: dict[str, Any] | None = None,
    extra_keys: tuple[str, ...] = (),
    bodies: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Write a tiny data set in the contract's layout and its manifest; return the manifest.

    Every image is a real 8x8 PNG unless ``bodies`` gives other bytes for a relative key.
    """
    bodies = bodies or {}
    counts = counts or {
        "train": {"000.zero": 5, "001.one": 5},
        "valid": {"000.zero": 2, "001.one": 2},
        "test": {"000.zero": 2, "001.one": 2},
    }
    prefix = f"datasets/{name}/"
    for split, per_class in counts.items():
        for class_name, count in per_class.items():
            for i in range(count):
                relative = f"{split}/{class_name}/{i:04d}.png"
                body = bodies.get(relative, GOOD_PNG)
                s3.put_object(Bucket=bucket, Key=prefix + relative, Body=body)
    for key in extra_keys:
        s3.put_object(Bucket=bucket, Key=prefix + key, Body=b"extra")
    document = {
        "schema_version": 1,
        "dataset": name,
        "classes": sorted({c for per_class in counts.values() for c in per_class}),
        "splits": counts,
        "file_count": sum(sum(p.values()) for p in counts.values()),
    }
    document.update(manifest or {})
    s3.put_object(Bucket=bucket, Key=f"{prefix}manifest.json", Body=json.dumps(document).encode())
    return document


def publish_training_source(
    s3: Any, bucket: str, definitions: list[dict[str, str]] | None = None
) -> None:
    """What `mlops publish-training` leaves in the artifacts bucket."""
    s3.put_object(Bucket=bucket, Key="code/training/sourcedir.tar.gz", Body=b"tar")
    s3.put_object(
        Bucket=bucket,
        Key="code/training/metric_definitions.json",
        Body=json.dumps(METRIC_DEFINITIONS if definitions is None else definitions).encode(),
    )


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- SageMaker answers moto cannot give, shaped by the service model (Stubber checks) ---

ARN_PREFIX = "arn:aws:sagemaker:us-east-1:123456789012"
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def tuning_job(name: str, status: str = "InProgress", **extra: Any) -> dict[str, Any]:
    counters = {
        "Completed": 2,
        "InProgress": 0,
        "RetryableError": 0,
        "NonRetryableError": 1,
        "Stopped": 0,
    }
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobArn": f"{ARN_PREFIX}:hyper-parameter-tuning-job/{name}",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 1},
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingImage": "image", "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::123456789012:role/mlops-sagemaker-us-east-1",
            "OutputDataConfig": {"S3OutputPath": "s3://artifacts/runs/x/tuning/"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
        "HyperParameterTuningJobStatus": status,
        "CreationTime": NOW,
        "TrainingJobStatusCounters": counters,
        "ObjectiveStatusCounters": {"Succeeded": 2, "Pending": 0, "Failed": 1},
        **extra,
    }


def trial(
    name: str, status: str = "Completed", objective: float | None = 0.5, **extra: Any
) -> dict[str, Any]:
    summary = {
        "TrainingJobName": name,
        "TrainingJobArn": f"{ARN_PREFIX}:training-job/{name}",
        "CreationTime": NOW,
        "TrainingJobStatus": status,
        "TunedHyperParameters": {"model": '"resnet18"', "batch-size": "32", "lr": "0.01"},
        **extra,
    }
    if objective is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": "Minimize",
            "MetricName": "valid:loss",
            "Value": objective,
        }
    return summary


def training_job(
    name: str,
    status: str = "Completed",
    rules: list[tuple[str, str]] | None = None,
    metrics: dict[str, float] | None = None,
    ended: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    job = {
        "TrainingJobName": name,
        "TrainingJobArn": f"{ARN_PREFIX}:training-job/{name}",
        "ModelArtifacts": {
            "S3ModelArtifacts": f"s3://artifacts-bucket/runs/x/training/{name}/output/model.tar.gz"
        },
        "TrainingJobStatus": status,
        "SecondaryStatus": "Completed" if status == "Completed" else "Training",
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": NOW,
        "DebugRuleEvaluationStatuses": [
            {
                "RuleConfigurationName": rule,
                "RuleEvaluationStatus": rule_status,
                "LastModifiedTime": NOW,
            }
            for rule, rule_status in (rules or [])
        ],
        "FinalMetricDataList": [
            {"MetricName": metric, "Value": value, "Timestamp": NOW}
            for metric, value in (metrics or {}).items()
        ],
        **extra,
    }
    if ended is not None:
        job["TrainingEndTime"] = ended
    return job


def endpoint(
    name: str, status: str = "InService", config: str | None = "old-config", **extra: Any
) -> dict[str, Any]:
    answer = {
        "EndpointName": name,
        "EndpointArn": f"{ARN_PREFIX}:endpoint/{name}",
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        **extra,
    }
    if config is not None:
        answer["EndpointConfigName"] = config
    return answer


def messy_images() -> dict[str, bytes]:
    """Real-world damage and exotic modes, by name (see test_layer_images for the verdicts)."""
    import zlib

    from PIL import Image

    def save(image: Any, fmt: str, **options: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    photo = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    jpeg = save(photo, "JPEG", quality=90)
    png = save(photo, "PNG")
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 255, 255, 255] * 128)

    # A PNG header that claims 7000 x 7000 pixels (over the 40 MP limit) in 100 bytes.
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = (7_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )
    return {
        "plain_png": png,
        "plain_jpeg": jpeg,
        "gray_png": save(Image.new("L", (16, 16), 128), "PNG"),
        "zero_bytes": b"",
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_png": png[: len(png) // 2],
        "garbage": b"this is not an image at all" * 4,
        "png_magic_only": PNG_BYTES,
        "bomb_png": bomb,
        "sixteen_bit_png": save(Image.new("I;16", (16, 16), 40_000), "PNG"),
        "cmyk_jpeg": save(photo.convert("CMYK"), "JPEG"),
        "palette_transparency_png": save(palette, "PNG", transparency=0),
        "la_png": save(Image.new("LA", (16, 16), (100, 50)), "PNG"),
        "rgba_png": save(Image.new("RGBA", (16, 16), (1, 2, 3, 0)), "PNG"),
    }


UNREADABLE_KINDS = (
    "zero_bytes",
    "truncated_jpeg",
    "truncated_png",
    "garbage",
    "png_magic_only",
    "bomb_png",
)
EXOTIC_KINDS = (
    "sixteen_bit_png",
    "cmyk_jpeg",
    "palette_transparency_png",
    "la_png",
    "rgba_png",
)
