"""Training jobs run as local processes under SageMaker's training contract.

A job directory mirrors the container's /opt/ml tree (input/data/<channel>, input/config,
model, output/data, output/tensors, checkpoints, code). The script of the framework-container
convention (hyperparameters ``sagemaker_program`` and ``sagemaker_submit_directory``) runs with
the job's hyperparameters as ``--name value`` arguments and the SM_* environment that
sagemaker-training-toolkit sets; its output goes to CloudWatch Logs and a local file, metric
lines are parsed live, and the model/output directories are uploaded as tarballs at the end.

A fixed pool of workers takes queued jobs, so at most ``max_concurrent_jobs`` train at once
whoever created them (users, tuning jobs); a queued job shows InProgress/Starting.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlops.local.faults import Faults
from mlops.local.paths import PathEscapeError, contained
from mlops.local.sagemaker import protocol
from mlops.local.sagemaker.aws import (
    AwsClients,
    LogShipper,
    S3UriError,
    UnsafeKeyError,
    aws_env_for_children,
    extract_tarball,
    make_tarball,
)
from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.metrics import MetricParser
from mlops.local.sagemaker.processes import (
    ManagedProcess,
    ResourceMonitor,
    profiler_system_metrics,
    total_memory_bytes,
)
from mlops.local.sagemaker.rules import (
    RuleOutcome,
    evaluate_debug_rules,
    profiler_rule_outcome,
    rule_to_invoke,
)

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
HOST = "algo-1"
# SAGEMAKER_TRAINING_MODULE of the PyTorch training image (Dockerfile: ENV ...): the toolkit
# hands the job to the PyTorch container's entry point, which runs the user script.
TOOLKIT_FRAMEWORK_MODULE = "sagemaker_pytorch_container.training:main"
# The image's own ENV lines (deep-learning-containers, pytorch/training/docker/2.6/py3/
# Dockerfile.cpu), apart from paths: unbuffered output is what makes metric lines live.
IMAGE_ENVIRONMENT = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "UTF-8",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DLC_CONTAINER_TYPE": "training",
    "SAGEMAKER_TRAINING_MODULE": TOOLKIT_FRAMEWORK_MODULE,
}
DEFAULT_MAX_RUNTIME_S = 86400
SMDEBUG_END_MARKER = "training_job_end.ts"
STRAGGLER_GRACE_S = 2.0  # how long children of an exited script may hold its output open
ERROR_LINE = re.compile(r"^\s*([\w.]*(Error|Exception|Interrupt)\b.*|.*\bError:.*)$")
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


# --- the runner -------------------------------------------------------------------------------


class TrainingRunner:
    """A queue of training jobs and ``max_concurrent_jobs`` workers that run them."""

    def __init__(self, config: SageMakerConfig, clients: AwsClients, faults: Faults) -> None:
        self.config = config
        self.clients = clients
        self.faults = faults
        self._queue: queue.Queue[TrainingJob | None] = queue.Queue()
        self._shutting_down = threading.Event()
        self._active: dict[str, TrainingJob] = {}
        self._active_lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._work, name=f"training-worker-{i}", daemon=True)
            for i in range(config.max_concurrent_jobs)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, job: TrainingJob) -> None:
        if self._shutting_down.is_set():
            job.finish("Stopped", "Stopped", "Stopped because the local SageMaker shut down")
            job.mark_done()
            return
        self._queue.put(job)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down.is_set()

    def running_count(self) -> int:
        with self._active_lock:
            return len(self._active)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.stop_event.is_set() or self._shutting_down.is_set():
                job.finish("Stopped", "Stopped", job.stop_message)
                job.mark_done()
                continue
            with self._active_lock:
                self._active[job.name] = job
            if self.shutting_down:  # shutdown() may have listed the active jobs just before
                job.request_stop("Stopped", "Stopped because the local SageMaker shut down")
            try:
                TrainingExecution(job, self).run()
            finally:
                with self._active_lock:
                    self._active.pop(job.name, None)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop queued and running jobs, then the workers (each job ends Stopped)."""
        self._shutting_down.set()
        with self._active_lock:
            active = list(self._active.values())
        for job in active:
            job.request_stop("Stopped", "Stopped because the local SageMaker shut down")
        for _ in self._workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.1))


