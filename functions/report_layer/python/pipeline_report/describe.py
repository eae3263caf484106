"""What SageMaker says about a run's jobs and endpoint: its describe calls and the job logs.

The tuning job (DescribeHyperParameterTuningJob, its trials), the profiled retrain
(DescribeTrainingJob, its rule statuses, its output.tar.gz and log stream) and the endpoint
(DescribeEndpoint/-Config/Model). The report never invokes the endpoint: what the test pass
found (confusion.json) is a record train.py wrote.
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pipeline_common.metrics import CONFUSION_FILE

from pipeline_report import analysis as an
from pipeline_report.profile import Profile, system_profile
from pipeline_report.records import (
    Confusion,
    Explanations,
    confusion_from_record,
    explanations_from_archive,
    output_files,
    read_output_archive,
)
from pipeline_report.target import Target

log = logging.getLogger(__name__)

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
MAX_LOG_EVENTS = 20_000
OUTPUT_FILES = ("history.json", CONFUSION_FILE, "rule_statuses.json")


@dataclass
class Tuning:
    job_name: str
    status: str | None
    strategy: str | None
    objective_metric: str
    objective_type: str
    trials: list[dict[str, Any]]  # name, status, objective, hyperparameters, failure_reason, ...
    trials_source: str
    best_name: str | None
    best_objective: float | None
    best_hyperparameters: dict[str, Any]  # decoded BestTrainingJob.TunedHyperParameters
    counters: dict[str, int]
    max_jobs: int | None
    learning_rate: str | None  # the hyperparameter that holds it
    learning_rate_log: bool
    learning_rate_range: tuple[float, float] | None


@dataclass
class Retrain:
    job_name: str
    status: str
    secondary_status: str | None
    failure_reason: str | None
    instance_type: str | None
    hyperparameters: dict[str, Any]
    final_metrics: dict[str, float]
    rule_statuses: list[dict[str, str]]  # rule, status, details, source (as DescribeTrainingJob)
    curves: an.Curves | None
    profile: Profile | None
    billable_s: float | None
    confusion: Confusion | None = None  # train.py's test pass (confusion.json)
    explanations: Explanations | None = None  # Grad-CAM of test images (explanations/)


@dataclass
class Endpoint:
    name: str
    status: str | None
    config_name: str | None
    run_config_name: str | None
    model_name: str | None
    model_data: str | None
    instance_type: str | None
    serves_this_run: bool
    failure_reason: str | None


# -- tuning ---------------------------------------------------------------------------------------
def collect_tuning(sagemaker: Any, name: str, leaderboard: dict[str, Any] | None) -> Tuning | None:
    """The tuning job as DescribeHyperParameterTuningJob gives it, with every trial."""
    try:
        job = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    except ClientError as exc:
        log.warning("DescribeHyperParameterTuningJob %s: %s", name, exc)
        job = {}
    config = job.get("HyperParameterTuningJobConfig", {})
    objective = config.get("HyperParameterTuningJobObjective", {})
    leader_objective = (leaderboard or {}).get("objective", {})
    if leaderboard:
        trials = [_trial_from_record(row) for row in leaderboard.get("trials", [])]
        source = "leaderboard.json (written by FindBest)"
    else:
        trials = [_trial_from_summary(s) for s in list_tuning_trials(sagemaker, name)]
        source = "ListTrainingJobsForHyperParameterTuningJob (no leaderboard.json yet)"
    objective_type = objective.get("Type") or leader_objective.get("type", "Minimize")
    best = job.get("BestTrainingJob") or {}
    lr_name, lr_log, lr_range = _learning_rate(config.get("ParameterRanges", {}), trials)
    return Tuning(
        job_name=name,
        status=job.get("HyperParameterTuningJobStatus"),
        strategy=config.get("Strategy") or (leaderboard or {}).get("strategy"),
        objective_metric=objective.get("MetricName") or leader_objective.get("metric", "objective"),
        objective_type=objective_type,
        trials=an.sort_trials(trials, objective_type),
        trials_source=source,
        best_name=best.get("TrainingJobName") or (leaderboard or {}).get("best_training_job_name"),
        best_objective=(best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value"),
        best_hyperparameters=an.decode_hyperparameters(best.get("TunedHyperParameters")),
        counters=job.get("TrainingJobStatusCounters", {}),
        max_jobs=config.get("ResourceLimits", {}).get("MaxNumberOfTrainingJobs"),
        learning_rate=lr_name,
        learning_rate_log=lr_log,
        learning_rate_range=lr_range,
    )


def list_tuning_trials(sagemaker: Any, name: str) -> list[dict[str, Any]]:
    paginator = sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
    summaries: list[dict[str, Any]] = []
    try:
        for page in paginator.paginate(HyperParameterTuningJobName=name, MaxResults=100):
            summaries.extend(page["TrainingJobSummaries"])
    except ClientError as exc:
        log.warning("ListTrainingJobsForHyperParameterTuningJob %s: %s", name, exc)
    return summaries


def _trial_from_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["training_job_name"],
        "status": row.get("status"),
        "objective": row.get("objective"),
        "hyperparameters": row.get("hyperparameters", {}),
        "failure_reason": row.get("failure_reason"),
        "started": row.get("started"),
        "ended": row.get("ended"),
    }


def _trial_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
    return {
        "name": summary["TrainingJobName"],
        "status": summary.get("TrainingJobStatus"),
        "objective": float(metric["Value"]) if metric else None,
        "hyperparameters": an.decode_hyperparameters(summary.get("TunedHyperParameters")),
        "failure_reason": summary.get("FailureReason"),
        "started": str(summary.get("TrainingStartTime") or summary.get("CreationTime") or ""),
        "ended": str(summary.get("TrainingEndTime") or ""),
    }


def _learning_rate(
    ranges: dict[str, Any], trials: list[dict[str, Any]]
) -> tuple[str | None, bool, tuple[float, float] | None]:
    """The tuned learning rate's name, whether its range is log-scaled, and the range."""
    for item in ranges.get("ContinuousParameterRanges", []):
        if item["Name"] in an.LEARNING_RATE_NAMES:
            low, high = an.as_float(item.get("MinValue")), an.as_float(item.get("MaxValue"))
            scale = item.get("ScalingType") in ("Logarithmic", "Auto", None)
            return item["Name"], scale, (low, high) if low and high else None
    merged: dict[str, Any] = {}
    for trial in trials:
        merged.update(trial["hyperparameters"])
    return an.learning_rate_name(merged), True, None


