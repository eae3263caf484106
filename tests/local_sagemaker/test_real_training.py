"""The real training/train.py, rules and inference.py on the local SageMaker (tiny digits)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mlops.packaging import pack_training_source
from tests.support.waiting import wait_for

from .helpers import (
    ARTIFACTS_BUCKET,
    DATA_BUCKET,
    OUTPUT_URI,
    REGION,
    ROLE_ARN,
    wait_endpoint,
    wait_training,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
RULES = [
    "Overfit",
    "Overtraining",
    "PoorWeightInitialization",
    "VanishingGradient",
    "LossNotDecreasing",
]
RULE_IMAGE = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"


@pytest.fixture
def service(service_factory: Any) -> Any:
    """These jobs ask for Debugger's hook config and rule jobs: an account that still has it."""
    return service_factory(debugger_available=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory, s3: Any) -> dict[str, Any]:
    """Tiny digits in the dog-breed layout in S3, and training/ packed as sourcedir.tar.gz."""
    sample_data = pytest.importorskip("mlops.sample_data")
    metrics = pytest.importorskip("pipeline_common.metrics")
    if not (REPO / "training" / "train.py").is_file():
        pytest.skip("training/train.py does not exist yet")
    root = tmp_path_factory.mktemp("digits")
    sample_data.write_digits(root, max_per_class=12, size=32, seed=0)
    for path in sorted(p for p in root.rglob("*.png")):
        key = f"datasets/digits-real/{path.relative_to(root).as_posix()}"
        s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=path.read_bytes())
    # The archive `mlops publish-training` uploads: with requirements.txt and vendored smdebug.
    source = pack_training_source()
    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key="code/real/sourcedir.tar.gz", Body=source)
    test_image = next(iter(sorted((root / "test").rglob("*.png"))))
    return {
        "metric_definitions": metrics.METRIC_DEFINITIONS,
        "source": f"s3://{ARTIFACTS_BUCKET}/code/real/sourcedir.tar.gz",
        "test_image": test_image,
    }


def real_request(name: str, digits: dict[str, Any], **hyperparameters: Any) -> dict[str, Any]:
    values = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": digits["source"],
        "sagemaker_region": REGION,
        "model": "resnet18",
        "epochs": 1,
        "batch-size": 16,
        "lr": 0.05,
        "image-size": 32,
        "pretrained": False,
        "hflip": False,
        "workers": 0,
        **hyperparameters,
    }
    return {
        "TrainingJobName": name,
        "HyperParameters": {key: json.dumps(value) for key, value in values.items()},
        "AlgorithmSpecification": {
            "TrainingImage": "pytorch-training:local",
            "TrainingInputMode": "File",
            "MetricDefinitions": digits["metric_definitions"],
        },
        "RoleArn": ROLE_ARN,
        "InputDataConfig": [
            {
                "ChannelName": split,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{DATA_BUCKET}/datasets/digits-real/{split}",
                    }
                },
            }
            for split in ("train", "valid", "test")
        ],
        "OutputDataConfig": {"S3OutputPath": OUTPUT_URI},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def test_real_train_py_rules_and_endpoint(
    sm: Any, runtime: Any, digits: dict[str, Any], service: Any
) -> None:
    request = real_request("real-train", digits)
    # The collections the rules read, as functions/shared's debug_hook_config asks for them.
    intervals = {"losses": "1", "gradients": "2", "weights": "2", "biases": "2", "relu_input": "2"}
    collections = [
        {"CollectionName": name, "CollectionParameters": {"save_interval": interval}}
        for name, interval in intervals.items()
    ]
    collections[-1]["CollectionParameters"]["include_regex"] = ".*relu_input"
    request["DebugHookConfig"] = {
        "S3OutputPath": f"s3://{ARTIFACTS_BUCKET}/debug",
        "CollectionConfigurations": collections,
    }
    request["DebugRuleConfigurations"] = [
        {
            "RuleConfigurationName": rule,
            "RuleEvaluatorImage": RULE_IMAGE,
            "RuleParameters": {"rule_to_invoke": rule},
        }
        for rule in RULES
    ]
    sm.create_training_job(**request)
    job = wait_training(sm, "real-train", timeout=600)
    log = service.config.state_dir / "jobs" / "real-train" / "logs" / "training.log"
    assert job["TrainingJobStatus"] == "Completed", (
        job.get("FailureReason"),
        log.read_text()[-3000:],
    )
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert {"train:loss", "valid:loss", "valid:accuracy", "test:accuracy"} <= set(metrics)

    job = wait_for(
        lambda: sm.describe_training_job(TrainingJobName="real-train"),
        300,
        "the rules of real-train to finish",
        done=lambda d: all(
            s["RuleEvaluationStatus"] != "InProgress" for s in d["DebugRuleEvaluationStatuses"]
        ),
        interval=1,
    )
    statuses = {s["RuleConfigurationName"]: s for s in job["DebugRuleEvaluationStatuses"]}
    assert set(statuses) == set(RULES)
    for name, status in statuses.items():
        assert status["RuleEvaluationStatus"] in {"NoIssuesFound", "IssuesFound"}, (name, status)

    sm.create_model(
        ModelName="real-model",
        PrimaryContainer={
            "Image": "pytorch-inference:local",
            "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"],
        },
        ExecutionRoleArn=ROLE_ARN,
    )
    sm.create_endpoint_config(
        EndpointConfigName="real-config",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "real-model", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName="real-endpoint", EndpointConfigName="real-config")
    endpoint = wait_endpoint(sm, "real-endpoint", timeout=120)
    assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")

    response = runtime.invoke_endpoint(
        EndpointName="real-endpoint",
        Body=digits["test_image"].read_bytes(),
        ContentType="image/png",
        Accept="application/json",
    )
    answer = json.loads(response["Body"].read())
    assert 0 <= answer["class_index"] < 10
    assert answer["top_k"][0]["class_index"] == answer["class_index"]

    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint(
            EndpointName="real-endpoint", Body=b"not an image", ContentType="image/png"
        )
    assert raised.value.response["Error"]["Code"] == "ModelError"
    assert raised.value.response["OriginalStatusCode"] == 400


def test_real_train_py_tuning_job(sm: Any, digits: dict[str, Any]) -> None:
    definition = real_request("unused", digits)
    definition.pop("TrainingJobName")
    definition["StaticHyperParameters"] = definition.pop("HyperParameters")
    for tuned in ("lr", "batch-size", "model"):
        definition["StaticHyperParameters"].pop(tuned)
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="real-tune",
        HyperParameterTuningJobConfig={
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "valid:loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "CategoricalParameterRanges": [
                    {"Name": "model", "Values": ["resnet18"]},
                    {"Name": "batch-size", "Values": ["16", "32"]},
                ],
                "ContinuousParameterRanges": [
                    {
                        "Name": "lr",
                        "MinValue": "0.001",
                        "MaxValue": "0.1",
                        "ScalingType": "Logarithmic",
                    }
                ],
            },
            "TrainingJobEarlyStoppingType": "Auto",
        },
        TrainingJobDefinition=definition,
    )
    job = wait_for(
        lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="real-tune"),
        600,
        "real-tune to end",
        done=lambda d: d["HyperParameterTuningJobStatus"] in {"Completed", "Failed", "Stopped"},
        interval=1,
    )
    assert job["HyperParameterTuningJobStatus"] == "Completed", job.get("FailureReason")
    assert job["ObjectiveStatusCounters"]["Succeeded"] == 2
    best = job["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "valid:loss"
    assert set(best["TunedHyperParameters"]) == {"model", "batch-size", "lr"}
