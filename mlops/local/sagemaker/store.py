"""Saving and restoring the local SageMaker's records (the state layer, apart from the runners).

A snapshot is plain data: for every training job, tuning job, model, endpoint config,
endpoint, model package group and model package, the request it was created with plus the
fields that changed since (status, times, transitions, metrics, rule statuses, trials, which
endpoint config an endpoint serves, a package's approval and metadata, the container a model
resolved from its package, the registry's client tokens). Version 1 snapshots (before the
Model Registry) still restore, with an empty registry. Restoring
rebuilds the same objects through their constructors and sets those fields, so describe/list
answer exactly as before the restart. Nothing is re-run:

- a training or tuning job that had not ended ends Failed (FailureReason says the local cloud
  stopped); the processes that ran it are gone;
- an endpoint that was serving (InService, or Updating: the update is rolled back as on AWS)
  comes back Creating with the endpoint config it served and its model server is started again
  (`respawn_endpoints`), so it serves the same model once InService; a Failed one stays Failed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mlops.local.sagemaker.endpoint_records import EndpointConfigRecord, ModelRecord
from mlops.local.sagemaker.endpoint_state import Endpoint
from mlops.local.sagemaker.models import SageMakerBackend
from mlops.local.sagemaker.registry import ModelPackage, ModelPackageGroup
from mlops.local.sagemaker.training_job import TERMINAL_STATUSES, TrainingJob, now
from mlops.local.sagemaker.tuning import TERMINAL_TUNING_STATUSES, Trial, TuningJob

logger = logging.getLogger(__name__)

SNAPSHOT_VERSION = 2
READABLE_VERSIONS = frozenset({1, 2})  # 1: before the Model Registry
STOPPED_REASON = (
    "The local cloud stopped (mlops down, a crash or a reboot) while this job ran; its process "
    "is gone. Start a new job (upload the data set again for a new pipeline run)."
)
TRAINING_FIELDS = (
    "creation_time",
    "last_modified_time",
    "status",
    "secondary_status",
    "transitions",
    "training_start_time",
    "training_end_time",
    "failure_reason",
    "debug_rule_statuses",
    "profiler_rule_statuses",
)
TUNING_FIELDS = (
    "status",
    "creation_time",
    "last_modified_time",
    "end_time",
    "failure_reason",
    "warm_start_trials",
)
ENDPOINT_FIELDS = ("status", "failure_reason", "creation_time", "last_modified_time", "history")
PACKAGE_FIELDS = (
    "creation_time",
    "last_modified_time",
    "approval_status",
    "approval_description",
    "customer_metadata",
)
SERVING = {"InService", "Updating", "Creating", "SystemUpdating"}


# -- snapshot --------------------------------------------------------------------------------------
def snapshot(backend: SageMakerBackend) -> dict[str, Any]:
    """Plain data of every record; taken under the backend's lock, each object under its own."""
    with backend.lock:
        training = list(backend.training_jobs.values())
        tuning = list(backend.tuning_jobs.values())
        models = list(backend.models.values())
        configs = list(backend.endpoint_configs.values())
        endpoints = list(backend.endpoints.values())
        tags = {arn: list(items) for arn, items in backend.tags.items()}
        groups = list(backend.registry.groups.values())
        packages = list(backend.registry.packages.values())
        tokens = dict(backend.registry.client_tokens)
    return {
        # No timestamp of its own: an unchanged backend gives the same bytes (no write).
        "version": SNAPSHOT_VERSION,
        "training_jobs": [_training_record(job) for job in training],
        "tuning_jobs": [_tuning_record(job) for job in tuning],
        "models": [_model_record(model) for model in models],
        "endpoint_configs": [_plain_record(config) for config in configs],
        "endpoints": [_endpoint_record(endpoint) for endpoint in endpoints],
        "tags": tags,
        "model_package_groups": [_plain_record(group) for group in groups],
        "model_packages": [_package_record(package) for package in packages],
        "model_package_client_tokens": tokens,
    }


