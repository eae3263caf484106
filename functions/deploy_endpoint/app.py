"""Deploy the approved model package version: create the endpoint, or update it blue/green.

CreateModel and CreateEndpointConfig use names unique to the execution, so a retried
invocation meets its own resources ("already existing") and carries on. An existing
InService endpoint is updated with a blue/green DeploymentConfig: the new fleet comes up
beside the old one, traffic shifts to it as DeploymentStrategy says (at once, a canary share
first, or linear steps; docs/registry.md "Deployment strategies"), and the old fleet stays
for a baking period; while traffic shifts and bakes, the rollback alarms (5XX errors, low
model confidence) return all traffic to the old fleet. An endpoint that is
being created, updated or deleted by another run raises EndpointBusy, which the state
machine retries with backoff, so concurrent runs take turns and no update is lost.

Runs that take turns may finish out of order. Each config is tagged with the time its model
was approved (the moment the state machine entered DeployEndpoint); a run whose model is
older than the one already serving records itself as ``superseded`` instead of updating, so
the endpoint always ends on the last approved model.

The same function rolls an endpoint back to the previous configuration (``action:
rollback``) when the smoke test fails after an update.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from botocore.exceptions import ClientError
from pipeline_common.aws import ALREADY_EXISTS, NOT_FOUND, aws_call, client
from pipeline_common.capture import CAPTURE_PREFIX, capture_config
from pipeline_common.config import DEPLOYMENT_STRATEGIES, CommonSettings, DeploySettings
from pipeline_common.endpoints import (
    ACCURACY_TAG,
    APPROVED_AT_TAG,
    MODEL_PACKAGE_TAG,
    TRAINING_JOB_TAG,
    serves_model_approved_after,
    serving_config_tags,
)
from pipeline_common.errors import EndpointBusy
from pipeline_common.jobs import tags
from pipeline_common.kit import count, logger, step
from pipeline_common.models import Deployment, Rollback, StepModel
from pipeline_common.naming import model_name
from pipeline_common.quality import (
    QualityGuard,
    can_fire,
    quality_alarm,
    read_baseline,
    utcnow,
)
from pipeline_common.records import DEPLOYMENT, record_key
from pipeline_common.s3io import read_json, s3_uri, write_json

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
sagemaker = client("sagemaker")
cloudwatch = client("cloudwatch")

VARIANT_NAME = "AllTraffic"
BUSY_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
BROKEN_STATUSES = frozenset({"Failed", "OutOfService", "UpdateRollbackFailed"})
UPDATE_IN_PROGRESS = {"ValidationException": "in-progress"}
DEPLOY_TIMEOUT_SECONDS = 3600
MAX_EXECUTION_TIMEOUT_SECONDS = 28800  # BlueGreenUpdatePolicy's limit (600-28800)


class DeployInput(StepModel):
    action: Literal["deploy", "rollback"] = "deploy"
    execution_name: str
    dataset: str = ""
    training_job_name: str = ""
    model_package_arn: str = ""
    test_accuracy: float | None = None
    approved_at: datetime | None = None  # when the state machine entered DeployEndpoint
    endpoint_config_name: str | None = None  # rollback target


class Placement(NamedTuple):
    """What pointing the endpoint at this run's config did."""

    operation: Literal["created", "updated", "unchanged", "superseded"]
    previous: str | None = None  # the config served before an update: the rollback target
    superseded_by: str | None = None  # the newer config that serves instead of this one
    quality: QualityGuard | None = None  # whether an update armed the model-quality alarm


def resource_tags(event: DeployInput, project: str) -> list[dict[str, str]]:
    extra = [{"Key": TRAINING_JOB_TAG, "Value": event.training_job_name}]
    if event.model_package_arn:
        extra.append({"Key": MODEL_PACKAGE_TAG, "Value": event.model_package_arn})
    if event.test_accuracy is not None:
        extra.append({"Key": ACCURACY_TAG, "Value": f"{event.test_accuracy:.6f}"})
    if event.approved_at is not None:
        extra.append({"Key": APPROVED_AT_TAG, "Value": event.approved_at.isoformat()})
    return tags(project, event.dataset, event.execution_name) + extra


def create_model(
    name: str, model_package_arn: str, settings: DeploySettings, tag_list: list[dict[str, str]]
) -> None:
    """A model served from the registry's version: its image, model data and environment.

    The name is this run's, so "already exists" is this run's retried request: done."""
    with aws_call("CreateModel", name, ok=ALREADY_EXISTS):
        sagemaker.create_model(
            ModelName=name,
            PrimaryContainer={"ModelPackageName": model_package_arn},
            ExecutionRoleArn=settings.role_arn,
            Tags=tag_list,
        )


