"""Settings of the local SageMaker service (all in one place so `mlops up` and tests share them)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
# Set to 1 (tests of the SM_* contract only) to run a training script without the training
# image's environment; otherwise a job without .venv-image fails and says `make image-venv`.
SCRIPT_WITHOUT_TOOLKIT_ENV = "MLOPS_LOCAL_SCRIPT_WITHOUT_TOOLKIT"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _image_python() -> str | None:
    """MLOPS_IMAGE_PYTHON, else the repository's .venv-image when it was built."""
    named = os.environ.get("MLOPS_IMAGE_PYTHON")
    if named:
        return named
    candidate = REPO_ROOT / ".venv-image" / "bin" / "python"
    return str(candidate) if (candidate.parent / "train").exists() else None


@dataclass
class SageMakerConfig:
    """What the local SageMaker needs to know about its host.

    ``aws_endpoint_urls`` maps a boto3 service name (``s3``, ``logs``) to the local cloud's URL;
    a service not named there is resolved the way boto3 always does (``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL``), so the same code also works against real AWS.
    """

    state_dir: Path
    region: str = field(
        default_factory=lambda: (
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
    )
    account_id: str = "123456789012"
    # Training jobs running at once across the whole service (this machine has 2 cores).
    max_concurrent_jobs: int = field(default_factory=lambda: _env_int("MLOPS_LOCAL_MAX_JOBS", 1))
    aws_endpoint_urls: dict[str, str] = field(default_factory=dict)
    # How long a stopped job gets between SIGTERM and SIGKILL (AWS gives 120 s).
    stop_grace_s: float = 10.0
    # CloudWatch Logs batches are flushed at least this often while a process runs.
    log_flush_interval_s: float = 1.0
    # CPU/RSS sampling period of a training job or model server (resource_usage.json).
    resource_sample_interval_s: float = 1.0
    # How often a waiting endpoint deployment polls its model server's /ping.
    ping_interval_s: float = 0.2
    # Endpoint start limit when the variant sets no ContainerStartupHealthCheckTimeoutInSeconds.
    endpoint_start_timeout_s: float = 120.0
    # How often a blue/green update polls its AutoRollbackConfiguration alarms (CloudWatch
    # evaluates an alarm once per period, at least every 10 s).
    alarm_poll_interval_s: float = 1.0
    # How long an old model server may finish in-flight requests after traffic moved away.
    drain_timeout_s: float = 30.0
    # Early stopping (TrainingJobEarlyStoppingType=Auto): optuna MedianPruner settings.
    early_stopping_startup_trials: int = 2
    early_stopping_warmup_steps: int = 1
    # Raise InternalFailure when a response does not match botocore's output shape (tests).
    strict_responses: bool = False
    python: str = sys.executable
    # The Python of the training image's environment (.venv-image: Python 3.12, the image's
    # torch/numpy/protobuf, sagemaker-training and sagemaker-pytorch-training). Jobs start
    # through its `train` entry point as in the Deep Learning Container; None (the venv was
    # not built) fails the job with a FailureReason naming `make image-venv`.
    image_python: str | None = field(default_factory=lambda: _image_python())
    # The explicit opt-in (SCRIPT_WITHOUT_TOOLKIT_ENV) to run the script under `python` with
    # the SM_* contract written by hand when image_python is None.
    script_without_toolkit: bool = field(
        default_factory=lambda: _env_flag(SCRIPT_WITHOUT_TOOLKIT_ENV)
    )
    # Whether this "account" has SageMaker Debugger (closed to new customers on 2026-07-30;
    # the template parameter DebuggerAvailable). Without it, as on such an AWS account, a job
    # gets no debughookconfig.json, no Profiler output and no DebugRuleEvaluationStatuses.
    debugger_available: bool = False
    repo_root: Path = REPO_ROOT
    faults: tuple[str, ...] = ()
    # IAM (mlops.local.iam): decides a request from its headers and the permissions it needs
    # (None = allowed, else AWS's AccessDenied message); None here = no enforcement.
    authorizer: Callable[[Mapping[str, str], list[Any]], str | None] | None = None
    # Credentials of a session on a job's execution role (S3 access of the job), by role ARN.
    role_credentials: Callable[[str], dict[str, str]] | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if self.max_concurrent_jobs < 1:
            raise ValueError(
                f"max_concurrent_jobs must be at least 1, got {self.max_concurrent_jobs}"
            )

    def arn(self, resource_type: str, name: str) -> str:
        """AWS lowercases the resource name inside SageMaker ARNs."""
        return f"arn:aws:sagemaker:{self.region}:{self.account_id}:{resource_type}/{name.lower()}"
