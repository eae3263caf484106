"""The state of one training job: what DescribeTrainingJob answers, and how it changes.

The runner (training.py) moves a job through its statuses; this module only keeps them, with
the locking and the done callbacks that tuning jobs and the state store rely on. The request's
hyperparameters are decoded here once (pipeline_common.jobs.decode, the SageMaker Python SDK's
JSON convention), and every later reader uses ``TrainingJob.hyperparameters``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline_common.jobs import decode

from mlops.local.sagemaker.metrics import MetricParser

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
DEFAULT_MAX_RUNTIME_S = 86400
STATUS_MESSAGES = {
    "Starting": "Preparing the instances for training",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Job exceeded maximum allowed time limit",
}
# Request members that DescribeTrainingJob echoes back unchanged.
ECHOED_MEMBERS = (
    "HyperParameters",
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "VpcConfig",
    "StoppingCondition",
    "CheckpointConfig",
    "DebugHookConfig",
    "ExperimentConfig",
    "DebugRuleConfigurations",
    "TensorBoardOutputConfig",
    "ProfilerConfig",
    "ProfilerRuleConfigurations",
    "Environment",
    "RetryStrategy",
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class JobFailure(Exception):
    """Ends a job as Failed with this FailureReason (AWS prefixes: ClientError, AlgorithmError)."""


class TrainingJob:
    """State of one training job. ``describe()`` is its DescribeTrainingJob answer."""

    def __init__(
        self,
        request: dict[str, Any],
        arn: str,
        job_dir: Path,
        tuning_job_arn: str | None = None,
        tuned_hyperparameters: dict[str, str] | None = None,
        debugger_available: bool = False,
    ) -> None:
        self.request = request
        # Without SageMaker Debugger in the account (the default) the Debugger members of the
        # request are stored and echoed, but nothing acts on them: no hook config file, no
        # Profiler output, no rule evaluations in DescribeTrainingJob.
        self.debugger_available = debugger_available
        self.name: str = request["TrainingJobName"]
        self.arn = arn
        self.job_dir = job_dir
        self.tuning_job_arn = tuning_job_arn
        self.tuned_hyperparameters = tuned_hyperparameters or {}
        # Decoded once, as sagemaker-training-toolkit does (JSON, else the raw string).
        self.hyperparameters: dict[str, Any] = {
            key: decode(value) for key, value in (request.get("HyperParameters") or {}).items()
        }
        self.lock = threading.RLock()
        self.creation_time = now()
        self.last_modified_time = self.creation_time
        self.status = "InProgress"
        self.secondary_status = "Starting"
        self.transitions: list[dict[str, Any]] = []
        self.training_start_time: dt.datetime | None = None
        self.training_end_time: dt.datetime | None = None
        self.failure_reason: str | None = None
        self.model_artifacts_uri = self._model_artifacts_uri()
        self.metrics = MetricParser(self.metric_definitions())
        self.debug_rule_statuses: list[dict[str, Any]] = []
        self.profiler_rule_statuses: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.stop_reason = "Stopped"  # or "MaxRuntimeExceeded"; the final SecondaryStatus
        self.stop_message = STATUS_MESSAGES["Stopped"]
        self.done = threading.Event()
        self._done_callbacks: list[Callable[[TrainingJob], None]] = []
        self.set_secondary_status("Starting", "Waiting for a free local training slot")
        self._init_rule_statuses()

    # --- request views ------------------------------------------------------------------------

    def metric_definitions(self) -> list[dict[str, str]]:
        return list(self.request.get("AlgorithmSpecification", {}).get("MetricDefinitions", []))

    def user_hyperparameters(self) -> dict[str, Any]:
        """The script's own hyperparameters (the framework's sagemaker_* ones left out)."""
        return {k: v for k, v in self.hyperparameters.items() if not k.startswith("sagemaker_")}

    def channels(self) -> list[str]:
        return [c["ChannelName"] for c in self.request.get("InputDataConfig", [])]

    def max_runtime_s(self) -> int:
        condition = self.request.get("StoppingCondition") or {}
        return int(condition.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_S))

    def _model_artifacts_uri(self) -> str:
        output = self.request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        return f"{output}/{self.name}/output/model.tar.gz"

    def output_uri(self, file_name: str) -> str:
        return self.model_artifacts_uri.rsplit("/", 1)[0] + "/" + file_name

    def _rule_job_arn(self, configuration_name: str) -> str:
        suffix = re.sub(r"[^a-zA-Z0-9-]", "-", configuration_name)[:20]
        prefix = self.arn.split(":training-job/")[0]
        digest = hashlib.sha1(f"{self.arn}/{configuration_name}".encode()).hexdigest()[:8]
        return f"{prefix}:processing-job/{self.name[:30]}-{suffix}-{digest}"

    def _init_rule_statuses(self) -> None:
        """Rules show InProgress from job start, as on AWS where they run beside the job."""
        if not self.debugger_available:
            return
        for key, target in (
            ("DebugRuleConfigurations", self.debug_rule_statuses),
            ("ProfilerRuleConfigurations", self.profiler_rule_statuses),
        ):
            for configuration in self.request.get(key, []):
                name = configuration["RuleConfigurationName"]
                target.append(
                    {
                        "RuleConfigurationName": name,
                        "RuleEvaluationJobArn": self._rule_job_arn(name).lower(),
                        "RuleEvaluationStatus": "InProgress",
                        "LastModifiedTime": self.creation_time,
                    }
                )

    # --- state changes ------------------------------------------------------------------------

    def set_secondary_status(self, status: str, message: str | None = None) -> None:
        with self.lock:
            moment = now()
            if self.transitions and "EndTime" not in self.transitions[-1]:
                self.transitions[-1]["EndTime"] = moment
            self.transitions.append(
                {
                    "Status": status,
                    "StartTime": moment,
                    "StatusMessage": message or STATUS_MESSAGES.get(status, status),
                }
            )
            self.secondary_status = status
            self.last_modified_time = moment

    def update_status_message(self, message: str) -> None:
        with self.lock:
            self.transitions[-1]["StatusMessage"] = message
            self.last_modified_time = now()

    def set_rule_status(self, kind: str, name: str, status: str, details: str = "") -> None:
        statuses = self.debug_rule_statuses if kind == "debug" else self.profiler_rule_statuses
        with self.lock:
            for item in statuses:
                if item["RuleConfigurationName"] == name:
                    item["RuleEvaluationStatus"] = status
                    item["LastModifiedTime"] = now()
                    if details:
                        item["StatusDetails"] = details[:1024]
                    else:
                        item.pop("StatusDetails", None)
            self.last_modified_time = now()

    def finish(self, status: str, secondary: str, message: str, reason: str | None = None) -> None:
        """Move to a terminal status; the final transition gets its EndTime at once, as AWS."""
        with self.lock:
            self.set_secondary_status(secondary, message)
            moment = self.transitions[-1]["StartTime"]
            self.transitions[-1]["EndTime"] = moment
            self.status = status
            self.failure_reason = reason[:1024] if reason else None
            if self.training_start_time is None:
                self.training_start_time = moment
            self.training_end_time = moment
            self.last_modified_time = moment
        logger.info(
            "training job %s ended %s%s", self.name, status, f": {reason}" if reason else ""
        )

    def request_stop(self, reason: str = "Stopped", message: str | None = None) -> None:
        """Ask the job to stop (user, tuning job, early stopping or MaxRuntimeInSeconds)."""
        with self.lock:
            if self.status in TERMINAL_STATUSES or self.stop_event.is_set():
                return
            self.stop_reason = reason
            self.stop_message = message or STATUS_MESSAGES.get(reason, reason)
            self.stop_event.set()

    def add_done_callback(self, callback: Callable[[TrainingJob], None]) -> None:
        with self.lock:
            if not self.done.is_set():
                self._done_callbacks.append(callback)
                return
        callback(self)

    def mark_done(self) -> None:
        with self.lock:
            self.done.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("done callback of training job %s failed", self.name)

    # --- answers ------------------------------------------------------------------------------

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def training_seconds(self) -> int | None:
        if self.training_start_time is None or self.training_end_time is None:
            return None
        return max(int((self.training_end_time - self.training_start_time).total_seconds()), 1)

    def describe(self) -> dict[str, Any]:
        with self.lock:
            response: dict[str, Any] = {
                "TrainingJobName": self.name,
                "TrainingJobArn": self.arn,
                "TuningJobArn": self.tuning_job_arn,
                "ModelArtifacts": {"S3ModelArtifacts": self.model_artifacts_uri},
                "TrainingJobStatus": self.status,
                "SecondaryStatus": self.secondary_status,
                "FailureReason": self.failure_reason,
                "CreationTime": self.creation_time,
                "TrainingStartTime": self.training_start_time,
                "TrainingEndTime": self.training_end_time,
                "LastModifiedTime": self.last_modified_time,
                "SecondaryStatusTransitions": [dict(t) for t in self.transitions],
                "FinalMetricDataList": self.metrics.final_metric_data(),
                "EnableNetworkIsolation": self.request.get("EnableNetworkIsolation", False),
                "EnableInterContainerTrafficEncryption": self.request.get(
                    "EnableInterContainerTrafficEncryption", False
                ),
                "EnableManagedSpotTraining": self.request.get("EnableManagedSpotTraining", False),
                "TrainingTimeInSeconds": self.training_seconds(),
                "BillableTimeInSeconds": self.training_seconds(),
                "ProfilingStatus": self._profiling_status(),
            }
            for member in ECHOED_MEMBERS:
                if member in self.request:
                    response[member] = self.request[member]
            if self.debug_rule_statuses:
                response["DebugRuleEvaluationStatuses"] = [
                    dict(s) for s in self.debug_rule_statuses
                ]
            if self.profiler_rule_statuses:
                response["ProfilerRuleEvaluationStatuses"] = [
                    dict(s) for s in self.profiler_rule_statuses
                ]
            return {key: value for key, value in response.items() if value is not None}

    def _profiling_status(self) -> str:
        profiler = self.request.get("ProfilerConfig")
        if not self.debugger_available:
            return "Disabled"
        return "Enabled" if profiler and not profiler.get("DisableProfiler") else "Disabled"