def create_endpoint_config(
    name: str,
    model: str,
    settings: DeploySettings,
    tag_list: list[dict[str, str]],
    capture_destination: str,
) -> None:
    """One variant of the model; requests and answers captured for monitoring (capture.py)."""
    with aws_call("CreateEndpointConfig", name, ok=ALREADY_EXISTS):
        sagemaker.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": VARIANT_NAME,
                    "ModelName": model,
                    "InitialInstanceCount": 1,
                    "InstanceType": settings.instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
            DataCaptureConfig=capture_config(capture_destination, settings.capture_percent),
            Tags=tag_list,
        )


def current_endpoint(name: str) -> dict[str, Any] | None:
    with aws_call("DescribeEndpoint", name, ok=NOT_FOUND):
        return sagemaker.describe_endpoint(EndpointName=name)
    return None


def traffic_routing(settings: DeploySettings) -> dict[str, Any]:
    """BlueGreenUpdatePolicy.TrafficRoutingConfiguration for the template's strategy.

    ALL_AT_ONCE switches every request at once; CANARY sends CanarySize first, then the rest
    after WaitIntervalInSeconds; LINEAR adds LinearStepSize every WaitIntervalInSeconds."""
    kind = DEPLOYMENT_STRATEGIES[settings.strategy]
    if kind == "ALL_AT_ONCE":
        return {"Type": kind, "WaitIntervalInSeconds": 0}
    size_key, percent = (
        ("CanarySize", settings.canary_percent)
        if kind == "CANARY"
        else ("LinearStepSize", settings.linear_step_percent)
    )
    return {
        "Type": kind,
        "WaitIntervalInSeconds": settings.traffic_wait_seconds,
        size_key: {"Type": "CAPACITY_PERCENT", "Value": percent},
    }


def shifting_seconds(settings: DeploySettings) -> int:
    """How long the traffic shifting waits in all: one interval per step before the last."""
    kind = DEPLOYMENT_STRATEGIES[settings.strategy]
    steps = {"ALL_AT_ONCE": 0, "CANARY": 1}.get(kind)
    if steps is None:
        steps = -(-100 // settings.linear_step_percent) - 1
    return steps * settings.traffic_wait_seconds


def blue_green(settings: DeploySettings, alarms: list[str]) -> dict[str, Any]:
    """Traffic shifts as the strategy says; the old fleet bakes; any alarm rolls back."""
    timeout = DEPLOY_TIMEOUT_SECONDS + shifting_seconds(settings) + settings.bake_seconds
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": traffic_routing(settings),
            "TerminationWaitInSeconds": settings.bake_seconds,
            "MaximumExecutionTimeoutInSeconds": min(timeout, MAX_EXECUTION_TIMEOUT_SECONDS),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarms]},
    }


def restore() -> dict[str, Any]:
    """A rollback after a failed smoke test: back to the old config at once, no baking and no
    alarms, which may well be in ALARM because of the model being removed (they would roll
    the rollback back)."""
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
            "TerminationWaitInSeconds": 0,
            "MaximumExecutionTimeoutInSeconds": DEPLOY_TIMEOUT_SECONDS,
        }
    }


def busy(name: str, status: str, detail: str = "") -> EndpointBusy:
    return EndpointBusy(
        f"endpoint {name} is {status}{detail}; another deployment is in progress, the state "
        f"machine retries this one with backoff"
    )


def create_endpoint(name: str, config: str, tag_list: list[dict[str, str]]) -> str:
    with aws_call("CreateEndpoint", name, ok=ALREADY_EXISTS) as call:
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config, Tags=tag_list)
    if not call.succeeded:
        raise busy(name, "being created by another run") from call.error
    return "created"


def update_endpoint(name: str, config: str, deployment_config: dict[str, Any]) -> str:
    with aws_call("UpdateEndpoint", name, ok=UPDATE_IN_PROGRESS) as call:
        sagemaker.update_endpoint(
            EndpointName=name, EndpointConfigName=config, DeploymentConfig=deployment_config
        )
    if not call.succeeded:
        raise busy(name, "being updated") from call.error
    return "updated"


def replace_broken(name: str, endpoint: dict[str, Any]) -> EndpointBusy:
    """A Failed endpoint cannot be updated: delete it; the retry creates it afresh."""
    with aws_call("DeleteEndpoint", name):
        sagemaker.delete_endpoint(EndpointName=name)
    reason = endpoint.get("FailureReason", "no reason given")
    return busy(name, endpoint["EndpointStatus"], f" ({reason}); deleted it so it can be recreated")


def arm_quality_alarm(
    settings: DeploySettings, endpoint: dict[str, Any], new_model: str
) -> QualityGuard:
    """Put the model-quality alarm for this update, relative to the model it replaces.

    Not armed when the replaced model has too few recorded answers to compare with (a quiet
    or brand-new endpoint), or when the threshold would be out of a share's reach. A fresh
    configuration keeps the alarm's old state on AWS, so it is set back to OK: an ALARM left
    from the previous update would otherwise roll this one back at once."""
    old_model = serving_config_tags(sagemaker, endpoint).get(TRAINING_JOB_TAG, "")
    if not old_model or not new_model:
        return QualityGuard(armed=False, why="the serving model or the new one is not known")
    with aws_call("GetMetricStatistics", settings.metrics_namespace):
        baseline = read_baseline(cloudwatch, settings.metrics_namespace, old_model, utcnow())
    increase = settings.low_confidence_increase
    guard = QualityGuard.of(baseline, increase)
    if not can_fire(baseline, increase):
        return guard
    alarm = settings.quality_alarm_name
    with aws_call("PutMetricAlarm", alarm):
        cloudwatch.put_metric_alarm(
            **quality_alarm(alarm, settings.metrics_namespace, new_model, baseline, increase)
        )
    with aws_call("SetAlarmState", alarm):
        cloudwatch.set_alarm_state(
            AlarmName=alarm, StateValue="OK", StateReason=f"armed for an update to {new_model}"
        )
    return guard


