"""Request builders: every variant validated against botocore's SageMaker model."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
import pytest
from botocore.validate import ParamValidator
from pipeline_common.config import CommonSettings, TrainingSettings
from pipeline_common.jobs import decode, encode
from pipeline_common.training import build_training_request
from pipeline_common.tuning import build_tuning_request, log_spaced

MODEL = botocore.session.get_session().get_service_model("sagemaker")
COMMON = CommonSettings("mlops", "data-bucket", "artifacts-bucket", "us-east-1")
CHANNELS = {
    split: f"s3://data-bucket/datasets/digits/{split}/" for split in ("train", "valid", "test")
}
METRICS = [
    {"Name": "valid:loss", "Regex": "valid loss=([0-9.]+)"},
    {"Name": "test:accuracy", "Regex": "acc=([0-9.]+)"},
]


def settings(**changes) -> TrainingSettings:
    values = dict(
        role_arn="arn:aws:iam::123456789012:role/mlops-sagemaker-us-east-1",
        training_image="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6-gpu-py312",
        instance_type="ml.g4dn.xlarge",
        epochs=10,
        image_size=224,
        models=["resnet18", "resnet34", "resnet50"],
        batch_sizes=[32, 64],
        learning_rate_min=1e-4,
        learning_rate_max=1e-1,
        pretrained=True,
        use_spot_instances=False,
        max_runtime_seconds=7200,
        max_jobs=6,
        max_parallel_jobs=2,
        strategy="Bayesian",
        debugger_available=False,
        rule_evaluator_image="",
    )
    values.update(changes)
    return TrainingSettings(**values)


def assert_valid(operation: str, request: dict) -> None:
    report = ParamValidator().validate(request, MODEL.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def tuning(**changes):
    return build_tuning_request(
        job_name="mlops-digits-tune-1a2b3c4d",
        common=COMMON,
        training=settings(**changes),
        dataset="digits",
        execution="digits-0123",
        channel_uris=CHANNELS,
        metric_definitions=METRICS,
        warm_start_parent="mlops-digits-tune-00000000",
    )


@pytest.mark.parametrize("strategy", ["Bayesian", "Random", "Grid", "Hyperband"])
@pytest.mark.parametrize("spot", [False, True])
def test_requests_tuning_is_valid_for_every_strategy(strategy, spot):
    request = tuning(strategy=strategy, use_spot_instances=spot)

    assert_valid("CreateHyperParameterTuningJob", request)


def test_requests_tuning_search_space():
    ranges = tuning()["HyperParameterTuningJobConfig"]["ParameterRanges"]

    categorical = {
        r["Name"]: [decode(v) for v in r["Values"]] for r in ranges["CategoricalParameterRanges"]
    }
    assert categorical == {"model": ["resnet18", "resnet34", "resnet50"], "batch-size": [32, 64]}
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    ]


def test_requests_grid_has_only_categorical_ranges_and_no_job_count():
    config = tuning(strategy="Grid")["HyperParameterTuningJobConfig"]

    assert set(config["ParameterRanges"]) == {"CategoricalParameterRanges"}
    assert "MaxNumberOfTrainingJobs" not in config["ResourceLimits"]
    lr = next(
        r for r in config["ParameterRanges"]["CategoricalParameterRanges"] if r["Name"] == "lr"
    )
    assert [decode(v) for v in lr["Values"]] == log_spaced(1e-4, 1e-1, 3) == [0.0001, 0.00316, 0.1]


def test_requests_hyperband_stops_early_by_itself():
    request = tuning(strategy="Hyperband")
    config = request["HyperParameterTuningJobConfig"]

    assert config["TrainingJobEarlyStoppingType"] == "Off"
    assert config["StrategyConfig"] == {
        "HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 10}
    }
    assert "WarmStartConfig" not in request


def test_requests_warm_start_for_bayesian():
    assert tuning()["WarmStartConfig"]["WarmStartType"] == "TransferLearning"


def test_requests_spot_tuning_has_checkpoints_and_wait_time():
    definition = tuning(use_spot_instances=True)["TrainingJobDefinition"]

    assert definition["EnableManagedSpotTraining"] is True
    assert (
        definition["CheckpointConfig"]["S3Uri"]
        == "s3://artifacts-bucket/runs/digits-0123/checkpoints/tuning/"
    )
    assert definition["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 7200,
        "MaxWaitTimeInSeconds": 14400,
    }


def test_requests_hyperparameters_are_json_encoded_like_the_sdk():
    statics = tuning()["TrainingJobDefinition"]["StaticHyperParameters"]

    assert statics["epochs"] == "10"
    assert statics["pretrained"] == '"true"'
    assert statics["sagemaker_program"] == '"train.py"'
    assert statics["sagemaker_region"] == '"us-east-1"'
    assert decode("not-json") == "not-json" and encode("x") == '"x"'


@pytest.mark.parametrize("debugger", [False, True])
def test_requests_training_is_valid(debugger):
    rules = [
        {
            "RuleConfigurationName": "Overfit",
            "RuleEvaluatorImage": "img",
            "RuleParameters": {"rule_to_invoke": "Overfit"},
        }
    ]
    request = build_training_request(
        job_name="mlops-digits-retrain-1a2b3c4d",
        common=COMMON,
        training=settings(use_spot_instances=debugger),
        dataset="digits",
        execution="digits-0123",
        channel_uris=CHANNELS,
        metric_definitions=METRICS,
        tuned_hyperparameters={
            "model": '"resnet50"',
            "lr": "0.01",
            "_tuning_objective_metric": '"valid:loss"',
        },
        debugger=debugger,
        debug_rules=rules if debugger else None,
        profiler_rules=rules if debugger else None,
    )

    assert_valid("CreateTrainingJob", request)
    assert request["HyperParameters"]["model"] == '"resnet50"'
    assert "_tuning_objective_metric" not in request["HyperParameters"]
    assert request["HyperParameters"]["run-rules"] == '"true"'
    assert ("DebugHookConfig" in request) is debugger
    assert ("ProfilerConfig" in request) is debugger


def test_requests_seed_reaches_the_tuning_job_and_every_trial():
    request = tuning(seed=7)

    assert_valid("CreateHyperParameterTuningJob", request)
    assert request["HyperParameterTuningJobConfig"]["RandomSeed"] == 7
    assert request["TrainingJobDefinition"]["StaticHyperParameters"]["seed"] == "7"


def test_requests_default_seed_is_zero_not_absent():
    """No seed would let the search differ run to run: the demo must be reproducible."""
    request = tuning()

    assert request["HyperParameterTuningJobConfig"]["RandomSeed"] == 0
    assert request["TrainingJobDefinition"]["StaticHyperParameters"]["seed"] == "0"


def test_requests_retrain_uses_the_seed():
    request = build_training_request(
        job_name="mlops-digits-retrain-1a2b3c4d",
        common=COMMON,
        training=settings(seed=3),
        dataset="digits",
        execution="digits-0123",
        channel_uris=CHANNELS,
        metric_definitions=METRICS,
        tuned_hyperparameters={"model": '"resnet18"', "lr": "0.01"},
        debug_rules=None,
        profiler_rules=None,
    )

    assert request["HyperParameters"]["seed"] == "3"


def test_requests_seed_parameter_is_wired_to_both_training_functions():
    from tests.support import template as sam_template

    assert sam_template.parameter_defaults()["Seed"] == "0"
    for name in ("StartTuningFunction", "StartProfiledTrainingFunction"):
        variables = sam_template.functions()[name]["Environment"]["Variables"]
        assert variables["SEED"] == {"Ref": "Seed"}, name


def retrain(**changes):
    return build_training_request(
        job_name="mlops-digits-retrain-1a2b3c4d",
        common=COMMON,
        training=settings(**changes),
        dataset="digits",
        execution="digits-0123",
        channel_uris=CHANNELS,
        metric_definitions=METRICS,
        tuned_hyperparameters={"model": '"resnet18"', "lr": "0.01"},
        debug_rules=None,
        profiler_rules=None,
    )


def test_requests_one_instance_is_started_without_torchrun():
    """The default keeps today's jobs: one instance, no distribution hyperparameter."""
    trial = tuning()["TrainingJobDefinition"]
    job = retrain()

    assert trial["ResourceConfig"]["InstanceCount"] == job["ResourceConfig"]["InstanceCount"] == 1
    assert "sagemaker_torch_distributed_enabled" not in trial["StaticHyperParameters"]
    assert "sagemaker_torch_distributed_enabled" not in job["HyperParameters"]


