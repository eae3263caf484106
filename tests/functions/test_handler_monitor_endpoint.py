"""monitor_endpoint: captured requests against the serving version's baseline; notify, retrain.

moto holds the buckets, the topic (read back through an SQS queue) and the state machine; the
SageMaker answers (what serves, with which capture config and baseline) are stubbed. Captures
are written in AWS's format by the local SageMaker's writer, from synthetic features whose
distributions the tests control: the same as the baseline's, or shifted.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pytest
from botocore.stub import Stubber
from PIL import Image
from pipeline_common.capture import find_request

from mlops.local.sagemaker.capture import capture_key, capture_line
from tests.functions.handler_helpers import ARN_PREFIX, endpoint

ENDPOINT = "mlops-classifier"
CONFIG = "mlops-digits-1a2b3c4d"
MODEL = "mlops-digits-retrain-1a2b3c4d"
PACKAGE = f"{ARN_PREFIX}:model-package/mlops-digits-models/2"
CAPTURE = {
    "InitialSamplingPercentage": 100,
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
}


def png(brightness: float, rng) -> bytes:
    pixels = np.clip(rng.normal(brightness, 0.15, (8, 8)), 0, 1) * 255
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype("uint8"), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def sample(rng, count: int, shift: float = 0.0) -> list[dict]:
    """Requests as the model server answers them; ``shift`` moves every feature."""
    rows = []
    for _ in range(count):
        rows.append(
            {
                "embedding": [round(float(v), 5) for v in rng.normal(shift, 1.0, 4)],
                "class_index": int(rng.integers(0, 3)) if shift == 0 else 0,
                "confidence": float(rng.uniform(0.7, 1.0) - (0.5 if shift else 0.0)),
                "image": png(0.5 + (0.3 if shift else 0.0), rng),
            }
        )
    return rows


def baseline_of(rows: list[dict]) -> dict:
    from pipeline_common.baseline import image_columns, image_statistics

    counts = [0, 0, 0]
    for row in rows:
        counts[row["class_index"]] += 1
    stats = [image_statistics(Image.open(io.BytesIO(row["image"]))) for row in rows]
    return {
        "version": 1,
        "count": len(rows),
        "classes": ["000.a", "001.b", "002.c"],
        "prediction_counts": counts,
        "confidence": [row["confidence"] for row in rows],
        "embedding": {"mean": [], "components": [], "sample": [r["embedding"] for r in rows]},
        "images": image_columns(stats),
    }


def put_captures(s3, bucket: str, rows: list[dict], when: datetime, model: str = MODEL) -> None:
    config = {**CAPTURE, "DestinationS3Uri": f"s3://{bucket}/capture"}
    lines = []
    for row in rows:
        answer = {
            "class_index": row["class_index"],
            "top_k": [{"class_index": row["class_index"], "probability": row["confidence"]}],
            "embedding": row["embedding"],
            "model": model,
        }
        request = (row["image"], "image/png")
        response = (json.dumps(answer).encode(), "application/json")
        lines.append(json.dumps(capture_line(config, request, response, when)))
    _, key = capture_key(config["DestinationS3Uri"], ENDPOINT, "AllTraffic", when)
    s3.put_object(Bucket=bucket, Key=key, Body="\n".join(lines).encode())


@pytest.fixture
def setup(load_handler, buckets, names):
    """The serving version's baseline (from 200 in-distribution requests) and the AWS pieces."""
    sfn, sqs, sns = boto3.client("stepfunctions"), boto3.client("sqs"), boto3.client("sns")
    role = boto3.client("iam").create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")
    machine = sfn.create_state_machine(
        name=names["PipelineStateMachine"],
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn=role["Role"]["Arn"],
    )["stateMachineArn"]
    topic = sns.create_topic(Name=names["FailureTopic"])["TopicArn"]
    url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue["QueueArn"])
    rng = np.random.default_rng(7)
    baseline_key = "runs/digits-0123/baseline.json"
    buckets.s3.put_object(
        Bucket=buckets.artifacts, Key=baseline_key, Body=json.dumps(baseline_of(sample(rng, 200)))
    )
    buckets.s3.put_object(Bucket=buckets.data, Key="datasets/digits/manifest.json", Body=b"{}")
    return {
        "rng": rng,
        "buckets": buckets,
        "machine": machine,
        "sfn": sfn,
        "inbox": (sqs, url),
        "baseline_uri": f"s3://{buckets.artifacts}/{baseline_key}",
        "load": load_handler,
    }


def run(setup, context, **parameters) -> dict:
    """One monitor invocation, with SageMaker saying what serves."""
    app = setup["load"]("monitor_endpoint", **parameters)
    capture = {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": 100,
        "DestinationS3Uri": f"s3://{setup['buckets'].artifacts}/capture",
        "KmsKeyId": "",
    }
    with Stubber(app.sagemaker) as stub:
        stub.add_response(
            "describe_endpoint", endpoint(ENDPOINT, config=CONFIG, DataCaptureConfig=capture)
        )
        stub.add_response("list_tags", {"Tags": [{"Key": "mlops:model-package", "Value": PACKAGE}]})
        stub.add_response(
            "describe_model_package",
            {
                "ModelPackageName": "mlops-digits-models",
                "ModelPackageArn": PACKAGE,
                "CreationTime": datetime.now(UTC),
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": []},
                "CustomerMetadataProperties": {"dataset": "digits", "training-job": MODEL},
                "DriftCheckBaselines": {
                    "ModelDataQuality": {
                        "Statistics": {
                            "ContentType": "application/json",
                            "S3Uri": setup["baseline_uri"],
                        }
                    }
                },
            },
        )
        return app.lambda_handler({"reason": "test"}, context)


