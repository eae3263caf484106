"""A CreateHyperParameterTuningJob request, checked as AWS checks it, and what the search uses.

botocore's service model already checked the request's shape (responses.py); this module adds
what AWS checks beyond it (the objective among the metric definitions, static vs tuned
hyperparameters, the Grid strategy's job count, warm-start parents that exist) and turns the
request into `TuningSettings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlops.local.sagemaker.errors import ValidationException
from mlops.local.sagemaker.tuning_space import Parameter, build_search_space, grid_size

# Finds a tuning job by name (None when there is none): the warm-start parents.
ParentLookup = Callable[[str], Any]


@dataclass
class TuningSettings:
    """The parts of CreateHyperParameterTuningJob the search itself uses."""

    strategy: str
    objective_name: str
    direction: str  # "minimize" | "maximize"
    max_jobs: int
    max_parallel: int
    max_runtime_s: int | None
    early_stopping: bool
    seed: int | None
    parameters: list[Parameter] = field(default_factory=list)


def validate_tuning_request(request: dict[str, Any], find_parent: ParentLookup) -> TuningSettings:
    """What AWS checks beyond the service model before it accepts a tuning job."""
    config = request["HyperParameterTuningJobConfig"]
    definition = request.get("TrainingJobDefinition")
    if definition is None:
        raise ValidationException(
            "The local SageMaker supports TrainingJobDefinition (one definition); "
            "TrainingJobDefinitions with several definitions is not supported."
        )
    objective = config.get("HyperParameterTuningJobObjective") or definition.get("TuningObjective")
    if not objective:
        raise ValidationException(
            "HyperParameterTuningJobObjective is required: name the metric to optimise and "
            "whether to Minimize or Maximize it."
        )
    metric_names = {
        m["Name"] for m in definition["AlgorithmSpecification"].get("MetricDefinitions", [])
    }
    if objective["MetricName"] not in metric_names:
        raise ValidationException(
            "A metric is required for this hyperparameter tuning job objective. Provide a "
            "metric in the metric definitions."
        )
    strategy = config["Strategy"]
    ranges = config.get("ParameterRanges") or definition.get("HyperParameterRanges") or {}
    parameters = build_search_space(ranges, strategy)
    if not parameters:
        raise ValidationException("ParameterRanges must name at least one hyperparameter to tune.")
    static = set(definition.get("StaticHyperParameters", {}))
    overlap = sorted(static & {p.name for p in parameters})
    if overlap:
        raise ValidationException(
            f"Hyperparameters {', '.join(overlap)} are both static and tunable; remove them "
            "from StaticHyperParameters or from ParameterRanges."
        )
    limits = config["ResourceLimits"]
    max_jobs = limits.get("MaxNumberOfTrainingJobs")
    if strategy == "Grid":
        combinations = grid_size(parameters)
        if max_jobs is not None and max_jobs != combinations:
            raise ValidationException(
                f"For the Grid strategy MaxNumberOfTrainingJobs must be left out or equal the "
                f"number of distinct categorical combinations ({combinations}); got {max_jobs}."
            )
        max_jobs = combinations
    elif max_jobs is None:
        raise ValidationException(
            f"ResourceLimits.MaxNumberOfTrainingJobs is required for the {strategy} strategy."
        )
    early_stopping = config.get("TrainingJobEarlyStoppingType", "Off") == "Auto"
    if strategy == "Hyperband" and early_stopping:
        raise ValidationException(
            "The Hyperband strategy has its own early stopping: set TrainingJobEarlyStoppingType "
            "to Off."
        )
    warm = request.get("WarmStartConfig") or {}
    for parent in warm.get("ParentHyperParameterTuningJobs", []):
        name = parent["HyperParameterTuningJobName"]
        if find_parent(name) is None:
            raise ValidationException(
                f"Could not find parent hyperparameter tuning job {name} named in "
                "WarmStartConfig.ParentHyperParameterTuningJobs."
            )
    return TuningSettings(
        strategy=strategy,
        objective_name=objective["MetricName"],
        direction="minimize" if objective["Type"] == "Minimize" else "maximize",
        max_jobs=max_jobs,
        max_parallel=limits["MaxParallelTrainingJobs"],
        max_runtime_s=limits.get("MaxRuntimeInSeconds"),
        early_stopping=early_stopping,
        seed=config.get("RandomSeed"),
        parameters=parameters,
    )
