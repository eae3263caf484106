"""Constants, request builders and waiting helpers for the local SageMaker tests."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from botocore.config import Config

from tests.support.waiting import wait_for

FIXTURE_CODE = Path(__file__).parent / "fixture_code"
REGION = "us-east-1"
DATA_BUCKET = "local-sm-data"
ARTIFACTS_BUCKET = "local-sm-artifacts"
SOURCE_URI = f"s3://{ARTIFACTS_BUCKET}/code/fixture/sourcedir.tar.gz"
DATA_URI = f"s3://{DATA_BUCKET}/datasets/tiny"
OUTPUT_URI = f"s3://{ARTIFACTS_BUCKET}/jobs"
ROLE_ARN = "arn:aws:iam::123456789012:role/local-sagemaker-tests"
TRAINING_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": r"\[metric\] epoch=[0-9]+ split=train loss=([0-9.]+)"},
    {"Name": "valid:loss", "Regex": r"\[metric\] epoch=[0-9]+ split=valid loss=([0-9.]+)"},
    {"Name": "test:accuracy", "Regex": r"split=test loss=\S+ accuracy=([0-9.]+)"},
]


def client_config() -> Config:
    return Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=90)


def hyperparameters(**values: Any) -> dict[str, str]:
    """The framework-container convention: JSON-encoded strings, sagemaker_* included."""
    base: dict[str, Any] = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": SOURCE_URI,
        "sagemaker_region": REGION,
    }
    base.update(values)
    return {key: json.dumps(value) for key, value in base.items()}


def channels() -> list[dict[str, Any]]:
    return [
        {
            "ChannelName": split,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"{DATA_URI}/{split}",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
        for split in ("train", "valid")
    ]


def training_request(name: str, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "HyperParameters": hyperparameters(epochs=2),
        "AlgorithmSpecification": {
            "TrainingImage": TRAINING_IMAGE,
            "TrainingInputMode": "File",
            "MetricDefinitions": METRIC_DEFINITIONS,
        },
        "RoleArn": ROLE_ARN,
        "InputDataConfig": channels(),
        "OutputDataConfig": {"S3OutputPath": OUTPUT_URI},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    request.update(overrides)
    return request


def wait_training(sm: Any, name: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: sm.describe_training_job(TrainingJobName=name),
        timeout,
        f"training job {name} to end",
        done=lambda d: d["TrainingJobStatus"] in {"Completed", "Failed", "Stopped"},
    )


def wait_tuning(sm: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(
        lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name),
        timeout,
        f"tuning job {name} to end",
        done=lambda d: d["HyperParameterTuningJobStatus"] in {"Completed", "Failed", "Stopped"},
        interval=0.2,
    )


def wait_endpoint(sm: Any, name: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: sm.describe_endpoint(EndpointName=name),
        timeout,
        f"endpoint {name} to leave Creating/Updating",
        done=lambda d: d["EndpointStatus"] not in {"Creating", "Updating"},
    )


def tuning_request(
    name: str,
    *,
    strategy: str = "Bayesian",
    max_jobs: int | None = 4,
    max_parallel: int = 2,
    ranges: dict[str, Any] | None = None,
    static: dict[str, Any] | None = None,
    early_stopping: str = "Off",
    seed: int | None = 7,
    **extra: Any,
) -> dict[str, Any]:
    limits: dict[str, int] = {"MaxParallelTrainingJobs": max_parallel}
    if max_jobs is not None:
        limits["MaxNumberOfTrainingJobs"] = max_jobs
    config: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "valid:loss"},
        "ResourceLimits": limits,
        "ParameterRanges": ranges
        or {
            "ContinuousParameterRanges": [
                {"Name": "lr", "MinValue": "0.0001", "MaxValue": "1", "ScalingType": "Logarithmic"}
            ],
            "CategoricalParameterRanges": [{"Name": "batch-size", "Values": ["8", "16"]}],
        },
        "TrainingJobEarlyStoppingType": early_stopping,
    }
    if seed is not None:
        config["RandomSeed"] = seed
    request = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": {
            "StaticHyperParameters": hyperparameters(**(static or {"epochs": 2})),
            "AlgorithmSpecification": {
                "TrainingImage": "pytorch-training:local",
                "TrainingInputMode": "File",
                "MetricDefinitions": METRIC_DEFINITIONS,
            },
            "RoleArn": ROLE_ARN,
            "InputDataConfig": channels(),
            "OutputDataConfig": {"S3OutputPath": OUTPUT_URI},
            "ResourceConfig": {
                "InstanceType": "ml.m5.large",
                "InstanceCount": 1,
                "VolumeSizeInGB": 5,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        },
    }
    request.update(extra)
    return request


def upload_model(s3: Any, version: str, **info: Any) -> str:
    """A model.tar.gz as train.py writes it: model_info.json plus code/inference.py."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (
            ("model_info.json", json.dumps({"version": version, **info}).encode()),
            ("code/inference.py", (FIXTURE_CODE / "inference.py").read_bytes()),
        ):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    key = f"models/{version}/model.tar.gz"
    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=key, Body=buffer.getvalue())
    return f"s3://{ARTIFACTS_BUCKET}/{key}"


def make_config(
    sm: Any, s3: Any, version: str, config_extra: dict[str, Any] | None = None, **info: Any
) -> str:
    """CreateModel + CreateEndpointConfig for one model version; returns the config name.

    ``config_extra`` adds CreateEndpointConfig members (e.g. DataCaptureConfig)."""
    model_name = f"model-{version}"
    sm.create_model(
        ModelName=model_name,
        PrimaryContainer={
            "Image": IMAGE,
            "ModelDataUrl": upload_model(s3, version, **info),
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
        },
        ExecutionRoleArn=ROLE_ARN,
    )
    config_name = f"config-{version}"
    sm.create_endpoint_config(
        EndpointConfigName=config_name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model_name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 1.0,
            }
        ],
        **(config_extra or {}),
    )
    return config_name


def invoke(runtime: Any, name: str, payload: Any) -> dict[str, Any]:
    response = runtime.invoke_endpoint(
        EndpointName=name,
        Body=json.dumps(payload).encode(),
        ContentType="application/json",
        Accept="application/json",
    )
    return {
        "body": json.loads(response["Body"].read()),
        "content_type": response["ContentType"],
        "variant": response["InvokedProductionVariant"],
    }