class TrainingExecution:
    """Runs one job through Starting, Downloading, Training, Uploading and rule evaluation."""

    def __init__(self, job: TrainingJob, runner: TrainingRunner) -> None:
        self.job = job
        self.runner = runner
        self.config = runner.config
        self.clients = runner.clients  # the service's own (logs)
        # The job's S3 reads and writes are the execution role's, as on AWS.
        self.data = runner.clients.for_role(job.request.get("RoleArn"))
        root = job.job_dir
        self.dirs = {
            "input": root / "input",
            "data": root / "input" / "data",
            "config": root / "input" / "config",
            "model": root / "model",
            "output": root / "output",
            "output_data": root / "output" / "data",
            "code": root / "code",
            "checkpoints": root / "checkpoints",
            "tensors": root / "output" / "tensors",
        }
        self.logs: LogShipper | None = None
        self.monitor: ResourceMonitor | None = None
        self.usage: dict[str, Any] | None = None  # what the monitor measured, once it stopped
        self.process: ManagedProcess | None = None
        self.tail: list[str] = []
        self.output_done = threading.Event()

    # --- the steps ----------------------------------------------------------------------------

    def run(self) -> None:
        job = self.job
        try:
            self._start()
            self._download()
            exit_code = self._train()
            self._conclude(exit_code)
        except JobFailure as failure:
            self._end_failed(str(failure))
        except Exception as error:
            logger.exception("training job %s broke inside the local SageMaker", job.name)
            self._end_failed(f"InternalServerError: {type(error).__name__}: {error}")
        finally:
            if self.logs is not None:
                self.logs.close()
            self._write_description()
            job.mark_done()
        self._evaluate_rules()

    def _start(self) -> None:
        job = self.job
        job.update_status_message(STATUS_MESSAGES["Starting"])
        with job.lock:
            job.training_start_time = now()
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        stream = f"{job.name}/{HOST}-{int(time.time())}"
        self.logs = LogShipper(
            self.clients,
            "/aws/sagemaker/TrainingJobs",
            stream,
            job.job_dir / "logs" / "training.log",
            self.config.log_flush_interval_s,
        )
        if self.runner.faults.hits("training_fail", job.name):
            raise JobFailure(
                "AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "
                '"injected fault training_fail"\nCommand "(not run)", exit code: 1'
            )

    def _download(self) -> None:
        job = self.job
        job.set_secondary_status("Downloading")
        self._write_input_config()
        for channel in job.request.get("InputDataConfig", []):
            self._download_channel(channel)
        self._fetch_source()
        self._restore_checkpoints()

    def _train(self) -> int:
        job = self.job
        if job.stop_event.is_set():
            return -15  # stopped while downloading: the script never starts
        job.set_secondary_status("Training")
        argv = self._command()
        if self.config.image_python:
            self.logs.write(f"Starting the training toolkit: {' '.join(argv)}")
        else:
            self.logs.write(
                "No image environment (.venv-image, `make image-venv`): running the script "
                "without the sagemaker-training toolkit"
            )
            self.logs.write(f"Invoking script with the following command: {' '.join(argv)}")
        self.process = ManagedProcess(argv, self.dirs["code"], self._environment(), job.name)
        self.monitor = ResourceMonitor(
            self.process.pgid,
            job.job_dir / "resource_usage.json",
            self.config.resource_sample_interval_s,
        ).start()
        watchdog = threading.Thread(target=self._watch, name=f"watch-{job.name}", daemon=True)
        watchdog.start()
        for line in self.process.lines():
            self._on_line(line)
        self.output_done.set()
        exit_code = self.process.wait()
        watchdog.join(self.config.stop_grace_s + 5)
        self.usage = self.monitor.stop()
        return exit_code

    def _conclude(self, exit_code: int) -> None:
        job = self.job
        self._mark_tensors_complete()
        if job.stop_event.is_set():
            self._upload_artifacts(only_if_model_saved=True)
            job.finish("Stopped", job.stop_reason, job.stop_message)
            return
        if exit_code != 0:
            self._upload_output_data()
            raise JobFailure(self._algorithm_error(exit_code))
        job.set_secondary_status("Uploading")
        self._upload_artifacts()
        job.finish("Completed", "Completed", STATUS_MESSAGES["Completed"])

    def _mark_tensors_complete(self) -> None:
        """smdebug does not write its end-of-training marker when TRAINING_JOB_NAME is set
        (SageMaker tells its rule jobs instead); write it so local rules see a finished trial."""
        tensor_dir = self._tensor_dir()
        if tensor_dir.is_dir() and any(tensor_dir.iterdir()):
            (tensor_dir / SMDEBUG_END_MARKER).touch(exist_ok=True)

    def _end_failed(self, reason: str) -> None:
        if self.logs is not None:
            self.logs.write(f"FailureReason: {reason}")
        if self.process is not None and self.process.poll() is None:
            self.process.stop(self.config.stop_grace_s)
        if self.monitor is not None:
            self.monitor.stop()
        self.job.finish("Failed", "Failed", STATUS_MESSAGES["Failed"], reason)

    # --- inputs -------------------------------------------------------------------------------

    def _hyperparameters(self) -> dict[str, Any]:
        """JSON-decode each value, as sagemaker-training-toolkit does (raw string otherwise)."""
        decoded = {}
        for key, value in (self.job.request.get("HyperParameters") or {}).items():
            try:
                decoded[key] = json.loads(value)
            except (TypeError, ValueError):
                decoded[key] = value
        return decoded

    def _user_hyperparameters(self) -> dict[str, Any]:
        return {k: v for k, v in self._hyperparameters().items() if not k.startswith("sagemaker_")}

    def _channels(self) -> list[str]:
        return [c["ChannelName"] for c in self.job.request.get("InputDataConfig", [])]

    def _write_input_config(self) -> None:
        request = self.job.request
        config_dir = self.dirs["config"]
        resource = request.get("ResourceConfig") or {}
        write_json(config_dir / "hyperparameters.json", request.get("HyperParameters") or {})
        write_json(
            config_dir / "resourceconfig.json",
            {
                "current_host": HOST,
                "current_instance_type": resource.get("InstanceType", "local"),
                "current_group_name": "homogeneousCluster",
                "hosts": [HOST],
                "instance_groups": [
                    {
                        "instance_group_name": "homogeneousCluster",
                        "instance_type": resource.get("InstanceType", "local"),
                        "hosts": [HOST],
                    }
                ],
                "network_interface_name": "eth0",
            },
        )
        write_json(
            config_dir / "inputdataconfig.json",
            {
                c["ChannelName"]: {
                    "TrainingInputMode": c.get("InputMode")
                    or request["AlgorithmSpecification"].get("TrainingInputMode", "File"),
                    "S3DistributionType": c.get("DataSource", {})
                    .get("S3DataSource", {})
                    .get("S3DataDistributionType", "FullyReplicated"),
                    "RecordWrapperType": c.get("RecordWrapperType", "None"),
                    **({"ContentType": c["ContentType"]} if "ContentType" in c else {}),
                }
                for c in request.get("InputDataConfig", [])
            },
        )
        if "DebugHookConfig" in request and self.job.debugger_available:
            write_json(config_dir / "debughookconfig.json", self._debug_hook_config())
        if "CheckpointConfig" in request:
            write_json(
                config_dir / "checkpointconfig.json",
                {
                    "LocalPath": str(self._checkpoint_dir()),
                    "S3Path": request["CheckpointConfig"]["S3Uri"],
                },
            )

    def _debug_hook_config(self) -> dict[str, Any]:
        """The file SageMaker writes for smdebug (SMDEBUG_CONFIG_FILE_PATH), paths made local."""
        hook = self.job.request["DebugHookConfig"]
        config: dict[str, Any] = {
            "LocalPath": str(self._tensor_dir()),
            "S3OutputPath": hook["S3OutputPath"],
        }
        if "HookParameters" in hook:
            config["HookParameters"] = hook["HookParameters"]
        if "CollectionConfigurations" in hook:
            config["CollectionConfigurations"] = hook["CollectionConfigurations"]
        return config

    def _container_path(self, path: str | None, default: Path) -> Path:
        """Map a container path (/opt/ml/...) into the job directory; other paths stay."""
        if not path:
            return default
        if not path.startswith("/opt/ml/"):
            raise JobFailure(
                f"ClientError: the local SageMaker maps only /opt/ml/... into the job folder; "
                f"{path!r} would be a path on this machine: use a path under /opt/ml/"
            )
        try:
            return contained(self.job.job_dir, path.removeprefix("/opt/ml/"))
        except PathEscapeError as error:
            raise JobFailure(
                f"ClientError: LocalPath {path!r} resolves outside the job folder "
                f"{self.job.job_dir}: refused"
            ) from error

    def _tensor_dir(self) -> Path:
        hook = self.job.request.get("DebugHookConfig") or {}
        return self._container_path(hook.get("LocalPath"), self.dirs["tensors"])

    def _checkpoint_dir(self) -> Path:
        checkpoint = self.job.request.get("CheckpointConfig") or {}
        return self._container_path(checkpoint.get("LocalPath"), self.dirs["checkpoints"])

    def _download_channel(self, channel: dict[str, Any]) -> None:
        name = channel["ChannelName"]
        source = channel.get("DataSource", {})
        s3_source = source.get("S3DataSource")
        if s3_source is None:
            raise JobFailure(
                f"ClientError: channel {name!r}: the local SageMaker reads S3DataSource only "
                f"(got {', '.join(source) or 'no data source'})"
            )
        if s3_source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise JobFailure(
                f"ClientError: channel {name!r}: S3DataType {s3_source['S3DataType']} is not "
                "supported locally; use S3Prefix"
            )
        if (channel.get("InputMode") or "File") == "Pipe":
            raise JobFailure(f"ClientError: channel {name!r}: Pipe input mode is not supported")
        uri = s3_source["S3Uri"]
        try:
            count = self.data.download_prefix(uri, contained(self.dirs["data"], name))
        except (PathEscapeError, UnsafeKeyError) as error:
            raise JobFailure(f"ClientError: channel {name!r}: {error}") from error
        except (FileNotFoundError, S3UriError, ClientError, BotoCoreError) as error:
            raise JobFailure(
                f"ClientError: Data download failed:{error}. Please ensure that the bucket "
                "exists in the selected region and that objects exist under that S3 prefix."
            ) from error
        self.logs.write(f"Downloaded {count} files for channel {name} from {uri}")

    def _fetch_source(self) -> None:
        """Unpack sagemaker_submit_directory (an S3 or file:// tar.gz) into the code dir."""
        hyperparameters = self._hyperparameters()
        program = hyperparameters.get("sagemaker_program")
        submit = hyperparameters.get("sagemaker_submit_directory")
        if not program or not submit:
            raise JobFailure(
                "ClientError: the local SageMaker runs framework-style jobs only: set the "
                "hyperparameters sagemaker_program (the entry point, e.g. train.py) and "
                "sagemaker_submit_directory (s3://.../sourcedir.tar.gz)"
            )
        archive = self.job.job_dir / "sourcedir.tar.gz"
        try:
            if str(submit).startswith("file://"):
                shutil.copyfile(str(submit).removeprefix("file://"), archive)
            else:
                self.data.download_file(str(submit), archive)
            extract_tarball(archive, self.dirs["code"])
        except (OSError, S3UriError, ClientError, BotoCoreError) as error:
            raise JobFailure(
                f"ClientError: could not fetch the training source {submit}: {error}"
            ) from error
        try:
            entry_point = contained(self.dirs["code"], str(program))
        except PathEscapeError as error:
            raise JobFailure(f"ClientError: sagemaker_program {error}") from error
        if not entry_point.is_file():
            raise JobFailure(
                f"ClientError: the entry point {program!r} is not in {submit} "
                f"(found: {', '.join(sorted(p.name for p in self.dirs['code'].iterdir()))})"
            )

    def _restore_checkpoints(self) -> None:
        """Copy CheckpointConfig.S3Uri into the local checkpoint dir, as SageMaker does."""
        checkpoint = self.job.request.get("CheckpointConfig")
        if not checkpoint:
            return
        target = self._checkpoint_dir()
        target.mkdir(parents=True, exist_ok=True)
        try:
            count = self.data.download_prefix(checkpoint["S3Uri"], target)
            self.logs.write(f"Restored {count} checkpoint files from {checkpoint['S3Uri']}")
        except FileNotFoundError:
            pass  # no checkpoints yet: a first run
        except UnsafeKeyError as error:
            raise JobFailure(f"ClientError: checkpoints: {error}") from error
        except (ClientError, BotoCoreError, S3UriError) as error:
            raise JobFailure(f"ClientError: could not read checkpoints: {error}") from error

    # --- the process --------------------------------------------------------------------------

    def _command(self) -> list[str]:
        """The Deep Learning Container's own start: the toolkit's ``train`` entry point, which
        reads the /opt/ml layout, installs the source's requirements.txt and runs the script."""
        if self.config.image_python:
            return [str(Path(self.config.image_python).parent / "train")]
        program = str(self._hyperparameters()["sagemaker_program"])
        args = to_cmd_args(self._user_hyperparameters())
        if program.endswith(".sh"):
            return ["/bin/sh", program, *args]
        return [self.config.python, program, *args]

    def _environment(self) -> dict[str, str]:
        if self.config.image_python:
            return self._toolkit_environment()
        return self._contract_environment()

    def _toolkit_environment(self) -> dict[str, str]:
        """What the container starts with; every SM_* variable then comes from the toolkit.

        SAGEMAKER_BASE_DIR points the toolkit at the job dir (laid out like /opt/ml);
        SM_STUDIO_LOCAL_MODE is the toolkit's own switch to skip waiting for the DNS names of
        the cluster's hosts (algo-1), which only exist inside SageMaker's network. Nothing of
        this process's Python setup (PYTHONPATH, VIRTUAL_ENV, SM_*) leaks into the job.
        """
        job = self.job
        cpus = os.cpu_count() or 1
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SM_", "SAGEMAKER_", "SMDEBUG_"))
            and key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        }
        env = {
            **inherited,
            **aws_env_for_children(self.clients),
            **IMAGE_ENVIRONMENT,
            "SAGEMAKER_BASE_DIR": str(job.job_dir),
            "SM_STUDIO_LOCAL_MODE": "true",
            "OMP_NUM_THREADS": str(max(1, cpus // self.config.max_concurrent_jobs)),
            "TRAINING_JOB_NAME": job.name,
            "TRAINING_JOB_ARN": job.arn,
        }
        if "s3" in self.clients.endpoint_urls:  # the toolkit's own S3 override (params.py)
            env["S3_ENDPOINT_URL"] = self.clients.endpoint_urls["s3"]
        if "DebugHookConfig" in job.request and job.debugger_available:
            env["SMDEBUG_CONFIG_FILE_PATH"] = str(self.dirs["config"] / "debughookconfig.json")
        if "CheckpointConfig" in job.request:
            env["CHECKPOINT_CONFIG_FILE_PATH"] = str(self.dirs["config"] / "checkpointconfig.json")
        env.update(job.request.get("Environment") or {})
        return env

    def _contract_environment(self) -> dict[str, str]:
        """The SM_* contract written out by hand: only for a checkout without the image's
        virtual environment (.venv-image, `make image-venv`), where the toolkit is missing."""
        job = self.job
        user_hps = self._user_hyperparameters()
        channels = self._channels()
        dirs = self.dirs
        cpus = os.cpu_count() or 1
        training_env = {
            "job_name": job.name,
            "current_host": HOST,
            "hosts": [HOST],
            "num_cpus": cpus,
            "num_gpus": 0,
            "model_dir": str(dirs["model"]),
            "output_data_dir": str(dirs["output_data"]),
            "output_dir": str(dirs["output"]),
            "input_dir": str(dirs["input"]),
            "input_config_dir": str(dirs["config"]),
            "channel_input_dirs": {c: str(dirs["data"] / c) for c in channels},
            "hyperparameters": user_hps,
            "user_entry_point": str(self._hyperparameters()["sagemaker_program"]),
            "module_dir": str(dirs["code"]),
            "is_master": True,
            "master_hostname": HOST,
            "network_interface_name": "eth0",
        }
        env = {
            **os.environ,
            **aws_env_for_children(self.clients),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(dirs["code"]), os.environ.get("PYTHONPATH", "")) if p
            ),
            # Jobs share the cores: keep torch/BLAS from oversubscribing them.
            "OMP_NUM_THREADS": str(max(1, cpus // self.config.max_concurrent_jobs)),
            "TRAINING_JOB_NAME": job.name,
            "TRAINING_JOB_ARN": job.arn,
            "SM_MODEL_DIR": str(dirs["model"]),
            "SM_OUTPUT_DIR": str(dirs["output"]),
            "SM_OUTPUT_DATA_DIR": str(dirs["output_data"]),
            "SM_OUTPUT_INTERMEDIATE_DIR": str(dirs["output"] / "intermediate"),
            "SM_INPUT_DIR": str(dirs["input"]),
            "SM_INPUT_CONFIG_DIR": str(dirs["config"]),
            "SM_MODULE_DIR": str(dirs["code"]),
            "SM_USER_ENTRY_POINT": training_env["user_entry_point"],
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(user_hps, sort_keys=True),
            "SM_USER_ARGS": json.dumps(to_cmd_args(user_hps)),
            "SM_CURRENT_HOST": HOST,
            "SM_HOSTS": json.dumps([HOST]),
            "SM_NETWORK_INTERFACE_NAME": "eth0",
            "SM_NUM_CPUS": str(cpus),
            "SM_NUM_GPUS": "0",
            "SM_LOG_LEVEL": "20",
            "SM_TRAINING_ENV": json.dumps(training_env, sort_keys=True),
            "SM_RESOURCE_CONFIG": (dirs["config"] / "resourceconfig.json").read_text(),
            "SM_INPUT_DATA_CONFIG": (dirs["config"] / "inputdataconfig.json").read_text(),
        }
        for channel in channels:
            env[f"SM_CHANNEL_{channel.upper()}"] = str(dirs["data"] / channel)
        for key, value in user_hps.items():
            env[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        if "DebugHookConfig" in job.request and job.debugger_available:
            env["SMDEBUG_CONFIG_FILE_PATH"] = str(dirs["config"] / "debughookconfig.json")
        if "CheckpointConfig" in job.request:
            env["CHECKPOINT_CONFIG_FILE_PATH"] = str(dirs["config"] / "checkpointconfig.json")
        env.update(job.request.get("Environment") or {})
        return env

    def _on_line(self, line: str) -> None:
        self.logs.write(line)
        self.job.metrics.feed(line)
        if line.strip():
            self.tail.append(line.rstrip())
            del self.tail[:-50]

    def _watch(self) -> None:
        """Stop the process on request or when MaxRuntimeInSeconds is reached."""
        job, process = self.job, self.process
        deadline = time.monotonic() + job.max_runtime_s()
        while process.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                job.request_stop("MaxRuntimeExceeded")
            if job.stop_event.wait(timeout=min(max(remaining, 0.01), 0.25)):
                job.set_secondary_status("Stopping")
                self.logs.write(f"Stopping: {job.stop_message}")
                process.stop(self.config.stop_grace_s)
                return
        # The script exited; a child it left behind would keep the log pipe open forever.
        if not self.output_done.wait(STRAGGLER_GRACE_S):
            logger.warning("%s left processes behind after exiting: killing them", job.name)
            process.kill_group()

    def _algorithm_error(self, exit_code: int) -> str:
        """AWS's FailureReason for a script that failed, with its last meaningful error line."""
        failure_file = self.dirs["output"] / "failure"
        written = failure_file.read_text().strip() if failure_file.is_file() else ""
        if self.config.image_python and written and exit_code > 0:
            # The toolkit wrote its own account (ExecuteUserScriptError: ExitCode, ErrorMessage
            # with the script's stderr, Command); SageMaker prefixes it with AlgorithmError.
            return f"AlgorithmError: {written}"
        # A script may explain itself in /opt/ml/output/failure; SageMaker reports that text.
        message = written or next(
            (ln.strip() for ln in reversed(self.tail) if ERROR_LINE.match(ln)), None
        )
        message = message or (self.tail[-1].strip() if self.tail else "(no output)")
        if exit_code < 0:
            message = f"killed by signal {-exit_code}" + (
                " (out of memory?)" if exit_code == -9 else ""
            )
        command = " ".join(self.process.argv) if self.process else ""
        return (
            f"AlgorithmError: ExecuteUserScriptError:\nExitCode {exit_code}\n"
            f'ErrorMessage "{message}"\nCommand "{command}", exit code: {exit_code}'
        )

    # --- outputs ------------------------------------------------------------------------------

    def _upload_artifacts(self, only_if_model_saved: bool = False) -> None:
        """model.tar.gz (always for a completed job, like AWS, even when empty; for a stopped
        job only when the script saved something), then output data, checkpoints, tensors."""
        job = self.job
        try:
            if not only_if_model_saved or any(self.dirs["model"].iterdir()):
                archive = make_tarball(self.dirs["model"], job.job_dir / "upload" / "model.tar.gz")
                self.data.upload_file(archive, job.model_artifacts_uri)
            self._upload_output_data()
            self._upload_side_outputs()
        except (ClientError, BotoCoreError, OSError, S3UriError) as error:
            raise JobFailure(f"InternalServerError: could not upload the model: {error}") from error
        self.logs.write(f"Uploaded the model to {job.model_artifacts_uri}")

    def _upload_output_data(self) -> None:
        output_data = self.dirs["output_data"]
        if output_data.is_dir() and any(output_data.iterdir()):
            archive = make_tarball(output_data, self.job.job_dir / "upload" / "output.tar.gz")
            try:
                self.data.upload_file(archive, self.job.output_uri("output.tar.gz"))
            except (ClientError, BotoCoreError) as error:
                logger.warning("output data of %s not uploaded: %s", self.job.name, error)

    def _upload_side_outputs(self) -> None:
        """Checkpoints to CheckpointConfig.S3Uri, tensors to <S3OutputPath>/<job>/debug-output."""
        request = self.job.request
        if "CheckpointConfig" in request and self._checkpoint_dir().is_dir():
            self.data.upload_directory(self._checkpoint_dir(), request["CheckpointConfig"]["S3Uri"])
        hook = request.get("DebugHookConfig") if self.job.debugger_available else None
        if hook and self._tensor_dir().is_dir():
            target = f"{hook['S3OutputPath'].rstrip('/')}/{self.job.name}/debug-output"
            self.data.upload_directory(self._tensor_dir(), target)
        self._upload_system_profile()

    def _upload_system_profile(self) -> None:
        """The job's CPU and memory samples to <ProfilerConfig.S3OutputPath>/<job>/profiler-output/
        system/, in the Profiler's format, where AWS writes them for a profiled job."""
        if not self.job.debugger_available:
            return  # the Profiler is part of Debugger; train.py writes its own profile
        profiler = self.job.request.get("ProfilerConfig") or {}
        usage = self.usage
        if not profiler.get("S3OutputPath") or profiler.get("DisableProfiler") or not usage:
            return
        lines = profiler_system_metrics(usage, total_memory_bytes())
        if not lines:
            return
        local = self.job.job_dir / "upload" / "system-metrics.json"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(lines)
        stamp = int(usage.get("started_epoch_s", time.time()))
        prefix = f"{profiler['S3OutputPath'].rstrip('/')}/{self.job.name}/profiler-output/system"
        self.data.upload_file(local, f"{prefix}/incremental/{stamp}.algo-1.json")

    def _write_description(self) -> None:
        """describe.json in the job dir: what reports read after the service is gone."""
        try:
            operation = protocol.control_plane_operation("DescribeTrainingJob")
            body = protocol.serialize(self.job.describe(), operation.output_shape)
            write_json(self.job.job_dir / "describe.json", body)
        except (OSError, protocol.ShapeMismatch):
            logger.exception("could not write describe.json of %s", self.job.name)

    # --- rules --------------------------------------------------------------------------------

    def _evaluate_rules(self) -> None:
        """Debug rules over the saved tensors (after the job, as AWS's rule jobs finish later)."""
        job = self.job
        if not job.debugger_available:
            return
        for configuration in job.request.get("ProfilerRuleConfigurations", []):
            outcome = profiler_rule_outcome(configuration)
            job.set_rule_status(
                "profiler", configuration["RuleConfigurationName"], outcome.status, outcome.details
            )
        configurations = job.request.get("DebugRuleConfigurations", [])
        if not configurations:
            return
        if job.status == "Failed" or self.runner.shutting_down:
            reason = (
                "the training job failed; the rule was not evaluated"
                if job.status == "Failed"
                else "the local SageMaker shut down before the rule was evaluated"
            )
            for configuration in configurations:
                job.set_rule_status(
                    "debug", configuration["RuleConfigurationName"], "Stopped", reason
                )
            self._write_description()
            return
        runnable = []
        for configuration in configurations:
            name = configuration["RuleConfigurationName"]
            if self.runner.faults.hits("rule_error", f"{job.name}/{name}"):
                job.set_rule_status(
                    "debug",
                    name,
                    "Error",
                    "InternalServerError: the rule's evaluation job exited before reporting "
                    "(injected fault rule_error)",
                )
            elif rule_to_invoke(configuration) is None:
                job.set_rule_status(
                    "debug",
                    configuration["RuleConfigurationName"],
                    "Error",
                    "the local cloud evaluates rules named by RuleParameters.rule_to_invoke "
                    "only (AWS's built-in rule images do not run locally)",
                )
            else:
                runnable.append(configuration)
        if runnable:
            self._run_rules(runnable)
        self._write_description()

    def _run_rules(self, configurations: list[dict[str, Any]]) -> None:
        job = self.job
        try:
            outcomes = evaluate_debug_rules(
                python=self.config.python,
                tensor_dir=self._tensor_dir(),
                configurations=configurations,
                code_dir=self.dirs["code"],
                repo_root=self.config.repo_root,
                base_env={**os.environ, **aws_env_for_children(self.clients)},
                log_file=job.job_dir / "logs" / "rules.log",
            )
        except OSError as error:
            logger.exception("rules of %s could not run", job.name)
            outcomes = {
                c["RuleConfigurationName"]: RuleOutcome("Error", f"rules could not run: {error}")
                for c in configurations
            }
        for name, outcome in outcomes.items():
            job.set_rule_status("debug", name, outcome.status, outcome.details)


def to_cmd_args(hyperparameters: dict[str, Any]) -> list[str]:
    """``{"lr": 0.1}`` -> ``["--lr", "0.1"]``, sorted by name, values via str() (the toolkit's
    rule: a JSON ``true`` therefore arrives as ``True``)."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{key}" if len(key) > 1 else f"-{key}", str(value)]
    return args


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=str))
