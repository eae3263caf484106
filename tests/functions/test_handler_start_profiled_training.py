"""start_profiled_training: the retrain request with hook, profiler and optional built-in rules."""

from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber
from pipeline_common.errors import ConfigurationError, ResourceLimitExceeded

from tests.functions.handler_helpers import ARN_PREFIX, load_event, publish_training_source

EXECUTION = "digits-0123456789abcdef"
RULE_IMAGE = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"


def event() -> dict:
    return {
        "execution_name": EXECUTION,
        "dataset": load_event("validated_dataset.json"),
        "best": load_event("best_trial.json"),
    }


def create(app, context, error_code: str | None = None) -> tuple[dict, dict]:
    """Run the handler; return (its result, the CreateTrainingJob request botocore validated)."""
    sent: dict = {}

    def capture(params, **_):
        sent.update(params)

    app.sagemaker.meta.events.register("provide-client-params.sagemaker.CreateTrainingJob", capture)
    with Stubber(app.sagemaker) as stub:
        if error_code:
            stub.add_client_error("create_training_job", error_code, "already exists or over quota")
        else:
            stub.add_response(
                "create_training_job", {"TrainingJobArn": f"{ARN_PREFIX}:training-job/x"}
            )
        return app.lambda_handler(event(), context), sent


@pytest.fixture
def app(load_handler, buckets):
    publish_training_source(buckets.s3, buckets.artifacts)
    return load_handler("start_profiled_training")


def test_start_profiled_training_request(app, context):
    result, request = create(app, context)

    assert result == {"job_name": request["TrainingJobName"], "builtin_rules": False}
    assert request["TrainingJobName"].startswith("mlops-digits-retrain-")
    hyperparameters = request["HyperParameters"]
    assert hyperparameters["model"] == '"resnet18"'
    assert hyperparameters["lr"] == "0.0031"
    assert hyperparameters["run-rules"] == '"true"'
    assert json.loads(hyperparameters["sagemaker_program"]) == "train.py"
    # No SageMaker Debugger (the default, and every account opened since 2026-07-30): the
    # request carries none of its members; train.py hooks, profiles and judges by itself.
    for member in (
        "DebugHookConfig",
        "ProfilerConfig",
        "DebugRuleConfigurations",
        "ProfilerRuleConfigurations",
    ):
        assert member not in request
    assert "EnableManagedSpotTraining" not in request


def test_start_profiled_training_with_debugger_adds_builtin_rules(load_handler, buckets, context):
    publish_training_source(buckets.s3, buckets.artifacts)
    app = load_handler(
        "start_profiled_training", DebuggerAvailable="true", RuleEvaluatorImage=RULE_IMAGE
    )

    result, request = create(app, context)

    assert result["builtin_rules"] is True
    hook = request["DebugHookConfig"]
    assert hook["S3OutputPath"].endswith(f"/runs/{EXECUTION}/debug/")
    collections = {
        c["CollectionName"]: c["CollectionParameters"] for c in hook["CollectionConfigurations"]
    }
    assert set(collections) == {"losses", "weights", "biases", "gradients", "relu_input"}
    assert collections["relu_input"]["include_regex"] == ".*relu_input"
    assert request["ProfilerConfig"]["S3OutputPath"].endswith(f"/runs/{EXECUTION}/profiler/")
    rules = {r["RuleConfigurationName"]: r for r in request["DebugRuleConfigurations"]}
    assert set(rules) == {
        "LossNotDecreasing",
        "VanishingGradient",
        "PoorWeightInitialization",
        "Overfit",
        "Overtraining",
    }
    assert rules["VanishingGradient"]["RuleParameters"]["rule_to_invoke"] == "VanishingGradient"
    assert all(r["RuleEvaluatorImage"] == RULE_IMAGE for r in rules.values())
    profiler = {r["RuleConfigurationName"]: r for r in request["ProfilerRuleConfigurations"]}
    assert set(profiler) == {"ProfilerReport", "LowGPUUtilization"}
    assert profiler["LowGPUUtilization"]["RuleParameters"]["threshold_p95"] == "70"


def test_start_profiled_training_debugger_without_rule_image(load_handler, buckets, context):
    publish_training_source(buckets.s3, buckets.artifacts)
    app = load_handler("start_profiled_training", DebuggerAvailable="true")

    with pytest.raises(ConfigurationError, match="RULE_EVALUATOR_IMAGE is empty"):
        app.lambda_handler(event(), context)


def test_start_profiled_training_spot_uses_checkpoints(load_handler, buckets, context):
    publish_training_source(buckets.s3, buckets.artifacts)
    app = load_handler("start_profiled_training", UseSpotInstances="true", MaxRuntimeSeconds="3600")

    _, request = create(app, context)

    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"]["S3Uri"].endswith(f"/runs/{EXECUTION}/checkpoints/training/")
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }


def test_start_profiled_training_retry_finds_its_own_job(app, context):
    result, request = create(app, context, error_code="ResourceInUse")

    assert result["job_name"] == request["TrainingJobName"]


def test_start_profiled_training_quota_is_retryable(app, context):
    with pytest.raises(ResourceLimitExceeded, match="Service Quotas"):
        create(app, context, error_code="ResourceLimitExceeded")