def test_requests_several_instances_reach_trials_and_retrain_with_torchrun():
    trial_request = tuning(instance_count=2)
    job = retrain(instance_count=2)
    trial = trial_request["TrainingJobDefinition"]

    assert_valid("CreateHyperParameterTuningJob", trial_request)
    assert_valid("CreateTrainingJob", job)
    assert trial["ResourceConfig"]["InstanceCount"] == job["ResourceConfig"]["InstanceCount"] == 2
    # The SDK's distribution={"torch_distributed": {"enabled": True}}, JSON-encoded.
    assert trial["StaticHyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert job["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


def set_training_environment(monkeypatch, **overrides: str) -> None:
    """The variables TrainingSettings.from_env needs, plus `overrides`."""
    for name, setting in {
        "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/r",
        "TRAINING_IMAGE": "image",
        "TRAINING_INSTANCE_TYPE": "ml.m5.large",
        "LEARNING_RATE_MIN": "0.001",
        "LEARNING_RATE_MAX": "0.1",
        **overrides,
    }.items():
        monkeypatch.setenv(name, setting)


@pytest.mark.parametrize("value", ["0", "21", "two"])
def test_requests_instance_count_out_of_range_is_a_configuration_error(monkeypatch, value):
    from pipeline_common.config import ConfigurationError

    set_training_environment(monkeypatch, TRAINING_INSTANCE_COUNT=value)

    with pytest.raises(ConfigurationError, match="TRAINING_INSTANCE_COUNT"):
        TrainingSettings.from_env()


def test_requests_instance_count_parameter_is_wired_to_both_training_functions():
    from tests.support import template as sam_template

    assert sam_template.parameter_defaults()["TrainingInstanceCount"] == "1"
    for name in ("StartTuningFunction", "StartProfiledTrainingFunction"):
        variables = sam_template.functions()[name]["Environment"]["Variables"]
        assert variables["TRAINING_INSTANCE_COUNT"] == {"Ref": "TrainingInstanceCount"}, name


def test_requests_own_hook_settings_match_debugger_ones():
    """train.py's own hook settings (used without Debugger) save what the DebugHookConfig asks
    for where Debugger exists: the rules see the same tensors in every account."""
    from pipeline_common.training import COLLECTION_SAVE_INTERVALS, debug_hook_config

    shipped = json.loads((Path(__file__).parents[2] / "training/debug_hook.json").read_text())
    assert (
        shipped["CollectionConfigurations"]
        == debug_hook_config(COMMON, "x")["CollectionConfigurations"]
    )
    assert {c["CollectionName"] for c in shipped["CollectionConfigurations"]} == set(
        COLLECTION_SAVE_INTERVALS
    )


@pytest.mark.parametrize("mode", ["File", "FastFile"])
def test_requests_input_mode_reaches_trials_and_retrain(mode):
    """The mode is in the algorithm specification and on every channel of both requests, and
    botocore's model accepts it (channel InputMode and HyperParameterAlgorithmSpecification's
    TrainingInputMode share the enum Pipe | File | FastFile)."""
    trial_request = tuning(input_mode=mode, instance_count=2)
    job = retrain(input_mode=mode, instance_count=2)
    trial = trial_request["TrainingJobDefinition"]

    assert_valid("CreateHyperParameterTuningJob", trial_request)
    assert_valid("CreateTrainingJob", job)
    for request in (trial, job):
        assert request["AlgorithmSpecification"]["TrainingInputMode"] == mode
        assert [c["InputMode"] for c in request["InputDataConfig"]] == [mode] * 3
        # FastFile is documented for S3Prefix channels (augmented manifests need Pipe).
        assert {
            c["DataSource"]["S3DataSource"]["S3DataType"] for c in request["InputDataConfig"]
        } == {"S3Prefix"}


def test_requests_input_mode_unknown_value_is_a_configuration_error(monkeypatch):
    from pipeline_common.config import ConfigurationError

    set_training_environment(monkeypatch, INPUT_MODE="Pipe")

    with pytest.raises(ConfigurationError, match="INPUT_MODE='Pipe' is not one of File, FastFile"):
        TrainingSettings.from_env()


def test_requests_input_mode_parameter_is_wired_to_both_training_functions():
    from pipeline_common.config import INPUT_MODES

    from tests.support import template as sam_template

    parameter = sam_template.load_template()["Parameters"]["InputMode"]
    assert parameter["Default"] == "File"
    assert tuple(parameter["AllowedValues"]) == INPUT_MODES
    # Every value the template allows is one botocore's model allows.
    assert set(INPUT_MODES) <= set(MODEL.shape_for("TrainingInputMode").enum)
    for name in ("StartTuningFunction", "StartProfiledTrainingFunction"):
        variables = sam_template.functions()[name]["Environment"]["Variables"]
        assert variables["INPUT_MODE"] == {"Ref": "InputMode"}, name
