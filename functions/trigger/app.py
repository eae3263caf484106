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
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models import S3Model, S3RecordModel
from aws_lambda_powertools.utilities.parser.models.s3 import (
    S3Bucket,
    S3Identity,
    S3Message,
    S3OwnerIdentify,
    S3RequestParameters,
    S3ResponseElements,
)
from pipeline_common.aws import aws_call, client
from pipeline_common.config import env_str
from pipeline_common.kit import count, logger, step
from pipeline_common.models import ExecutionsStarted
from pipeline_common.naming import dataset_from_manifest_key, execution_name, version_token
from pydantic import Field

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

stepfunctions = client("stepfunctions")


# Powertools' S3 event models. The keys this function never reads (who uploaded, from where,
# the request ids) are optional: AWS sends them, moto's notifications leave them out.


class Bucket(S3Bucket):
    ownerIdentity: S3OwnerIdentify | None = None


class Message(S3Message):
    bucket: Bucket


class Record(S3RecordModel):
    userIdentity: S3Identity | None = None
    requestParameters: S3RequestParameters | None = None
    responseElements: S3ResponseElements | None = None
    s3: Message


class S3Notification(S3Model):
    """S3's ``s3:TestEvent`` (sent when a notification is set up) carries no Records, and is
    answered with nothing started."""

    Records: list[Record] = Field(default_factory=list)


def execution_input(bucket: str, key: str, dataset: str, token: str) -> dict[str, str]:
    """The execution's input: deterministic, so a repeated event carries the same input."""
    return {"bucket": bucket, "manifest_key": key, "dataset": dataset, "manifest_version": token}


def start_once(state_machine_arn: str, name: str, payload: dict[str, str]) -> bool:
    """StartExecution; False when that execution already ran (a repeated event).

    True covers both a new execution and a repeated event while the execution still runs
    (Step Functions answers with the running one): either way exactly one exists.
    """
    with aws_call("StartExecution", name, ok={"ExecutionAlreadyExists"}) as call:
        stepfunctions.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
        )
    return call.succeeded


def handle_record(state_machine_arn: str, record: Record) -> tuple[str, str]:
    """Start the execution for one record; returns (outcome, execution or key)."""
    obj = record.s3.object
    key = unquote_plus(obj.key) if obj else ""
    dataset = dataset_from_manifest_key(key)
    token = version_token(obj) if obj else None
    if not record.eventName.startswith("ObjectCreated") or dataset is None or token is None:
        logger.info({"operation": "skip", "key": key, "event": record.eventName})
        return "skipped", key
    name = execution_name(dataset, token)
    payload = execution_input(record.s3.bucket.name, key, dataset, token)
    if start_once(state_machine_arn, name, payload):
        logger.info({"operation": "StartExecution", "execution": name, "dataset": dataset})
        count("ExecutionsStarted")
        return "started", name
    logger.info({"operation": "duplicate-event", "execution": name, "dataset": dataset})
    count("DuplicateEventsIgnored")
    return "duplicate", name


@step(S3Notification)
def lambda_handler(event: S3Notification, context: LambdaContext) -> ExecutionsStarted:
    state_machine_arn = env_str("STATE_MACHINE_ARN")
    outcome = ExecutionsStarted()
    for record in event.Records:
        result, name = handle_record(state_machine_arn, record)
        getattr(outcome, result).append(name)
    return outcome
