"""Shared pieces of the reliability tests: a tiny real model, an endpoint without a pipeline.

The API tests need a real model behind the real endpoint, but not a whole pipeline run: train.py
runs one epoch on tiny digits as SageMaker would start it, its model directory is packed as
model.tar.gz into the artifacts bucket, and the endpoint is created with boto3 the way the
deploy_endpoint Lambda does (CreateModel, CreateEndpointConfig, CreateEndpoint).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mlops.local.process import stop_cloud_process
from mlops.target import Target
from tests.support.runs import TINY_TRAIN_ARGS, WARN_ONLY_RULES, tiny_run
from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"
TRAIN_TIMEOUT_S = 300
ENDPOINT_TIMEOUT_S = 180
MODEL_KEY = "reliability/model/model.tar.gz"


@dataclass
class Api:
    """The local API's predict URL and key."""

    url: str
    key: str

    @property
    def predict_url(self) -> str:
        return f"{self.url}/predict"

    def post(
        self,
        body: bytes,
        content_type: str | None = "image/png",
        key: str | None = "default",
        path: str = "/predict",
        method: str = "POST",
    ) -> requests.Response:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if key == "default":
            key = self.key
        if key is not None:
            headers["x-api-key"] = key
        return requests.request(method, f"{self.url}{path}", data=body, headers=headers, timeout=60)


def start_tiny_training(data_dir: Path, work: Path) -> subprocess.Popen[str]:
    """Start train.py the way SageMaker does (SM_* variables, `--name value` arguments)."""
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(TRAIN_SCRIPT)]
    for name, value in TINY_TRAIN_ARGS.items():
        command += [f"--{name}", value]
    env = {k: v for k, v in os.environ.items() if k != "SMDEBUG_CONFIG_FILE_PATH"}
    env.update(
        {
            "SM_CHANNEL_TRAIN": str(data_dir / "train"),
            "SM_CHANNEL_VALID": str(data_dir / "valid"),
            "SM_CHANNEL_TEST": str(data_dir / "test"),
            "SM_MODEL_DIR": str(work / "model"),
            "SM_OUTPUT_DATA_DIR": str(work / "output"),
        }
    )
    log = (work / "train.log").open("w")
    return subprocess.Popen(
        command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )


def finish_training(process: subprocess.Popen[str], work: Path) -> Path:
    """Wait for train.py; the model directory it wrote."""
    try:
        code = process.wait(timeout=TRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        raise
    log = (work / "train.log").read_text()
    assert code == 0, f"train.py exited {code}:\n{log[-3000:]}"
    return work / "model"


def stop_all(training: subprocess.Popen[str], cloud: subprocess.Popen | None) -> None:
    """Stop what a fixture started, also after a failure: train.py, then the local cloud."""
    if training.poll() is None:
        training.kill()
        training.wait(timeout=30)
    if cloud is not None:
        stop_cloud_process(cloud)


def model_archive(model_dir: Path) -> bytes:
    """model.tar.gz as SageMaker uploads it: the model directory's files at the archive root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=str(path.relative_to(model_dir)))
    return buffer.getvalue()


def deploy_model(target: Target, parameters: dict[str, Any], archive: bytes, name: str) -> str:
    """Upload the archive and point the project's endpoint at it; returns the endpoint name."""
    s3 = target.client("s3")
    key = MODEL_KEY.replace("model/", f"{name}/")
    s3.put_object(Bucket=target.artifacts_bucket, Key=key, Body=archive)
    sagemaker = target.client("sagemaker")
    sagemaker.create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": parameters["InferenceImage"],
            "ModelDataUrl": f"s3://{target.artifacts_bucket}/{key}",
            "Environment": {
                "SAGEMAKER_PROGRAM": "inference.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
            },
        },
        ExecutionRoleArn=target.output("SageMakerRoleArn"),
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    endpoint = target.output("EndpointName")
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=name)
    described = wait_for(
        lambda: sagemaker.describe_endpoint(EndpointName=endpoint),
        ENDPOINT_TIMEOUT_S,
        f"endpoint {endpoint} to leave Creating/Updating",
        done=lambda d: d["EndpointStatus"] not in {"Creating", "Updating"},
        interval=0.5,
    )
    assert described["EndpointStatus"] == "InService", described
    return endpoint


def assert_clean_error(response: requests.Response, status: int | None = None) -> dict[str, Any]:
    """A 4xx JSON error with a message, no 5xx, no traceback; returns the parsed body."""
    text = response.text
    assert response.status_code < 500, f"{response.status_code}: {text[:500]}"
    assert response.status_code >= 400, f"{response.status_code}: {text[:500]}"
    if status is not None:
        assert response.status_code == status, f"{response.status_code}: {text[:500]}"
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    document = response.json()
    assert isinstance(document, dict) and document.get("message"), document
    return document


# -- whole pipelines on the local cloud -------------------------------------------------------
# tiny trials; every model approved
FAST_PIPELINE_PARAMETERS = tiny_run(max_jobs=2, epochs=2, GatePolicy=WARN_ONLY_RULES)


def subscribe_queue(target: Target) -> str:
    """An SQS queue subscribed to the pipeline's topic: the notifications a person would get."""
    sqs = target.client("sqs")
    queue_url = sqs.create_queue(QueueName="reliability-notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    target.client("sns").subscribe(
        TopicArn=target.output("SnsTopicArn"),
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "false"},
    )
    return queue_url