def recent() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=10)  # older than CAPTURE_SETTLE_SECONDS


def messages(setup) -> list[str]:
    sqs, url = setup["inbox"]
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["Message"] for m in found]


def findings(setup, result) -> dict:
    key = result["findings_uri"].split("/", 3)[3]
    body = setup["buckets"].s3.get_object(Bucket=setup["buckets"].artifacts, Key=key)["Body"]
    return json.loads(body.read())


def test_monitor_finds_no_drift_in_requests_like_the_validation_data(setup, context):
    buckets = setup["buckets"]
    put_captures(buckets.s3, buckets.artifacts, sample(setup["rng"], 40), recent())
    put_captures(buckets.s3, buckets.artifacts, sample(setup["rng"], 40, shift=3), recent(), "old")

    result = run(setup, context)

    assert (result["status"], result["requests"]) == ("no-drift", 40)  # the old model's ignored
    record = findings(setup, result)
    assert {f["check"] for f in record["findings"]} == {
        "embedding",
        "predictions",
        "confidence",
        "brightness",
        "contrast",
    }
    assert not any(f["drifted"] for f in record["findings"])
    assert messages(setup) == []
    html_key = result["findings_uri"].split("/", 3)[3].replace("findings.json", "findings.html")
    body = setup["buckets"].s3.get_object(Bucket=setup["buckets"].artifacts, Key=html_key)["Body"]
    assert "No drift on mlops-classifier" in body.read().decode()


def test_monitor_finds_drift_notifies_and_never_looks_at_the_same_requests_twice(setup, context):
    buckets = setup["buckets"]
    put_captures(buckets.s3, buckets.artifacts, sample(setup["rng"], 40, shift=3), recent())

    first = run(setup, context)
    again = run(setup, context)

    assert first["status"] == "drift"
    record = findings(setup, first)
    assert {f["check"] for f in record["findings"] if f["drifted"]} >= {"embedding", "brightness"}
    scores = [row["score"] for row in record["unusual"]]
    assert len(scores) == 6 and scores == sorted(scores, reverse=True)
    shown = find_request(
        buckets.s3,
        buckets.artifacts,
        record["unusual"][0]["capture_key"],
        record["unusual"][0]["event_id"],
    )
    assert Image.open(io.BytesIO(shown.request.data)).size == (8, 8)  # its image, to look at
    [text] = messages(setup)
    assert f"Drift on endpoint {ENDPOINT}" in text and "embedding" in text
    assert again["status"] == "insufficient"  # the window moved on: nothing new to judge
    assert setup["sfn"].list_executions(stateMachineArn=setup["machine"])["executions"] == []


def test_monitor_too_few_requests_wait_for_the_next_check(setup, context):
    buckets = setup["buckets"]
    put_captures(buckets.s3, buckets.artifacts, sample(setup["rng"], 12, shift=3), recent())

    first = run(setup, context)
    put_captures(buckets.s3, buckets.artifacts, sample(setup["rng"], 12, shift=3), recent())
    second = run(setup, context)

    assert (first["status"], first["requests"]) == ("insufficient", 12)
    assert (second["status"], second["requests"]) == ("drift", 24)


def test_monitor_retrain_starts_exactly_one_execution_within_the_interval(setup, context):
    buckets = setup["buckets"]
    retrain = {
        "RetrainOnDrift": "retrain",
        "RetrainMinIntervalHours": "24",
        "CaptureSettleSeconds": "0",
    }
    put_captures(buckets.s3, buckets.artifacts, sample(setup["rng"], 30, shift=3), recent())
    first = run(setup, context, **retrain)
    # Captures have whole seconds and a check ends at a whole second: the next batch is timed
    # where the first check stopped, and the second check ends a second later.
    stopped = datetime.fromisoformat(findings(setup, first)["window"][1])
    put_captures(buckets.s3, buckets.artifacts, sample(setup["rng"], 30, shift=3), stopped)
    time.sleep(1.1)
    second = run(setup, context, **retrain)

    [execution] = setup["sfn"].list_executions(stateMachineArn=setup["machine"])["executions"]
    assert first["retrain_execution"] == execution["name"]
    assert second["status"] == "drift" and second["retrain_execution"] is None
    assert "not started: the last retrain was" in findings(setup, second)["retrain"]
    started = json.loads(
        setup["sfn"].describe_execution(executionArn=execution["executionArn"])["input"]
    )
    assert (started["dataset"], started["manifest_key"]) == (
        "digits",
        "datasets/digits/manifest.json",
    )
    assert started["started_by"] == {"reason": "drift", "findings": first["findings_uri"]}