# -- retrain --------------------------------------------------------------------------------------
def collect_retrain(target: Target, name: str, notes: list[str]) -> Retrain | None:
    sagemaker = target.client("sagemaker")
    try:
        job = sagemaker.describe_training_job(TrainingJobName=name)
    except ClientError as exc:
        notes.append(f"DescribeTrainingJob {name} failed: {exc}")
        return None
    hyperparameters = {
        k: v
        for k, v in an.decode_hyperparameters(job.get("HyperParameters")).items()
        if not k.startswith("sagemaker_") and not k.startswith("_")
    }
    outputs, explanations = job_outputs(target, job, notes)
    confusion = confusion_from_record(outputs.get(CONFUSION_FILE))
    if confusion is None:
        notes.append(
            f"No confusion matrix: {name} recorded no {CONFUSION_FILE} "
            "(train.py writes it in its test pass, at the end)."
        )
    curves = training_curves(target, job, outputs.get("history.json"), notes)
    return Retrain(
        job_name=name,
        status=job.get("TrainingJobStatus", "?"),
        secondary_status=job.get("SecondaryStatus"),
        failure_reason=job.get("FailureReason"),
        instance_type=job.get("ResourceConfig", {}).get("InstanceType"),
        hyperparameters=hyperparameters,
        final_metrics={
            m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList", [])
        },
        rule_statuses=rule_statuses(job, outputs.get("rule_statuses.json")),
        curves=curves,
        profile=system_profile(target, job, notes),
        confusion=confusion,
        explanations=explanations,
        billable_s=job.get("BillableTimeInSeconds") or job.get("TrainingTimeInSeconds"),
    )


def job_outputs(
    target: Target, job: dict[str, Any], notes: list[str]
) -> tuple[dict[str, Any], Explanations | None]:
    """history.json, confusion.json and rule_statuses.json from the finished job's
    output.tar.gz (what train.py recorded, docs/contracts.md), and its Grad-CAM explanations."""
    model_uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model_uri or job.get("TrainingJobStatus") != "Completed":
        return {}, None
    try:
        archive = read_output_archive(target.client("s3"), model_uri)
        return output_files(archive, OUTPUT_FILES), explanations_from_archive(archive)
    except (ClientError, ValueError, OSError, tarfile.TarError) as exc:
        notes.append(f"Could not read the output.tar.gz next to {model_uri}: {exc}")
        return {}, None


