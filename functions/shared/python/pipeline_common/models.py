"""Typed pieces of the state that flow between steps (kept small: 256 KB state limit)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StepModel(BaseModel):
    """Base for step inputs: unknown keys are ignored so the state can grow.

    ``defer_build``: pydantic builds a model's validator at its first use instead of at class
    creation, so a handler's cold start pays for the few models its path uses, not for all
    of this module's (about 45 ms of import for every handler otherwise).
    """

    model_config = ConfigDict(extra="ignore", defer_build=True)


class SampleImage(StepModel):
    """One real test image, used by the smoke test."""

    key: str
    class_index: int
    class_name: str


class ValidatedDataset(StepModel):
    """What validate_dataset found: where the splits are and how big they are."""

    name: str
    bucket: str
    prefix: str
    manifest_key: str
    class_count: int
    counts: dict[str, int]
    channels: dict[str, str]
    sample_image: SampleImage


class BestTrial(StepModel):
    """The tuning job's best training job (the configuration to retrain)."""

    training_job_name: str
    objective_value: float | None = None
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    model_uri: str | None = None
    leaderboard_uri: str | None = None


# --- step outputs: what each handler returns, what the state machine's ResultSelector reads ---
# tests/functions/test_state_contract.py checks every Task's ResultSelector and every Payload
# against these models, so a renamed field fails there, not in a run.


class ExecutionsStarted(StepModel):
    """Trigger: the executions one S3 notification started, met again or skipped."""

    started: list[str] = Field(default_factory=list)
    duplicate: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)


class TuningStarted(StepModel):
    """StartTuning: the tuning job this run owns."""

    job_name: str
    warm_start_parent: str | None
    strategy: str


class TuningStatus(StepModel):
    """CheckStatus(kind=tuning)."""

    kind: Literal["tuning"] = "tuning"
    name: str
    status: str
    done: bool
    counters: dict[str, int]


class TrainingStatus(StepModel):
    """CheckStatus(kind=training): done once the job and its rule evaluations finished."""

    kind: Literal["training"] = "training"
    name: str
    status: str
    secondary_status: str
    pending_rules: list[str]
    rules_timed_out: bool
    done: bool


class EndpointStatus(StepModel):
    """CheckStatus(kind=endpoint): superseded_by names a newer run's config that serves."""

    kind: Literal["endpoint"] = "endpoint"
    name: str
    status: str
    endpoint_config: str
    superseded_by: str | None = None
    done: bool


class FoundBest(BestTrial):
    """FindBest: the best trial and how many trials completed."""

    completed_trials: int
    total_trials: int


class TrainingStarted(StepModel):
    """StartProfiledTraining: the profiled retraining job."""

    job_name: str
    builtin_rules: bool


class GateDecision(StepModel):
    """EvaluateRules: the decision, its findings and where the full report lies."""

    approved: bool
    summary: str
    test_accuracy: float | None
    baseline_accuracy: float | None
    blocking: list[str]
    findings: list[dict[str, str]]
    skipped_images: int | None
    report_uri: str


class ModelRegistered(StepModel):
    """RegisterModel: the version this run added to its data set's model package group."""

    model_package_group_name: str
    model_package_arn: str
    model_package_version: int | None
    approval_status: Literal["Approved", "Rejected", "PendingManualApproval"]


class ApprovalRequested(StepModel):
    """RequestApproval: the token of the run that waits (runs/<execution>/approval_request.json)."""

    model_package_arn: str
    task_token: str
    requested_at: str
    deadline: str


class ApprovalDecision(StepModel):
    """What `mlops approve` / `mlops reject` hand back to the waiting run (SendTaskSuccess)."""

    approved: bool
    summary: str


class Deployment(StepModel):
    """DeployEndpoint(action=deploy): what serves now; previous_endpoint_config is the rollback
    target, superseded_by a newer run's config that serves instead."""

    action: Literal["deploy"] = "deploy"
    endpoint_name: str
    endpoint_config_name: str
    model_name: str
    model_package_arn: str
    operation: Literal["created", "updated", "unchanged", "superseded"]
    previous_endpoint_config: str | None
    superseded_by: str | None


class Rollback(StepModel):
    """DeployEndpoint(action=rollback)."""

    action: Literal["rollback"] = "rollback"
    endpoint_name: str
    operation: Literal["nothing-to-roll-back", "unchanged", "rolled-back"]
    endpoint_config_name: str | None = None


class InputRejection(StepModel):
    """The model container's 4xx answer to the smoke test's image."""

    status: int
    message: str


class SmokeTestResult(StepModel):
    """SmokeTest: the answer to one real test image (input_rejected: refused with a 4xx)."""

    endpoint_name: str
    image_key: str
    expected_class_index: int
    predicted_class_index: int | None
    label: str | None
    correct: bool | None
    latency_ms: float | None
    input_rejected: InputRejection | None = None


class ReportWritten(StepModel):
    """WriteReport: where the run's report went, what it drew and how many notes it carries."""

    report_uri: str
    plots: list[str]
    notes: int
