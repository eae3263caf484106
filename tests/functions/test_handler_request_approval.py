"""request_approval: the waiting run's token is kept for `mlops approve`, and the team is told
which version waits and how to decide."""

from __future__ import annotations

import json

import boto3
import pytest

EXECUTION = "digits-0123456789abcdef"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/mlops-digits-models/4"
EVENT = {
    "task_token": "AQCEAAAAKgAAAAMAAAAA" + "x" * 600,  # tokens are long: no registry metadata
    "execution_name": EXECUTION,
    "dataset": "digits",
    "model_package_arn": PACKAGE,
    "model_package_version": 4,
    "test_accuracy": 0.98765,
    "report_uri": f"s3://artifacts/runs/{EXECUTION}/gate.json",
    "timeout_seconds": 3600,
}


@pytest.fixture
def topic(names):
    return boto3.client("sns").create_topic(Name=names["FailureTopic"])["TopicArn"]


@pytest.fixture
def queue(topic):
    """An SQS queue on the topic: what the function published, read back."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    boto3.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
    return sqs, url


def test_request_approval_keeps_the_token_and_says_how_to_decide(
    load_handler, buckets, queue, context
):
    app = load_handler("request_approval")
    result = app.lambda_handler(EVENT, context)

    key = f"runs/{EXECUTION}/approval_request.json"
    record = json.loads(buckets.s3.get_object(Bucket=buckets.artifacts, Key=key)["Body"].read())
    assert record == result
    assert (record["task_token"], record["model_package_arn"]) == (EVENT["task_token"], PACKAGE)
    sqs, url = queue
    [message] = sqs.receive_message(QueueUrl=url)["Messages"]
    text = json.loads(message["Body"])["Message"]
    assert "version 4 of data set digits" in text and "0.9877" in text
    assert "mlops approve 4 --dataset digits" in text
    assert "mlops reject 4 --dataset digits --reason" in text
    assert EVENT["task_token"] not in text  # the token stays in the artifacts bucket
