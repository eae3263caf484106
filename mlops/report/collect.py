"""Everything one report shows, read from the services that hold it (local cloud or AWS alike).

Sources, in order of preference: the execution history (states, errors), the run records the
pipeline wrote (`runs/<execution>/`), then SageMaker's describe calls (the tuning job's
BestTrainingJob, the retrain's rule statuses and metrics, the endpoint), the retrain's
`output.tar.gz` (history.json) or its log stream (metric lines), and for the system profile
the local runtime's resource_usage.json or the ProfilerConfig's S3 output on AWS. What a run
never produced (a failed run stops early) becomes a note in the report, never an error.
"""

from __future__ import annotations

import json
import logging
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlops import executions as ex
from mlops.report import analysis as an
from mlops.report.records import (
    output_archive_uri,
    parse_s3_uri,
    read_object,
    read_output_files,
    read_records,
    tar_member,
)
from mlops.target import Target

log = logging.getLogger(__name__)

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
MAX_CONFUSION_IMAGES = 500
MAX_LOG_EVENTS = 20_000
MAX_PROFILER_FILES = 200
# train.py's own profile (training/profiler.py), inside the job's output.tar.gz.
SYSTEM_METRICS_FILE = "system-metrics.json"
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


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
class Profile:
    source: str
    times_s: list[float] = field(default_factory=list)
    # 100 = one core busy (local samples, cpu_count set); the Profiler's is a mean over cores
    cpu_percent: list[float] = field(default_factory=list)
    memory_mib: list[float] = field(default_factory=list)
    memory_percent: list[float] = field(default_factory=list)  # the Profiler's: % of the host
    gpu_percent: list[float] = field(default_factory=list)
    cpu_count: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)


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


@dataclass
class Confusion:
    labels: list[str]
    matrix: list[list[int]]
    accuracy: float | None
    images: int
    available: int
    errors: list[str]


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
    confusion: Confusion | None


@dataclass
class RunData:
    """What the report shows; `notes` says what is missing and why."""

    view: ex.ExecutionView
    target_name: str
    generated: datetime
    timeline: list[an.TimelineRow]
    records: dict[str, dict[str, Any] | None]
    tuning: Tuning | None = None
    retrain: Retrain | None = None
    endpoint: Endpoint | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def gate(self) -> dict[str, Any] | None:
        return self.records.get("gate.json")


# -- execution ------------------------------------------------------------------------------------
def step_output(view: ex.ExecutionView, state: str, *path: str) -> Any:
    """A value from the output of the last visit of `state` (None when it never finished)."""
    value: Any = next(
        (s.output for s in reversed(view.steps) if s.name == state and s.output), None
    )
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def collect(target: Target, view: ex.ExecutionView, local_root: Path | None = None) -> RunData:
    """Read everything about one execution; `local_root` is the local cloud's state folder."""
    now = datetime.now(UTC)
    data = RunData(
        view=view,
        target_name=target.name,
        generated=now,
        timeline=an.timeline(view.steps, view.started, view.stopped or now),
        records=read_records(target, view.name),
    )
    sagemaker = target.client("sagemaker")
    tuning_name = (data.records.get("leaderboard.json") or {}).get("tuning_job_name") or (
        step_output(view, "StartTuning", "tuning", "job_name")
    )
    if tuning_name:
        data.tuning = collect_tuning(sagemaker, tuning_name, data.records.get("leaderboard.json"))
    else:
        data.notes.append("No tuning job: the execution ended before StartTuning.")
    retrain_name = (data.gate or {}).get("training_job_name") or step_output(
        view, "StartProfiledTraining", "training", "job_name"
    )
    if retrain_name:
        data.retrain = collect_retrain(target, retrain_name, local_root, data.notes)
    else:
        data.notes.append("No profiled retrain: the execution ended before it started.")
    deployment = data.records.get("deployment.json")
    if deployment:
        data.endpoint = collect_endpoint(target, deployment, data.records, data.notes)
    else:
        data.notes.append("No deployment: this run did not deploy a model.")
    return data


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
def collect_retrain(
    target: Target, name: str, local_root: Path | None, notes: list[str]
) -> Retrain | None:
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
    outputs = job_outputs(target, job, notes)
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
        profile=system_profile(target, job, local_root, curves, notes),
        billable_s=job.get("BillableTimeInSeconds") or job.get("TrainingTimeInSeconds"),
    )


