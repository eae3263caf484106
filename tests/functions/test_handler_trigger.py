"""trigger: one execution per manifest version, whatever S3 repeats."""

from __future__ import annotations

import copy
import json

import boto3
import pytest
from pipeline_common.errors import AwsCallFailed

from tests.functions.handler_helpers import load_event


@pytest.fixture
def state_machine(aws, names):
    sfn = boto3.client("stepfunctions")
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    arn = sfn.create_state_machine(
        name=names["PipelineStateMachine"],
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn=role,
    )["stateMachineArn"]
    return sfn, arn


def executions(sfn, arn):
    return sfn.list_executions(stateMachineArn=arn)["executions"]


def test_trigger_starts_one_execution_with_deterministic_name(load_handler, state_machine, context):
    sfn, arn = state_machine
    app = load_handler("trigger")

    result = app.lambda_handler(load_event("s3_manifest_created.json"), context)

    started = executions(sfn, arn)
    assert [e["name"] for e in started] == result["started"]
    assert started[0]["name"].startswith("digits-")
    detail = sfn.describe_execution(executionArn=started[0]["executionArn"])
    assert json.loads(detail["input"]) == {
        "bucket": "mlops-data-123456789012-us-east-1",
        "manifest_key": "datasets/digits/manifest.json",
        "dataset": "digits",
        "manifest_version": "v:096fKKXTRTtl3on89fVO.nfljtsv6qko",
    }


def test_trigger_duplicate_event_while_running_starts_nothing(load_handler, state_machine, context):
    sfn, arn = state_machine
    app = load_handler("trigger")
    event = load_event("s3_manifest_created.json")

    first = app.lambda_handler(event, context)
    second = app.lambda_handler(event, context)

    assert len(executions(sfn, arn)) == 1
    assert second["started"] == first["started"]  # StartExecution answered the running one


def test_trigger_duplicate_event_after_the_run_ended_is_ignored(
    load_handler, state_machine, context
):
    sfn, arn = state_machine
    app = load_handler("trigger")
    event = load_event("s3_manifest_created.json")
    first = app.lambda_handler(event, context)
    sfn.stop_execution(executionArn=executions(sfn, arn)[0]["executionArn"])

    second = app.lambda_handler(event, context)

    assert len(executions(sfn, arn)) == 1
    assert second == {"started": [], "duplicate": first["started"], "skipped": []}


def test_trigger_new_manifest_version_starts_a_new_execution(load_handler, state_machine, context):
    sfn, arn = state_machine
    app = load_handler("trigger")
    event = load_event("s3_manifest_created.json")
    newer = copy.deepcopy(event)
    newer["Records"][0]["s3"]["object"]["versionId"] = "another-version"

    app.lambda_handler(event, context)
    app.lambda_handler(newer, context)

    assert len(executions(sfn, arn)) == 2


def test_trigger_decodes_url_encoded_keys(load_handler, state_machine, context):
    sfn, arn = state_machine
    app = load_handler("trigger")
    event = load_event("s3_manifest_created.json")
    event["Records"][0]["s3"]["object"]["key"] = "datasets%2Fdog-breeds%2Fmanifest.json"

    result = app.lambda_handler(event, context)

    assert result["started"][0].startswith("dog-breeds-")
    detail = sfn.describe_execution(executionArn=executions(sfn, arn)[0]["executionArn"])
    assert json.loads(detail["input"])["manifest_key"] == "datasets/dog-breeds/manifest.json"


def test_trigger_uses_etag_without_versioning(load_handler, state_machine, context):
    sfn, arn = state_machine
    app = load_handler("trigger")
    event = load_event("s3_manifest_created.json")
    del event["Records"][0]["s3"]["object"]["versionId"]

    app.lambda_handler(event, context)
    app.lambda_handler(event, context)

    [execution] = executions(sfn, arn)
    detail = sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(detail["input"])["manifest_version"] == "e:0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "key",
    [
        "datasets/digits/train/000.zero/manifest.json",
        "other/digits/manifest.json",
        "datasets/manifest.json",
    ],
)
def test_trigger_skips_keys_that_are_not_a_data_set_manifest(
    load_handler, state_machine, context, key
):
    sfn, arn = state_machine
    app = load_handler("trigger")
    event = load_event("s3_manifest_created.json")
    event["Records"][0]["s3"]["object"]["key"] = key

    result = app.lambda_handler(event, context)

    assert result["skipped"] == [key]
    assert executions(sfn, arn) == []


def test_trigger_ignores_the_s3_test_event(load_handler, state_machine, context):
    app = load_handler("trigger")

    result = app.lambda_handler({"Service": "Amazon S3", "Event": "s3:TestEvent"}, context)

    assert result == {"started": [], "duplicate": [], "skipped": []}


def test_trigger_missing_state_machine_is_an_error_naming_it(load_handler, aws, context):
    app = load_handler("trigger")

    with pytest.raises(AwsCallFailed, match="StartExecution"):
        app.lambda_handler(load_event("s3_manifest_created.json"), context)


def local_cloud_event(bucket: str, key: str) -> dict:
    """The notification the local cloud sends for ``key``: moto's builder with the local
    cloud's additions (mlops.local.s3_events), for the object version just written."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3 import notifications
    from moto.s3.models import s3_backends

    from mlops.local import s3_events

    s3_events.install()
    fake_bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(bucket)
    return notifications._get_s3_event(
        "s3:ObjectCreated:Put", fake_bucket, fake_bucket.keys[key], "ManifestUploaded"
    )


@pytest.mark.parametrize("versioned", [True, False])
def test_trigger_parses_the_local_clouds_events_with_powertools_models(
    load_handler, state_machine, buckets, context, versioned
):
    sfn, arn = state_machine
    app = load_handler("trigger")
    key = "datasets/dog breeds/manifest.json"
    if versioned:
        buckets.s3.put_bucket_versioning(
            Bucket=buckets.data, VersioningConfiguration={"Status": "Enabled"}
        )
    written = buckets.s3.put_object(Bucket=buckets.data, Key=key, Body=b"{}")
    event = local_cloud_event(buckets.data, key)

    record = app.S3Notification.model_validate(event).Records[0]
    result = app.lambda_handler(event, context)

    assert record.s3.object.key == "datasets%2Fdog+breeds%2Fmanifest.json"  # URL-encoded
    # what every AWS record carries besides the object, which moto alone leaves out
    assert record.userIdentity and record.requestParameters and record.responseElements
    assert record.s3.bucket.ownerIdentity is not None
    assert record.s3.object.eTag == written["ETag"].strip('"')
    [execution] = executions(sfn, arn)
    assert result["started"] == [execution["name"]]
    started = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert started["manifest_key"] == key
    expected = f"v:{written['VersionId']}" if versioned else f"e:{written['ETag'].strip(chr(34))}"
    assert started["manifest_version"] == expected


def test_trigger_model_reads_the_aws_sample_event(load_handler):
    app = load_handler("trigger")

    [record] = app.S3Notification.model_validate(load_event("s3_manifest_created.json")).Records

    assert record.eventName == "ObjectCreated:Put"
    assert record.s3.bucket.name == "mlops-data-123456789012-us-east-1"
    assert record.s3.object.versionId == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    assert record.s3.object.eTag == "0123456789abcdef0123456789abcdef"
    assert record.s3.object.size == 1024
