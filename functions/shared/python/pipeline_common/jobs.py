"""Pieces shared by the tuning and the profiled training requests.

Hyperparameter values follow the SageMaker Python SDK's framework convention: every value is
JSON-encoded (``json.dumps``), so ``"resnet18"`` travels as ``"\\"resnet18\\""`` and ``10``
as ``"10"``; the framework container (and the local cloud) decodes each with ``json.loads``,
falling back to the raw string, and passes it to train.py as ``--name value``.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline_common.config import CommonSettings, TrainingSettings

# The objective and the test metric are named with the metric lines (pipeline_common.metrics);
# re-exported here for the request builders and handlers that import them from jobs.
from pipeline_common.metrics import OBJECTIVE_METRIC as OBJECTIVE_METRIC
from pipeline_common.metrics import OBJECTIVE_TYPE as OBJECTIVE_TYPE
from pipeline_common.metrics import TEST_ACCURACY_METRIC as TEST_ACCURACY_METRIC
from pipeline_common.naming import run_prefix
from pipeline_common.s3io import s3_uri

REQUIRED_METRICS = (OBJECTIVE_METRIC, TEST_ACCURACY_METRIC)
CHANNELS = ("train", "valid", "test")
TRAINING_SOURCE_KEY = "code/training/sourcedir.tar.gz"
METRIC_DEFINITIONS_KEY = "code/training/metric_definitions.json"
ENTRY_POINT = "train.py"
VOLUME_SIZE_GB = 30
# The PyTorch estimator's distribution={"torch_distributed": {"enabled": True}}: the training
# toolkit then starts the entry point with torchrun on every host (sagemaker_training's
# TorchDistributedRunner), which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
TORCH_DISTRIBUTED_HYPERPARAMETER = "sagemaker_torch_distributed_enabled"


def encode(value: Any) -> str:
    """JSON-encode one hyperparameter value, as the SageMaker Python SDK does."""
    return json.dumps(value)


def decode(value: str) -> Any:
    """The inverse of :func:`encode`, tolerant of values that were never encoded."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def static_hyperparameters(
    common: CommonSettings, training: TrainingSettings, *, run_rules: bool
) -> dict[str, str]:
    """Hyperparameters fixed for every trial, plus the framework container's own.

    With more than one instance the job asks the container for torchrun (data-parallel
    training across the hosts); with one it is started exactly as before, without it.
    """
    distributed = (
        {TORCH_DISTRIBUTED_HYPERPARAMETER: encode(True)} if training.instance_count > 1 else {}
    )
    return {
        "epochs": encode(training.epochs),
        "image-size": encode(training.image_size),
        "pretrained": encode("true" if training.pretrained else "false"),
        "run-rules": encode("true" if run_rules else "false"),
        # Template parameter Seed: weights, shuffling and augmentation of every trial and of
        # the retrain, so the same commit and data give the same models.
        "seed": encode(training.seed),
        "sagemaker_program": encode(ENTRY_POINT),
        "sagemaker_submit_directory": encode(s3_uri(common.artifacts_bucket, TRAINING_SOURCE_KEY)),
        "sagemaker_region": encode(common.region),
        **distributed,
    }


def input_channels(channel_uris: dict[str, str], input_mode: str) -> list[dict[str, Any]]:
    """train/valid/test channels, each an S3 prefix given whole to every instance.

    ``input_mode`` is written on every channel as well as in the algorithm specification:
    SageMaker takes the channel's value first, so a channel never falls back to a default
    the template did not choose. With File the prefix is copied before the script starts;
    with FastFile it is a file view of the objects, read from S3 as the script reads them
    (S3Prefix is what FastFile documents; AugmentedManifestFile needs Pipe).
    """
    return [
        {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": channel_uris[name],
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": input_mode,
        }
        for name in CHANNELS
    ]


def run_uri(common: CommonSettings, execution: str, *parts: str) -> str:
    """``s3://<artifacts>/runs/<execution>/<parts...>/``."""
    return s3_uri(common.artifacts_bucket, run_prefix(execution) + "/".join(parts) + "/")


def stopping_condition(training: TrainingSettings) -> dict[str, int]:
    """MaxRuntime always; with spot, MaxWaitTime (must be >= MaxRuntime) as well."""
    condition = {"MaxRuntimeInSeconds": training.max_runtime_seconds}
    if training.use_spot_instances:
        condition["MaxWaitTimeInSeconds"] = training.max_runtime_seconds * 2
    return condition


def spot_settings(
    common: CommonSettings, training: TrainingSettings, execution: str, stage: str
) -> dict[str, Any]:
    """Managed spot training resumes from checkpoints: it always comes with a CheckpointConfig."""
    if not training.use_spot_instances:
        return {}
    return {
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": run_uri(common, execution, "checkpoints", stage)},
    }


def resource_config(training: TrainingSettings) -> dict[str, Any]:
    return {
        "InstanceType": training.instance_type,
        "InstanceCount": training.instance_count,
        "VolumeSizeInGB": VOLUME_SIZE_GB,
    }


def algorithm_specification(
    training: TrainingSettings, metric_definitions: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "TrainingImage": training.training_image,
        "TrainingInputMode": training.input_mode,
        "MetricDefinitions": metric_definitions,
    }


PROJECT_TAG = "mlops:project"
DATASET_TAG = "mlops:dataset"
EXECUTION_TAG = "mlops:execution"


def tags(project: str, dataset: str, execution: str) -> list[dict[str, str]]:
    """Tags that let a later run find this run's resources (e.g. the warm start parent, the
    run whose deployment.json names the config to roll back to)."""
    return [
        {"Key": PROJECT_TAG, "Value": project},
        {"Key": DATASET_TAG, "Value": dataset},
        {"Key": EXECUTION_TAG, "Value": execution},
    ]