def rule_statuses(job: dict[str, Any], from_output: Any) -> list[dict[str, str]]:
    """Every rule evaluation of the job, in DescribeTrainingJob's words: its
    Debug/ProfilerRuleEvaluationStatuses and the project's rules' rule_statuses.json (the same
    shape, docs/contracts.md), each row naming its source as gate.json does."""
    items = [
        (item, source)
        for key, source in (
            ("DebugRuleEvaluationStatuses", "debugger"),
            ("ProfilerRuleEvaluationStatuses", "profiler"),
        )
        for item in job.get(key, [])
    ]
    if isinstance(from_output, list):
        items += [(item, "job") for item in from_output if isinstance(item, dict)]
    return [
        {
            "rule": item.get("RuleConfigurationName", "?"),
            "status": item.get("RuleEvaluationStatus", "?"),
            "details": item.get("StatusDetails", ""),
            "source": source,
        }
        for item, source in items
    ]


def training_curves(
    target: Target, job: dict[str, Any], history: Any, notes: list[str]
) -> an.Curves | None:
    """history.json from output.tar.gz (exact, with epoch times); else the log's metric lines
    (also there while the job still runs)."""
    if isinstance(history, dict) and history.get("epochs"):
        return an.curves_from_history(history, "history.json in the job's output.tar.gz")
    lines = training_log_lines(target.client("logs"), job["TrainingJobName"])
    curves = an.curves_from_log(lines, f"metric lines in {TRAINING_LOG_GROUP}")
    if not curves.epochs:
        notes.append(f"No per-epoch metrics for {job['TrainingJobName']} yet.")
        return None
    return curves


def training_log_lines(logs: Any, job_name: str, limit: int = MAX_LOG_EVENTS) -> list[str]:
    """Every line of the job's log streams (`<job>/algo-1-...`), oldest first, bounded."""
    lines: list[str] = []
    try:
        streams = logs.describe_log_streams(
            logGroupName=TRAINING_LOG_GROUP, logStreamNamePrefix=f"{job_name}/"
        )["logStreams"]
        for stream in streams:
            token = None
            while len(lines) < limit:
                kwargs: dict[str, Any] = {
                    "logGroupName": TRAINING_LOG_GROUP,
                    "logStreamName": stream["logStreamName"],
                    "startFromHead": True,
                }
                if token:
                    kwargs["nextToken"] = token
                page = logs.get_log_events(**kwargs)
                lines.extend(event["message"] for event in page["events"])
                if not page["events"] or page.get("nextForwardToken") == token:
                    break
                token = page.get("nextForwardToken")
    except (ClientError, BotoCoreError) as exc:
        log.warning("reading the log of %s: %s", job_name, exc)
    return lines[:limit]


# -- endpoint -------------------------------------------------------------------------------------
def collect_endpoint(target: Target, deployment: dict[str, Any], notes: list[str]) -> Endpoint:
    sagemaker = target.client("sagemaker")
    name = deployment["endpoint_name"]
    run_config = deployment.get("endpoint_config_name")
    try:
        described = sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        notes.append(f"DescribeEndpoint {name} failed: {exc}")
        described = {}
    config_name = described.get("EndpointConfigName")
    variant = _first_variant(sagemaker, run_config, notes)
    model_data = _model_data(sagemaker, variant.get("ModelName"))
    endpoint = Endpoint(
        name=name,
        status=described.get("EndpointStatus"),
        config_name=config_name,
        run_config_name=run_config,
        model_name=variant.get("ModelName") or deployment.get("model_name"),
        model_data=model_data,
        instance_type=variant.get("InstanceType"),
        serves_this_run=bool(config_name) and config_name == run_config,
        failure_reason=described.get("FailureReason"),
    )
    if not endpoint.serves_this_run:
        notes.append(f"Endpoint {name} now serves {config_name or 'nothing'}, not {run_config}.")
    return endpoint


def _first_variant(sagemaker: Any, config_name: str | None, notes: list[str]) -> dict[str, Any]:
    if not config_name:
        return {}
    try:
        config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
    except ClientError as exc:
        notes.append(f"DescribeEndpointConfig {config_name} failed: {exc}")
        return {}
    variants = config.get("ProductionVariants") or [{}]
    return variants[0]


def _model_data(sagemaker: Any, model_name: str | None) -> str | None:
    """DescribeModel is not among the calls the local cloud implements: best effort."""
    if not model_name:
        return None
    try:
        model = sagemaker.describe_model(ModelName=model_name)
    except (ClientError, BotoCoreError):
        return None
    return (model.get("PrimaryContainer") or {}).get("ModelDataUrl")
