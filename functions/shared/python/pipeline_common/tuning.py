"""The CreateHyperParameterTuningJob request.

Search space: ``model`` categorical (resnet18, resnet34, resnet50 or a subset: the Models
parameter), ``batch-size``
categorical, ``lr`` continuous on a log scale; ``epochs``, ``image-size``, ``pretrained``
static and ``run-rules`` false (the project's rules only run in the profiled retrain).
Strategy specifics the API enforces:

* Hyperband has its own early stopping: TrainingJobEarlyStoppingType must be Off, and its
  resource is the ``epochs`` hyperparameter.
* Grid accepts only categorical ranges and derives the number of jobs itself, so ``lr``
  becomes a few log-spaced values and MaxNumberOfTrainingJobs is left out.
* Warm start is offered for Bayesian and Random only.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline_common.config import CommonSettings, TrainingSettings
from pipeline_common.jobs import (
    OBJECTIVE_METRIC,
    OBJECTIVE_TYPE,
    algorithm_specification,
    encode,
    input_channels,
    resource_config,
    run_uri,
    spot_settings,
    static_hyperparameters,
    stopping_condition,
    tags,
)

GRID_LEARNING_RATES = 3
WARM_START_STRATEGIES = frozenset({"Bayesian", "Random"})
WARM_START_TYPE = "TransferLearning"  # new data set versions change the data: not "identical"


def log_spaced(low: float, high: float, count: int) -> list[float]:
    """``count`` values from ``low`` to ``high`` evenly spaced on a log scale (3 digits)."""
    if count == 1:
        return [low]
    step = (math.log10(high) - math.log10(low)) / (count - 1)
    return [float(f"{10 ** (math.log10(low) + i * step):.3g}") for i in range(count)]


def parameter_ranges(training: TrainingSettings) -> dict[str, Any]:
    """The search space; Grid gets a categorical learning rate instead of a continuous one."""
    categorical = [
        {"Name": "model", "Values": [encode(m) for m in training.models]},
        {"Name": "batch-size", "Values": [encode(b) for b in training.batch_sizes]},
    ]
    if training.strategy == "Grid":
        rates = log_spaced(
            training.learning_rate_min, training.learning_rate_max, GRID_LEARNING_RATES
        )
        categorical.append({"Name": "lr", "Values": [encode(r) for r in rates]})
        return {"CategoricalParameterRanges": categorical}
    return {
        "CategoricalParameterRanges": categorical,
        "ContinuousParameterRanges": [
            {
                "Name": "lr",
                "MinValue": repr(training.learning_rate_min),
                "MaxValue": repr(training.learning_rate_max),
                "ScalingType": "Logarithmic",
            }
        ],
    }


def tuning_job_config(training: TrainingSettings) -> dict[str, Any]:
    limits: dict[str, int] = {"MaxParallelTrainingJobs": training.max_parallel_jobs}
    if training.strategy != "Grid":
        limits["MaxNumberOfTrainingJobs"] = training.max_jobs
    config: dict[str, Any] = {
        "Strategy": training.strategy,
        "HyperParameterTuningJobObjective": {
            "Type": OBJECTIVE_TYPE,
            "MetricName": OBJECTIVE_METRIC,
        },
        "ResourceLimits": limits,
        "ParameterRanges": parameter_ranges(training),
        "TrainingJobEarlyStoppingType": "Off" if training.strategy == "Hyperband" else "Auto",
        # Template parameter Seed: the same seed gives the same sequence of suggestions.
        "RandomSeed": training.seed,
    }
    if training.strategy == "Hyperband":
        config["StrategyConfig"] = {
            "HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": training.epochs}
        }
    return config


def build_tuning_request(
    *,
    job_name: str,
    common: CommonSettings,
    training: TrainingSettings,
    dataset: str,
    execution: str,
    channel_uris: dict[str, str],
    metric_definitions: list[dict[str, str]],
    warm_start_parent: str | None,
) -> dict[str, Any]:
    """Keyword arguments for ``sagemaker.create_hyper_parameter_tuning_job``."""
    definition: dict[str, Any] = {
        "StaticHyperParameters": static_hyperparameters(common, training, run_rules=False),
        "AlgorithmSpecification": algorithm_specification(training, metric_definitions),
        "RoleArn": training.role_arn,
        "InputDataConfig": input_channels(channel_uris, training.input_mode),
        "OutputDataConfig": {"S3OutputPath": run_uri(common, execution, "tuning")},
        "ResourceConfig": resource_config(training),
        "StoppingCondition": stopping_condition(training),
        **spot_settings(common, training, execution, "tuning"),
    }
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": job_name,
        "HyperParameterTuningJobConfig": tuning_job_config(training),
        "TrainingJobDefinition": definition,
        "Tags": tags(common.project_name, dataset, execution),
    }
    if warm_start_parent and training.strategy in WARM_START_STRATEGIES:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": warm_start_parent}],
            "WarmStartType": WARM_START_TYPE,
        }
    return request