def job_outputs(target: Target, job: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """history.json and rule_statuses.json from the finished job's output.tar.gz."""
    model_uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model_uri or job.get("TrainingJobStatus") != "Completed":
        return {}
    try:
        return read_output_files(
            target.client("s3"), model_uri, ("history.json", "rule_statuses.json")
        )
    except (ClientError, ValueError, OSError) as exc:
        notes.append(f"Could not read the output.tar.gz next to {model_uri}: {exc}")
        return {}


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


# -- system profile -------------------------------------------------------------------------------
def system_profile(
    target: Target,
    job: dict[str, Any],
    local_root: Path | None,
    curves: an.Curves | None,
    notes: list[str],
) -> Profile | None:
    name = job["TrainingJobName"]
    if local_root is not None:
        path = local_root / "sagemaker" / "jobs" / name / "resource_usage.json"
        if path.is_file():
            return profile_from_resource_usage(json.loads(path.read_text()), str(path))
        notes.append(f"No system profile: {path} does not exist (the job has not ended yet).")
        return None
    profiler_path = job.get("ProfilerConfig", {}).get("S3OutputPath")
    if profiler_path:
        prefix = f"{profiler_path.rstrip('/')}/{name}/profiler-output/system/"
        profile = profile_from_profiler_output(target.client("s3"), prefix)
        if profile is not None:
            return profile
    # Without SageMaker's Profiler (closed with Debugger): the samples train.py took itself,
    # in the Profiler's format, inside the job's output.tar.gz.
    profile = profile_from_job_output(target.client("s3"), job)
    if profile is None:
        notes.append(
            f"No system profile: {name} has no Profiler output and no {SYSTEM_METRICS_FILE} "
            "in its output.tar.gz."
        )
    return profile


def profile_from_job_output(s3: Any, job: dict[str, Any]) -> Profile | None:
    """profiler/system-metrics.json that train.py wrote into SM_OUTPUT_DATA_DIR."""
    model_uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model_uri:
        return None
    uri = output_archive_uri(model_uri)
    try:
        archive = read_object(s3, *parse_s3_uri(uri))
        raw = tar_member(archive, SYSTEM_METRICS_FILE) if archive is not None else None
    except (ClientError, BotoCoreError, OSError, tarfile.TarError) as exc:
        log.warning("reading %s: %s", uri, exc)
        return None
    if raw is None:
        return None
    return profile_from_system_metrics(
        raw.decode(errors="replace").splitlines(), f"{uri} ({SYSTEM_METRICS_FILE})", files=1
    )


def profile_from_resource_usage(usage: dict[str, Any], source: str) -> Profile:
    """The local runtime's samples: `{"samples": [{"t", "cpu_percent", "rss_bytes"}], ...}`."""
    samples = usage.get("samples", [])
    return Profile(
        source=source,
        times_s=[float(s["t"]) for s in samples],
        cpu_percent=[float(s["cpu_percent"]) for s in samples],
        memory_mib=[s["rss_bytes"] / 2**20 for s in samples],
        cpu_count=usage.get("cpu_count"),
        summary={
            "mean CPU %": usage.get("mean_cpu_percent"),
            "peak RSS MiB": round(usage.get("peak_rss_bytes", 0) / 2**20, 1),
            "sample interval s": usage.get("interval_s"),
        },
    )


def profile_from_profiler_output(s3: Any, prefix_uri: str) -> Profile | None:
    """SageMaker Profiler system metrics: JSON lines `{"Type", "Name", "Dimension", "Value",
    "Timestamp"}` under `<ProfilerConfig.S3OutputPath>/<job>/profiler-output/system/`.

    The local SageMaker writes its samples here in the same format (CPU, memory), which is how
    the pipeline's own report gets a profile locally. CPU is averaged over cores, GPU over
    devices, per timestamp rounded to the second.
    """
    bucket, prefix = parse_s3_uri(prefix_uri)
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(
            item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".json")
        )
    if not keys:
        return None
    lines = [
        line
        for key in sorted(keys)[:MAX_PROFILER_FILES]
        for line in (read_object(s3, bucket, key) or b"").decode().splitlines()
    ]
    return profile_from_system_metrics(lines, prefix_uri, min(len(keys), MAX_PROFILER_FILES))


