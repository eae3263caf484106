"""Describe a tuning job, a training job or an endpoint for the state machine's wait loops.

The loops are Wait -> this function -> Choice on ``done``. Terminal failures raise
(TuningFailed, TrainingFailed, EndpointFailed) with SageMaker's FailureReason, so they reach
the same Catch -> notify -> Fail path as every other error. SageMaker is only ever called
from Lambda (never through a Step Functions service integration) so that the standard
``AWS_ENDPOINT_URL_SAGEMAKER`` override reaches every call.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pipeline_common.aws import aws_call, client, error_message
from pipeline_common.endpoints import approval_time, config_tags, serves_model_approved_after
from pipeline_common.errors import EndpointFailed, JobNotFound, TrainingFailed, TuningFailed
from pipeline_common.gate import PENDING_STATUSES
from pipeline_common.kit import logger, step
from pipeline_common.models import EndpointStatus, StepModel, TrainingStatus, TuningStatus

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

sagemaker = client("sagemaker")

NOT_FOUND_CODES = frozenset({"ResourceNotFound", "ValidationException"})
TUNING_RUNNING = frozenset({"InProgress", "Stopping"})
ENDPOINT_TRANSITIONS = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
DEFAULT_RULES_WAIT_SECONDS = 3600
LOGS_HINT = "see the job's log in CloudWatch Logs (/aws/sagemaker/TrainingJobs)"


class CheckStatusInput(StepModel):
    kind: Literal["tuning", "training", "endpoint"]
    name: str
    expected_config: str | None = None


def describe(operation: str, name: str, **kwargs: Any) -> dict[str, Any]:
    """Call a Describe* operation; a missing resource becomes JobNotFound."""
    with aws_call(operation, name, ok=NOT_FOUND_CODES) as call:
        return getattr(sagemaker, operation)(**kwargs)
    assert call.error is not None  # the block returns unless the resource was not found
    raise JobNotFound(
        f"{name} was not found ({error_message(call.error)}); it may have been deleted while "
        f"the pipeline waited for it. Upload the manifest again to start a new run"
    ) from call.error


def tuning_status(name: str) -> TuningStatus:
    job = describe("describe_hyper_parameter_tuning_job", name, HyperParameterTuningJobName=name)
    status = job["HyperParameterTuningJobStatus"]
    counters = job.get("TrainingJobStatusCounters", {})
    if status not in TUNING_RUNNING and status != "Completed":
        raise TuningFailed(
            f"tuning job {name} ended {status}: {job.get('FailureReason', 'no reason given')}. "
            f"Trials completed: {counters.get('Completed', 0)}, failed: "
            f"{counters.get('NonRetryableError', 0) + counters.get('RetryableError', 0)}, "
            f"stopped: {counters.get('Stopped', 0)}; {LOGS_HINT}"
        )
    return TuningStatus(
        name=name,
        status=status,
        done=status == "Completed",
        counters={k: int(v) for k, v in counters.items()},
    )


def rules_waited_too_long(job: dict[str, Any]) -> bool:
    """Rule evaluations may outlive the job; stop waiting after RULES_WAIT_LIMIT_SECONDS."""
    ended = job.get("TrainingEndTime")
    limit = int(os.environ.get("RULES_WAIT_LIMIT_SECONDS", DEFAULT_RULES_WAIT_SECONDS))
    return ended is not None and (datetime.now(UTC) - ended).total_seconds() > limit


def training_status(name: str) -> TrainingStatus:
    job = describe("describe_training_job", name, TrainingJobName=name)
    status = job["TrainingJobStatus"]
    if status in ("Failed", "Stopped"):
        raise TrainingFailed(
            f"training job {name} ended {status}: {job.get('FailureReason', 'no reason given')}; "
            f"{LOGS_HINT}"
        )
    evaluations = job.get("DebugRuleEvaluationStatuses", []) + job.get(
        "ProfilerRuleEvaluationStatuses", []
    )
    pending = sorted(
        e.get("RuleConfigurationName", "?")
        for e in evaluations
        if e.get("RuleEvaluationStatus") in PENDING_STATUSES
    )
    timed_out = bool(pending) and rules_waited_too_long(job)
    return TrainingStatus(
        name=name,
        status=status,
        secondary_status=job.get("SecondaryStatus", ""),
        pending_rules=pending,
        rules_timed_out=timed_out,
        done=status == "Completed" and (not pending or timed_out),
    )


def endpoint_status(name: str, expected_config: str | None) -> EndpointStatus:
    endpoint = describe("describe_endpoint", name, EndpointName=name)
    status = endpoint["EndpointStatus"]
    serving = endpoint.get("EndpointConfigName", "")
    reason = endpoint.get("FailureReason", "no reason given")
    if status == "InService" and expected_config and serving != expected_config:
        if replaced_by_newer_run(endpoint, expected_config):
            return endpoint_result(name, status, serving, superseded_by=serving)
        raise EndpointFailed(
            f"endpoint {name} is InService with {serving}, not this run's {expected_config}: "
            f"the update was rolled back ({reason}); the previous model keeps serving"
        )
    if status != "InService" and status not in ENDPOINT_TRANSITIONS:
        raise EndpointFailed(
            f"endpoint {name} is {status} instead of InService: {reason}. Check the endpoint's "
            f"log in CloudWatch Logs (/aws/sagemaker/Endpoints/{name})"
        )
    return endpoint_result(name, status, serving)


def replaced_by_newer_run(endpoint: dict[str, Any], expected_config: str) -> bool:
    """Whether a run approved after this one updated the endpoint once this run's update was
    done (concurrent runs take turns), rather than this run's update being rolled back."""
    ours = approval_time(config_tags(sagemaker, endpoint["EndpointArn"], expected_config))
    return serves_model_approved_after(sagemaker, endpoint, ours)


def endpoint_result(
    name: str, status: str, serving: str, superseded_by: str | None = None
) -> EndpointStatus:
    return EndpointStatus(
        name=name,
        status=status,
        endpoint_config=serving,
        superseded_by=superseded_by,
        done=status == "InService",
    )


@step(CheckStatusInput, flush_metrics=False)
def lambda_handler(
    event: CheckStatusInput, context: LambdaContext
) -> TuningStatus | TrainingStatus | EndpointStatus:
    if event.kind == "tuning":
        result = tuning_status(event.name)
    elif event.kind == "training":
        result = training_status(event.name)
    else:
        result = endpoint_status(event.name, event.expected_config)
    logger.info(
        {
            "operation": "check-status",
            **result.model_dump(include={"kind", "name", "status", "done"}),
        }
    )
    return result