def _training_record(job: TrainingJob) -> dict[str, Any]:
    with job.lock:
        return {
            "request": job.request,
            "arn": job.arn,
            "job_dir": str(job.job_dir),
            "tuning_job_arn": job.tuning_job_arn,
            "tuned": dict(job.tuned_hyperparameters),
            "metrics": job.metrics.points(),
            **{name: _copy(getattr(job, name)) for name in TRAINING_FIELDS},
        }


def _tuning_record(job: TuningJob) -> dict[str, Any]:
    with job.lock:
        return {
            "request": job.request,
            "arn": job.arn,
            "trials": [
                {
                    "index": trial.index,
                    "job": trial.job.name,
                    "tuned": dict(trial.tuned),
                    "pruned": trial.pruned,
                    "told": trial.told,
                    "objective": trial.objective,
                }
                for trial in job.trials
            ],
            **{name: _copy(getattr(job, name)) for name in TUNING_FIELDS},
        }


def _plain_record(record: ModelRecord | EndpointConfigRecord | ModelPackageGroup) -> dict[str, Any]:
    return {
        "name": record.name,
        "arn": record.arn,
        "request": record.request,
        "creation_time": record.creation_time,
    }


def _model_record(model: ModelRecord) -> dict[str, Any]:
    return {**_plain_record(model), "package_container": model.package_container}


def _package_record(package: ModelPackage) -> dict[str, Any]:
    return {
        "group": package.group,
        "version": package.version,
        "arn": package.arn,
        "request": package.request,
        **{name: _copy(getattr(package, name)) for name in PACKAGE_FIELDS},
    }


def _endpoint_record(endpoint: Endpoint) -> dict[str, Any]:
    with endpoint.lock:
        return {
            "name": endpoint.name,
            "arn": endpoint.arn,
            "request": endpoint.request,
            "config": endpoint.config.name,
            "pending_config": endpoint.pending.config.name if endpoint.pending else None,
            **{name: _copy(getattr(endpoint, name)) for name in ENDPOINT_FIELDS},
        }


def _copy(value: Any) -> Any:
    """Lists of dicts are mutated in place by the running objects: copy them one level deep."""
    if isinstance(value, list):
        return [dict(item) if isinstance(item, dict) else item for item in value]
    if isinstance(value, dict):
        return dict(value)
    return value


# -- restore ---------------------------------------------------------------------------------------
def restore(backend: SageMakerBackend, data: dict[str, Any]) -> list[Endpoint]:
    """Put a snapshot's records back into an empty backend; returns the endpoints to respawn."""
    if data.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"SageMaker snapshot version {data.get('version')} is not supported")
    with backend.lock:
        for record in data["training_jobs"]:
            job = _restore_training_job(backend, record)
            backend.training_jobs[job.name] = job
        for record in sorted(data["tuning_jobs"], key=lambda r: r["creation_time"]):
            job = _restore_tuning_job(backend, record)
            backend.tuning_jobs[job.name] = job
        for record in data["models"]:
            backend.models[record["name"]] = ModelRecord(
                record["name"],
                record["arn"],
                record["request"],
                record["creation_time"],
                package_container=record.get("package_container"),
            )
        for record in data["endpoint_configs"]:
            backend.endpoint_configs[record["name"]] = EndpointConfigRecord(
                record["name"], record["arn"], record["request"], record["creation_time"]
            )
        respawn = []
        for record in data["endpoints"]:
            endpoint = _restore_endpoint(backend, record)
            if endpoint is None:
                continue
            backend.endpoints[endpoint.name] = endpoint
            if endpoint.status == "Creating":
                respawn.append(endpoint)
        backend.tags.update({arn: list(items) for arn, items in data["tags"].items()})
        _restore_registry(backend, data)
    return respawn


def _restore_registry(backend: SageMakerBackend, data: dict[str, Any]) -> None:
    registry = backend.registry
    for record in data.get("model_package_groups", []):
        registry.groups[record["name"].lower()] = ModelPackageGroup(
            record["name"], record["arn"], record["request"], record["creation_time"]
        )
    for record in data.get("model_packages", []):
        package = ModelPackage(record["group"], record["version"], record["arn"], record["request"])
        for name in PACKAGE_FIELDS:
            setattr(package, name, record[name])
        registry.packages[package.arn] = package
    registry.client_tokens.update(data.get("model_package_client_tokens", {}))