def point_endpoint_at(
    name: str,
    config: str,
    approved_at: datetime | None,
    settings: DeploySettings,
    tag_list: list[dict[str, str]],
    new_model: str,
) -> Placement:
    """Create or update the endpoint so it serves ``config``, unless a newer model serves."""
    endpoint = current_endpoint(name)
    if endpoint is None:
        return Placement(create_endpoint(name, config, tag_list))
    status, serving = endpoint["EndpointStatus"], endpoint.get("EndpointConfigName")
    if serving == config and status in ("InService", "Creating", "Updating"):
        return Placement("unchanged")  # this run's own earlier, retried request
    if status in BUSY_STATUSES:
        raise busy(name, status)
    if status in BROKEN_STATUSES:
        raise replace_broken(name, endpoint)
    if serves_model_approved_after(sagemaker, endpoint, approved_at):
        return Placement("superseded", superseded_by=serving)
    guard = arm_quality_alarm(settings, endpoint, new_model)
    alarms = [settings.error_alarm_name] + ([settings.quality_alarm_name] if guard.armed else [])
    operation = update_endpoint(name, config, blue_green(settings, alarms))
    return Placement(operation, previous=serving, quality=guard)


def previous_from_record(bucket: str, key: str) -> str | None:
    """After a retried invocation, the previous config as the first attempt recorded it."""
    try:
        return read_json(s3, bucket, key).get("previous_endpoint_config")
    except (ClientError, ValueError, AttributeError):
        return None


def deploy(event: DeployInput, common: CommonSettings, settings: DeploySettings) -> Deployment:
    name = model_name(common.project_name, event.dataset, event.execution_name)
    tag_list = resource_tags(event, common.project_name)
    create_model(name, event.model_package_arn, settings, tag_list)
    capture_destination = s3_uri(common.artifacts_bucket, CAPTURE_PREFIX)
    create_endpoint_config(name, name, settings, tag_list, capture_destination)
    placement = point_endpoint_at(
        settings.endpoint_name, name, event.approved_at, settings, tag_list, event.training_job_name
    )
    key = record_key(event.execution_name, DEPLOYMENT)
    previous = placement.previous
    if placement.operation == "unchanged":
        previous = previous_from_record(common.artifacts_bucket, key)
    record = Deployment(
        endpoint_name=settings.endpoint_name,
        endpoint_config_name=name,
        model_name=name,
        model_package_arn=event.model_package_arn,
        operation=placement.operation,
        previous_endpoint_config=previous,
        superseded_by=placement.superseded_by,
    )
    with aws_call("PutObject", s3_uri(common.artifacts_bucket, key)):
        write_json(
            s3,
            common.artifacts_bucket,
            key,
            {
                **record.model_dump(exclude={"action"}),
                "training_job_name": event.training_job_name,
                "test_accuracy": event.test_accuracy,
                "quality_alarm": placement.quality._asdict() if placement.quality else None,
            },
        )
    count(f"Endpoint{placement.operation.capitalize()}")
    return record


def rollback(event: DeployInput, settings: DeploySettings) -> Rollback:
    """Return the endpoint to the configuration it served before this run's update."""
    target = event.endpoint_config_name
    if not target:
        return Rollback(endpoint_name=settings.endpoint_name, operation="nothing-to-roll-back")
    endpoint = current_endpoint(settings.endpoint_name)
    if endpoint is None or endpoint.get("EndpointConfigName") == target:
        return Rollback(endpoint_name=settings.endpoint_name, operation="unchanged")
    if endpoint["EndpointStatus"] in BUSY_STATUSES:
        raise busy(settings.endpoint_name, endpoint["EndpointStatus"])
    update_endpoint(settings.endpoint_name, target, restore())
    count("EndpointRolledBack")
    return Rollback(
        endpoint_name=settings.endpoint_name, operation="rolled-back", endpoint_config_name=target
    )


@step(DeployInput)
def lambda_handler(event: DeployInput, context: LambdaContext) -> Deployment | Rollback:
    common, settings = CommonSettings.from_env(), DeploySettings.from_env()
    result = (
        deploy(event, common, settings) if event.action == "deploy" else rollback(event, settings)
    )
    logger.info({"operation": f"endpoint-{event.action}", **result.model_dump()})
    return result
