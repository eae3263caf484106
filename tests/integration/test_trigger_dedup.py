"""An S3 upload of manifest.json starts exactly one execution, however often S3 delivers it.

The data bucket and its notification are built from template.yaml (the trigger's S3 event
filter), the trigger runs its real handler, and the state machine really executes in moto
(the other functions scripted).
"""

from __future__ import annotations

import json

import boto3
import pytest

from tests.integration.pipeline_harness import PARAMETERS
from tests.support import template as sam_template
from tests.support.lambda_env import LambdaContext, load_handler


def load_trigger(monkeypatch, state_machine_arn: str):
    """functions/trigger/app.py with the environment template.yaml gives it."""
    resolver = sam_template.template_resolver(PARAMETERS, PipelineStateMachine=state_machine_arn)
    return load_handler("trigger", resolver, monkeypatch)


TRIGGER_CONTEXT = LambdaContext(function_name="mlops-trigger", aws_request_id="req-1")


def notification_filter() -> list[dict[str, str]]:
    """The trigger's S3 key filter, as template.yaml declares it."""
    event = sam_template.functions()["TriggerFunction"]["Events"]["ManifestUploaded"]["Properties"]
    return [{"Name": r["Name"], "Value": r["Value"]} for r in event["Filter"]["S3Key"]["Rules"]]


@pytest.fixture
def data_bucket(pipeline, monkeypatch):
    """The versioned data bucket notifying the real trigger handler."""
    trigger = load_trigger(monkeypatch, pipeline.state_machine_arn)
    delivered: list[dict] = []

    def handle(event: dict) -> dict:
        delivered.append(event)
        return trigger.lambda_handler(event, TRIGGER_CONTEXT)

    pipeline.handlers["TriggerFunction"] = handle
    name = sam_template.physical_names(PARAMETERS)["DataBucket"]
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    trigger_arn = boto3.client("lambda").get_function(
        FunctionName=pipeline.function_names["TriggerFunction"]
    )["Configuration"]["FunctionArn"]
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={
            "LambdaFunctionConfigurations": [
                {
                    "LambdaFunctionArn": trigger_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": notification_filter()}},
                }
            ]
        },
    )
    return s3, name, delivered


def executions(pipeline) -> list[dict]:
    return pipeline.stepfunctions.list_executions(stateMachineArn=pipeline.state_machine_arn)[
        "executions"
    ]


def test_trigger_duplicate_event_starts_one_execution(pipeline, data_bucket):
    s3, bucket, delivered = data_bucket

    s3.put_object(Bucket=bucket, Key="datasets/digits/train/000.zero/0000.png", Body=b"png")
    s3.put_object(Bucket=bucket, Key="datasets/digits/manifest.json", Body=b"{}")

    assert len(delivered) == 1, "only manifest.json notifies the trigger"
    assert "%2F" in delivered[0]["Records"][0]["s3"]["object"]["key"], "keys arrive URL-encoded"
    [first] = executions(pipeline)
    assert pipeline.wait(first["executionArn"]).status == "SUCCEEDED"

    pipeline.invoke(pipeline.function_names["TriggerFunction"], delivered[0])  # S3 delivers again
    pipeline.invoke(pipeline.function_names["TriggerFunction"], delivered[0])

    assert [e["name"] for e in executions(pipeline)] == [first["name"]]
    started = json.loads(
        pipeline.stepfunctions.describe_execution(executionArn=first["executionArn"])["input"]
    )
    assert started["manifest_key"] == "datasets/digits/manifest.json"


def test_trigger_new_manifest_upload_starts_another_execution(pipeline, data_bucket):
    s3, bucket, _ = data_bucket

    s3.put_object(Bucket=bucket, Key="datasets/digits/manifest.json", Body=b'{"v": 1}')
    s3.put_object(Bucket=bucket, Key="datasets/digits/manifest.json", Body=b'{"v": 2}')

    runs = executions(pipeline)
    assert len(runs) == 2
    for run in runs:
        assert pipeline.wait(run["executionArn"]).status == "SUCCEEDED"
