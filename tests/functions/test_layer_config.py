"""pipeline_common.config: settings from the environment, errors naming the variable."""

from __future__ import annotations

import pytest
from pipeline_common.config import CommonSettings, TrainingSettings, env_bool, env_int, env_int_list
from pipeline_common.errors import ConfigurationError

TRAINING_ENV = {
    "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/r",
    "TRAINING_IMAGE": "image",
    "TRAINING_INSTANCE_TYPE": "ml.m5.large",
    "LEARNING_RATE_MIN": "0.001",
    "LEARNING_RATE_MAX": "0.1",
}


@pytest.fixture
def training_env(monkeypatch):
    for name, value in TRAINING_ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_config_missing_variable_names_it(monkeypatch):
    monkeypatch.delenv("PROJECT_NAME", raising=False)

    with pytest.raises(ConfigurationError, match="PROJECT_NAME is not set"):
        CommonSettings.from_env()


def test_config_training_defaults(training_env):
    settings = TrainingSettings.from_env()

    assert (settings.max_jobs, settings.max_parallel_jobs, settings.strategy) == (6, 2, "Bayesian")
    assert settings.batch_sizes == [32, 64]
    assert settings.models == ["resnet18", "resnet34", "resnet50"]
    assert settings.debugger_available is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TUNING_STRATEGY", "Genetic", "is not one of Bayesian, Random, Grid, Hyperband"),
        ("MAX_PARALLEL_JOBS", "9", "exceeds MAX_JOBS=6"),
        ("BATCH_SIZES", "32,x", "comma-separated list of integers"),
        ("EPOCHS", "0", "below the minimum of 1"),
        ("USE_SPOT_INSTANCES", "maybe", "not a boolean"),
        ("MODELS", "resnet18,vgg16", "must list some of resnet18, resnet34, resnet50"),
    ],
)
def test_config_training_refuses_bad_values(training_env, name, value, message):
    training_env.setenv(name, value)

    with pytest.raises(ConfigurationError, match=message):
        TrainingSettings.from_env()


def test_config_parsers(monkeypatch):
    monkeypatch.setenv("A", "TRUE")
    monkeypatch.setenv("B", "7")
    monkeypatch.setenv("C", " 16, 32 ")

    assert env_bool("A") is True
    assert env_int("B", minimum=1) == 7
    assert env_int_list("C") == [16, 32]
