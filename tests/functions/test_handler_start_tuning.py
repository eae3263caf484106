"""start_tuning: the tuning request, warm start and the errors a user can act on."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from pipeline_common.errors import ConfigurationError, ResourceLimitExceeded, SageMakerThrottled

from tests.functions.handler_helpers import load_event, publish_training_source

EXECUTION = "digits-0123456789abcdef"


def event() -> dict:
    return {"execution_name": EXECUTION, "dataset": load_event("validated_dataset.json")}


@pytest.fixture
def app(load_handler, buckets):
    publish_training_source(buckets.s3, buckets.artifacts)
    return load_handler("start_tuning")


def describe(name: str) -> dict:
    return boto3.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name
    )


def create_previous_job(name: str, dataset: str) -> None:
    """A completed tuning job from an earlier run (moto completes tuning jobs at once)."""
    sm = boto3.client("sagemaker")
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig={
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
        },
        TrainingJobDefinition={
            "AlgorithmSpecification": {"TrainingImage": "image", "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::123456789012:role/mlops-sagemaker-us-east-1",
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/out/"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        },
        Tags=[{"Key": "mlops:dataset", "Value": dataset}],
    )


def test_start_tuning_creates_the_tuning_job(app, context):
    result = app.lambda_handler(event(), context)

    assert result == {
        "job_name": result["job_name"],
        "warm_start_parent": None,
        "strategy": "Bayesian",
    }
    assert result["job_name"].startswith("mlops-digits-tune-")
    assert len(result["job_name"]) <= 32
    job = describe(result["job_name"])
    config = job["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2}
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "valid:loss",
    }
    definition = job["TrainingJobDefinition"]
    statics = definition["StaticHyperParameters"]
    assert statics["run-rules"] == '"false"'
    assert json.loads(statics["sagemaker_submit_directory"]) == (
        "s3://mlops-artifacts-123456789012-us-east-1/code/training/sourcedir.tar.gz"
    )
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == ["train", "valid", "test"]
    metric_names = {m["Name"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"valid:loss", "test:accuracy"} <= metric_names


def test_start_tuning_retry_finds_its_own_job(app, context):
    first = app.lambda_handler(event(), context)
    second = app.lambda_handler(event(), context)

    assert first["job_name"] == second["job_name"]


def test_start_tuning_warm_starts_from_the_data_sets_last_job(app, context):
    create_previous_job("mlops-digits-tune-aaaaaaaa", "digits")

    result = app.lambda_handler(event(), context)

    assert result["warm_start_parent"] == "mlops-digits-tune-aaaaaaaa"
    warm = describe(result["job_name"])["WarmStartConfig"]
    assert warm["WarmStartType"] == "TransferLearning"
    assert warm["ParentHyperParameterTuningJobs"] == [
        {"HyperParameterTuningJobName": "mlops-digits-tune-aaaaaaaa"}
    ]


def test_start_tuning_ignores_jobs_of_other_data_sets_with_the_same_prefix(app, context):
    create_previous_job("mlops-digits-tune-bbbbbbbb", "digits-extended")

    result = app.lambda_handler(event(), context)

    assert result["warm_start_parent"] is None


def test_start_tuning_without_warm_start_for_hyperband(load_handler, buckets, context):
    publish_training_source(buckets.s3, buckets.artifacts)
    create_previous_job("mlops-digits-tune-aaaaaaaa", "digits")
    app = load_handler("start_tuning", TuningStrategy="Hyperband")

    result = app.lambda_handler(event(), context)

    job = describe(result["job_name"])
    assert "WarmStartConfig" not in job
    assert job["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"] == "Off"


def test_start_tuning_searches_only_the_chosen_models(load_handler, buckets, context):
    publish_training_source(buckets.s3, buckets.artifacts)
    app = load_handler("start_tuning", Models="resnet18,resnet50", BatchSizes="16")

    result = app.lambda_handler(event(), context)

    ranges = describe(result["job_name"])["HyperParameterTuningJobConfig"]["ParameterRanges"]
    categorical = {r["Name"]: r["Values"] for r in ranges["CategoricalParameterRanges"]}
    assert categorical == {"model": ['"resnet18"', '"resnet50"'], "batch-size": ["16"]}


def test_start_tuning_unpublished_metric_definitions(load_handler, buckets, context):
    app = load_handler("start_tuning")

    with pytest.raises(ConfigurationError, match=r"metric_definitions.json does not exist"):
        app.lambda_handler(event(), context)


def test_start_tuning_metric_definitions_without_the_objective(load_handler, buckets, context):
    publish_training_source(
        buckets.s3, buckets.artifacts, [{"Name": "test:accuracy", "Regex": "acc=([0-9.]+)"}]
    )
    app = load_handler("start_tuning")

    with pytest.raises(ConfigurationError, match="no regex for valid:loss"):
        app.lambda_handler(event(), context)


def test_start_tuning_unpublished_training_source(app, buckets, context):
    buckets.s3.delete_object(Bucket=buckets.artifacts, Key="code/training/sourcedir.tar.gz")

    with pytest.raises(ConfigurationError, match=r"sourcedir.tar.gz does not exist"):
        app.lambda_handler(event(), context)


def test_start_tuning_invalid_learning_rate_range(load_handler, buckets, context):
    publish_training_source(buckets.s3, buckets.artifacts)
    app = load_handler("start_tuning", LearningRateMin="0.1", LearningRateMax="0.01")

    with pytest.raises(ConfigurationError, match=r"LEARNING_RATE_MIN=0.1 must be below"):
        app.lambda_handler(event(), context)


@pytest.mark.parametrize(
    ("code", "error"),
    [("ThrottlingException", SageMakerThrottled), ("ResourceLimitExceeded", ResourceLimitExceeded)],
)
def test_start_tuning_transient_errors_are_retryable(app, context, code, error):
    with Stubber(app.sagemaker) as stub:
        stub.add_response(
            "list_hyper_parameter_tuning_jobs", {"HyperParameterTuningJobSummaries": []}
        )
        stub.add_client_error(
            "create_hyper_parameter_tuning_job",
            service_error_code=code,
            service_message="slow down",
        )
        with pytest.raises(error, match="CreateHyperParameterTuningJob"):
            app.lambda_handler(event(), context)
