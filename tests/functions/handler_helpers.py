"""Helpers shared by the handler unit tests (data sets, events, archives)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG_BYTES = b"\xff\xd8\xff\xe0" + b"\x00" * 64
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
) -> dict[str, Any]:
    """Write a tiny data set in the contract's layout and its manifest; return the manifest."""
    counts = counts or {
        "train": {"000.zero": 3, "001.one": 3},
        "valid": {"000.zero": 2, "001.one": 2},
        "test": {"000.zero": 2, "001.one": 2},
    }
    prefix = f"datasets/{name}/"
    for split, per_class in counts.items():
        for class_name, count in per_class.items():
            for i in range(count):
                s3.put_object(
                    Bucket=bucket, Key=f"{prefix}{split}/{class_name}/{i:04d}.png", Body=PNG_BYTES
                )
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
