"""Start one pipeline execution per uploaded manifest.json, exactly once.

S3 delivers ObjectCreated events at least once. The execution name is derived from the data
set and the manifest's version id (its ETag where the bucket has no versioning), and the
input is derived from the event alone, so a repeated event asks Step Functions for the same
execution again: while it runs, StartExecution answers with the running execution (no second
one starts); once it has finished, with ExecutionAlreadyExists, treated here as success.
Keys in S3 events are URL-encoded (``datasets%2Fdigits%2Fmanifest.json``, spaces as ``+``):
they are decoded with unquote_plus.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from botocore.exceptions import ClientError
from pipeline_common.aws import client, error_code, translate_client_error
from pipeline_common.config import env_str
from pipeline_common.naming import dataset_from_manifest_key, execution_name, version_token
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer()
metrics = Metrics()
stepfunctions = client("stepfunctions")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class S3BucketEntity(_Lenient):
    name: str


class S3ObjectEntity(_Lenient):
    key: str
    versionId: str | None = None
    eTag: str | None = None


class S3Entity(_Lenient):
    bucket: S3BucketEntity
    object_: S3ObjectEntity = Field(alias="object")


class S3EventRecord(_Lenient):
    eventName: str = ""
    s3: S3Entity


class S3Notification(_Lenient):
    """The keys of an S3 event notification this function reads (the rest is ignored)."""

    Records: list[S3EventRecord] = Field(default_factory=list)


def execution_input(bucket: str, key: str, dataset: str, token: str) -> dict[str, str]:
    """The execution's input: deterministic, so a repeated event carries the same input."""
    return {"bucket": bucket, "manifest_key": key, "dataset": dataset, "manifest_version": token}


def start_once(state_machine_arn: str, name: str, payload: dict[str, str]) -> bool:
    """StartExecution; False when that execution already ran (a repeated event).

    True covers both a new execution and a repeated event while the execution still runs
    (Step Functions answers with the running one): either way exactly one exists.
    """
    try:
        stepfunctions.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
        )
    except ClientError as e:
        if error_code(e) == "ExecutionAlreadyExists":
            return False
        raise translate_client_error(e, "StartExecution", name) from e
    return True


def handle_record(state_machine_arn: str, record: S3EventRecord) -> tuple[str, str]:
    """Start the execution for one record; returns (outcome, execution or key)."""
    key = unquote_plus(record.s3.object_.key)
    dataset = dataset_from_manifest_key(key)
    token = version_token(record.s3.object_)
    if not record.eventName.startswith("ObjectCreated") or dataset is None or token is None:
        logger.info({"operation": "skip", "key": key, "event": record.eventName})
        return "skipped", key
    name = execution_name(dataset, token)
    payload = execution_input(record.s3.bucket.name, key, dataset, token)
    if start_once(state_machine_arn, name, payload):
        logger.info({"operation": "StartExecution", "execution": name, "dataset": dataset})
        metrics.add_metric(name="ExecutionsStarted", unit=MetricUnit.Count, value=1)
        return "started", name
    logger.info({"operation": "duplicate-event", "execution": name, "dataset": dataset})
    metrics.add_metric(name="DuplicateEventsIgnored", unit=MetricUnit.Count, value=1)
    return "duplicate", name


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=S3Notification)
def lambda_handler(event: S3Notification, context: LambdaContext) -> dict[str, Any]:
    state_machine_arn = env_str("STATE_MACHINE_ARN")
    outcome: dict[str, list[str]] = {"started": [], "duplicate": [], "skipped": []}
    for record in event.Records:
        result, name = handle_record(state_machine_arn, record)
        outcome[result].append(name)
    return outcome