def _restore_training_job(backend: SageMakerBackend, record: dict[str, Any]) -> TrainingJob:
    job = TrainingJob(
        record["request"],
        record["arn"],
        Path(record["job_dir"]),
        record["tuning_job_arn"],
        record["tuned"],
    )
    for name in TRAINING_FIELDS:
        setattr(job, name, record[name])
    job.metrics.load_points(record["metrics"])
    if job.status not in TERMINAL_STATUSES:
        job.finish("Failed", "Failed", "The local cloud stopped while the job ran", STOPPED_REASON)
    for kind, statuses in (
        ("debug", job.debug_rule_statuses),
        ("profiler", job.profiler_rule_statuses),
    ):
        for status in statuses:
            if status["RuleEvaluationStatus"] == "InProgress":
                job.set_rule_status(kind, status["RuleConfigurationName"], "Error", STOPPED_REASON)
    job.mark_done()
    return job


def _restore_tuning_job(backend: SageMakerBackend, record: dict[str, Any]) -> TuningJob:
    job = TuningJob(
        record["request"],
        record["arn"],
        backend.config,
        backend._launch_trial,
        backend.tuning_jobs.get,
    )
    for name in TUNING_FIELDS:
        setattr(job, name, record[name])
    for item in record["trials"]:
        trial_job = backend.training_jobs.get(item["job"])
        if trial_job is None:
            logger.warning("tuning job %s: trial %s is missing", job.name, item["job"])
            continue
        # The optuna study lived in memory; a finished search does not need it again.
        trial = Trial(item["index"], trial_job, None, item["tuned"], item["pruned"])  # type: ignore[arg-type]
        trial.told, trial.objective = item["told"], item["objective"]
        if not trial.told and trial_job.is_terminal:
            trial.told, trial.objective = True, None
        job.trials.append(trial)
    if job.status not in TERMINAL_TUNING_STATUSES:
        job.status = "Failed"
        job.failure_reason = STOPPED_REASON
        job.end_time = job.last_modified_time = now()
    job.stop_event.set()
    return job


def _restore_endpoint(backend: SageMakerBackend, record: dict[str, Any]) -> Endpoint | None:
    if record["status"] == "Deleting":
        return None
    config = backend.endpoint_configs.get(record["config"])
    if config is None:
        logger.warning("endpoint %s: its config %s is missing", record["name"], record["config"])
        return None
    endpoint = Endpoint(record["name"], record["arn"], config, record["request"])
    for name in ENDPOINT_FIELDS:
        setattr(endpoint, name, record[name])
    if endpoint.status in SERVING:
        if record["status"] == "Updating" and record.get("pending_config"):
            endpoint.failure_reason = (
                f"The update to endpoint config {record['pending_config']} was interrupted when "
                f"the local cloud stopped and was rolled back; the endpoint serves {config.name}."
            )
        else:
            endpoint.failure_reason = None
        endpoint.status = "Creating"
    return endpoint


def respawn_endpoints(backend: SageMakerBackend, endpoints: list[Endpoint]) -> None:
    """Start the model servers of restored endpoints (in the background, as CreateEndpoint)."""
    for endpoint in endpoints:
        logger.info("restarting endpoint %s with %s", endpoint.name, endpoint.config.name)
        backend.endpoint_manager.create(endpoint)


def wait_in_service(endpoints: list[Endpoint], timeout_s: float) -> dict[str, str]:
    """Wait until each endpoint leaves Creating; returns name -> status."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(endpoint.status != "Creating" for endpoint in endpoints):
            break
        time.sleep(0.2)
    return {endpoint.name: endpoint.status for endpoint in endpoints}


__all__ = ["respawn_endpoints", "restore", "snapshot", "wait_in_service"]
