"""The CreateTrainingJob request of the profiled retrain of the best configuration.

The job runs with ``run-rules=true`` so train.py evaluates the project's own rules over the
tensors its smdebug hook saved and writes ``rule_statuses.json`` and a system profile into its
own output (SageMaker Debugger is closed to new accounts since 2026-07-30: nothing here may
depend on it). Only when the account still has Debugger (``DEBUGGER_AVAILABLE``) does the
request carry ``DebugHookConfig`` (what the hook saves, and where), ``ProfilerConfig`` and
AWS's built-in rule configurations, which the caller builds with smdebug_rulesconfig; without
it train.py builds its hook from the settings it ships (training/debug_hook.json, the same
collections and intervals as COLLECTION_SAVE_INTERVALS below).
"""

from __future__ import annotations

from typing import Any

from pipeline_common.config import CommonSettings, TrainingSettings
from pipeline_common.jobs import (
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

# Steps between saved tensors per collection: often enough for the rules to see a trend
# (LossNotDecreasing looks at 10-step windows) without judging single noisy batches (per-step
# losses of small batches made PoorWeightInitialization's "loss stalls in the first steps"
# check fire on healthy runs), rarely enough that the weights of a ResNet-50 do not fill the
# bucket.
COLLECTION_SAVE_INTERVALS = {
    "losses": "10",
    "gradients": "50",
    "weights": "100",
    "biases": "100",
    "relu_input": "100",
}
PROFILING_INTERVAL_MS = 500
TUNING_ONLY_HYPERPARAMETERS = frozenset({"_tuning_objective_metric"})


def collection_configurations() -> list[dict[str, Any]]:
    """Collections the rules read: losses, weights, biases, gradients, ReLU inputs (the shape
    of DebugHookConfig's CollectionConfigurations; bench/debug_overhead.py measures the same)."""
    collections = []
    for name, interval in COLLECTION_SAVE_INTERVALS.items():
        parameters = {"save_interval": interval}
        if name == "relu_input":
            parameters["include_regex"] = ".*relu_input"
        collections.append({"CollectionName": name, "CollectionParameters": parameters})
    return collections


def debug_hook_config(common: CommonSettings, execution: str) -> dict[str, Any]:
    return {
        "S3OutputPath": run_uri(common, execution, "debug"),
        "CollectionConfigurations": collection_configurations(),
    }


def profiler_config(common: CommonSettings, execution: str) -> dict[str, Any]:
    return {
        "S3OutputPath": run_uri(common, execution, "profiler"),
        "ProfilingIntervalInMilliseconds": PROFILING_INTERVAL_MS,
    }


def retrain_hyperparameters(
    common: CommonSettings, training: TrainingSettings, tuned: dict[str, str]
) -> dict[str, str]:
    """Static hyperparameters, the best trial's tuned values, and ``run-rules=true``.

    Tuned values arrive exactly as SageMaker reports them (already encoded); keys SageMaker
    adds for its own bookkeeping are dropped.
    """
    best = {k: v for k, v in tuned.items() if k not in TUNING_ONLY_HYPERPARAMETERS}
    merged = {**static_hyperparameters(common, training, run_rules=True), **best}
    merged["run-rules"] = encode("true")
    return merged


def build_training_request(
    *,
    job_name: str,
    common: CommonSettings,
    training: TrainingSettings,
    dataset: str,
    execution: str,
    channel_uris: dict[str, str],
    metric_definitions: list[dict[str, str]],
    tuned_hyperparameters: dict[str, str],
    debugger: bool = False,
    debug_rules: list[dict[str, Any]] | None = None,
    profiler_rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``sagemaker.create_training_job``; the Debugger members
    (hook, profiler, rules) only with ``debugger`` (the account still has SageMaker Debugger)."""
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "HyperParameters": retrain_hyperparameters(common, training, tuned_hyperparameters),
        "AlgorithmSpecification": algorithm_specification(training, metric_definitions),
        "RoleArn": training.role_arn,
        "InputDataConfig": input_channels(channel_uris, training.input_mode),
        "OutputDataConfig": {"S3OutputPath": run_uri(common, execution, "training")},
        "ResourceConfig": resource_config(training),
        "StoppingCondition": stopping_condition(training),
        "Tags": tags(common.project_name, dataset, execution),
        **spot_settings(common, training, execution, "training"),
    }
    if not debugger:
        return request
    request["DebugHookConfig"] = debug_hook_config(common, execution)
    request["ProfilerConfig"] = profiler_config(common, execution)
    if debug_rules:
        request["DebugRuleConfigurations"] = debug_rules
    if profiler_rules:
        request["ProfilerRuleConfigurations"] = profiler_rules
    return request