def profile_from_system_metrics(lines: list[str], source: str, files: int) -> Profile | None:
    """Profiler system-metrics JSON lines -> a profile: CPU averaged over cores, GPU over
    devices, per timestamp rounded to the second."""
    series: dict[str, dict[int, list[float]]] = {"cpu": {}, "gpu": {}, "memory": {}}
    for line in lines:
        _add_profiler_sample(series, line)
    stamps = sorted(set().union(*(s.keys() for s in series.values())))
    if not stamps:
        return None

    def mean_at(kind: str, stamp: int) -> float:
        values = series[kind].get(stamp, [])
        return sum(values) / len(values) if values else float("nan")

    return Profile(
        source=source,
        times_s=[float(t - stamps[0]) for t in stamps],
        cpu_percent=[mean_at("cpu", t) for t in stamps],
        memory_mib=[],
        memory_percent=[mean_at("memory", t) for t in stamps] if series["memory"] else [],
        gpu_percent=[mean_at("gpu", t) for t in stamps] if series["gpu"] else [],
        summary={"files read": files, "memory": "used %"},
    )


def _add_profiler_sample(series: dict[str, dict[int, list[float]]], line: str) -> None:
    try:
        item = json.loads(line)
        kind = str(item.get("Type", "")).lower()
        dimension = str(item.get("Dimension", ""))
        stamp = int(float(item["Timestamp"]))
        value = float(item["Value"])
    except (ValueError, KeyError, TypeError):
        return
    if kind == "gpu" and "Memory" in dimension:
        return
    if kind in series:
        series[kind].setdefault(stamp, []).append(value)


# -- endpoint -------------------------------------------------------------------------------------
def collect_endpoint(
    target: Target,
    deployment: dict[str, Any],
    records: dict[str, dict[str, Any] | None],
    notes: list[str],
) -> Endpoint:
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
        confusion=None,
    )
    if endpoint.serves_this_run and endpoint.status == "InService":
        endpoint.confusion = confusion_on_test_split(target, name, records, notes)
    else:
        notes.append(
            f"No confusion matrix: endpoint {name} now serves {config_name or 'nothing'}, "
            f"not this run's {run_config}; the test accuracy above is the training job's."
        )
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


def list_test_images(
    target: Target, validation: dict[str, Any]
) -> tuple[list[str], list[tuple[str, int]]]:
    """(class folder names, [(key, class index)]) of the data set's test split."""
    dataset = validation.get("dataset", {})
    classes = sorted(validation.get("classes") or dataset.get("classes") or [])
    bucket = dataset.get("bucket") or target.data_bucket
    prefix = dataset.get("prefix") or f"datasets/{dataset.get('name')}/"
    index = {name: i for i, name in enumerate(classes)}
    found: list[tuple[str, int]] = []
    paginator = target.client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix.rstrip('/')}/test/"):
        for item in page.get("Contents", []):
            parts = PurePosixPath(item["Key"]).parts
            if len(parts) >= 2 and parts[-2] in index:
                found.append((item["Key"], index[parts[-2]]))
    return classes, sorted(found)


def confusion_on_test_split(
    target: Target,
    endpoint: str,
    records: dict[str, dict[str, Any] | None],
    notes: list[str],
    limit: int = MAX_CONFUSION_IMAGES,
) -> Confusion | None:
    """Invoke the endpoint on (at most `limit`) test images: the pipeline records no per-image
    predictions, and the endpoint serves exactly the model this run deployed."""
    validation = records.get("validation.json")
    if not validation:
        notes.append("No confusion matrix: validation.json is missing, so the classes are unknown.")
        return None
    classes, images = list_test_images(target, validation)
    if not classes or not images:
        notes.append("No confusion matrix: no test images found in the data bucket.")
        return None
    chosen = an.even_sample(images, limit)
    bucket = validation.get("dataset", {}).get("bucket") or target.data_bucket
    s3, runtime = target.client("s3"), target.client("sagemaker-runtime")

    def predict(item: tuple[str, int]) -> tuple[int, int] | str:
        key, true = item
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            answer = runtime.invoke_endpoint(
                EndpointName=endpoint,
                ContentType=CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), "image/png"),
                Accept="application/json",
                Body=body,
            )
            return true, int(json.loads(answer["Body"].read())["class_index"])
        except (ClientError, BotoCoreError, ValueError, KeyError) as exc:
            return f"{key}: {exc}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(predict, chosen))
    pairs = [r for r in results if isinstance(r, tuple)]
    matrix = an.confusion_matrix(pairs, len(classes))
    return Confusion(
        labels=[an.class_label(c) for c in classes],
        matrix=matrix,
        accuracy=an.accuracy_of(matrix),
        images=len(pairs),
        available=len(images),
        errors=[r for r in results if isinstance(r, str)][:5],
    )
