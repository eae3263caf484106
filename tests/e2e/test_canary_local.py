"""DeploymentStrategy Canary on the local cloud: real models, the real API, real alarms.

A pipeline run deploys version 1 of a digits model. Two more versions are registered from its
artifact: version 2 is the same network under another training job's name (a healthy
replacement), version 3 has its last layer scaled down to a hundredth, so it predicts the same
classes with almost no confidence, which no rule, accuracy gate or smoke test notices. Both are
put on the endpoint with `mlops deploy` while requests flow through the HTTP API:

- version 2: about CanaryTrafficPercent of the answers come from it during the canary step,
  then it takes everything (promoted);
- version 3: the model-quality alarm, armed relative to version 2's recorded answers, rolls
  the update back during the canary step; the run fails naming the alarm, version 2 serves.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import torch
from pipeline_common.records import DEPLOYMENT, record_key
from pipeline_common.registry import TRAINING_JOB_KEY

from mlops.models import deploy_version, find_version, list_versions
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from tests.support.runs import WARN_ONLY_RULES, local_cloud, tiny_run

CANARY_PERCENT = 30
PARAMETERS = tiny_run(
    max_jobs=1,
    epochs=6,
    GatePolicy=WARN_ONLY_RULES,
    DeploymentStrategy="Canary",
    CanaryTrafficPercent=str(CANARY_PERCENT),
    TrafficShiftWaitSeconds="20",
    DeploymentBakeSeconds="0",
    LowConfidenceThreshold="0.3",
    ApiRateLimit="10000",
    ApiBurstLimit="5000",
)
DATASET = "canary"
TIMEOUT_S = 900

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with local_cloud(tmp_path_factory.mktemp("canary-cloud"), PARAMETERS) as target:
        yield target


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data") / DATASET
    write_digits(directory, max_per_class=30, seed=5)
    return directory


def post(target, image: bytes) -> requests.Response:
    return requests.post(
        f"{target.api_url}/predict",
        data=image,
        headers={"Content-Type": "image/png", "x-api-key": target.api_key},
        timeout=30,
    )


@dataclass
class Answer:
    at: float
    model: str  # "" for a failed request


class Senders:
    """Threads posting the held-back images in turn, noting which model answered each."""

    def __init__(self, target, images: list[bytes], threads: int = 4) -> None:
        self.target, self.images = target, images
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.send, args=(i,)) for i in range(threads)]
        self.started = time.monotonic()

    def __enter__(self) -> Senders:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def send(self, offset: int) -> None:
        index = offset
        while not self.stop.is_set():
            response = post(self.target, self.images[index % len(self.images)])
            model = response.json().get("model", "") if response.status_code == 200 else ""
            self.answers.append(Answer(time.monotonic() - self.started, model))
            index += 1


def canary_window(answers: list[Answer], old: str, new: str) -> list[Answer]:
    """The answers from the new model's first to the old model's last: the canary step."""
    ordered = sorted(answers, key=lambda a: a.at)
    first_new = next(i for i, a in enumerate(ordered) if a.model == new)
    last_old = max(i for i, a in enumerate(ordered) if a.model == old)
    return ordered[first_new : last_old + 1]


def repacked(model_tar: bytes, training_job: str, last_layer_scale: float = 1.0) -> bytes:
    """The artifact with another training job's name and its last layer scaled (argmax kept)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(model_tar)) as source,
        tarfile.open(fileobj=out, mode="w:gz") as target,
    ):
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("model_info.json"):
                info = json.loads(data)
                data = json.dumps({**info, "training_job": training_job}).encode()
            elif member.name.endswith("model.pth"):
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                for key in ("fc.weight", "fc.bias"):
                    state[key] = state[key] * last_layer_scale
                buffer = io.BytesIO()
                torch.save(state, buffer)
                data = buffer.getvalue()
            if data is not None:
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def register_variant(target, package: dict, training_job: str, scale: float = 1.0) -> int:
    """A new Approved version of the package's group serving the repacked artifact."""
    s3, sagemaker = target.client("s3"), target.client("sagemaker")
    [container] = package["InferenceSpecification"]["Containers"]
    bucket, key = container["ModelDataUrl"][len("s3://") :].split("/", 1)
    artifact = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    variant_key = f"tests/{training_job}/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=variant_key, Body=repacked(artifact, training_job, scale))
    specification = package["InferenceSpecification"]
    created = sagemaker.create_model_package(
        ModelPackageGroupName=package["ModelPackageGroupName"],
        ModelPackageDescription=f"{training_job}: version 1's network, last layer x {scale}",
        InferenceSpecification={
            "Containers": [
                {
                    "Image": container["Image"],
                    "ModelDataUrl": f"s3://{bucket}/{variant_key}",
                    "Environment": container.get("Environment", {}),
                }
            ],
            "SupportedContentTypes": specification["SupportedContentTypes"],
            "SupportedResponseMIMETypes": specification["SupportedResponseMIMETypes"],
        },
        ModelApprovalStatus="Approved",
        CustomerMetadataProperties={
            **package["CustomerMetadataProperties"],
            TRAINING_JOB_KEY: training_job,
        },
    )
    return int(created["ModelPackageArn"].rsplit("/", 1)[1])


def deployment_record(target, execution_arn: str) -> dict:
    key = record_key(execution_arn.rsplit(":", 1)[1], DEPLOYMENT)
    body = target.client("s3").get_object(Bucket=target.artifacts_bucket, Key=key)["Body"]
    return json.loads(body.read())


def deploy_under_load(target, version: int, images: list[bytes]):
    with Senders(target, images) as senders:
        arn = deploy_version(target, DATASET, version)
        view = follow(target.client("stepfunctions"), arn, poll_s=1.0, timeout_s=TIMEOUT_S)
        time.sleep(2)  # a few answers after the run's end: who serves now
    return arn, view, senders.answers


def test_canary_promotes_a_healthy_model_and_rolls_back_a_low_confidence_one(cloud, digits):
    target = cloud
    sfn = target.client("stepfunctions")
    execution = upload_dataset(target, digits, DATASET)
    view = follow(sfn, execution["executionArn"], poll_s=1.0, timeout_s=TIMEOUT_S)
    assert view.status == "SUCCEEDED", f"{view.error}: {view.cause}"

    [first] = list_versions(target, DATASET)
    package = find_version(target.client("sagemaker"), first.group, first.version)
    first_job = package["CustomerMetadataProperties"][TRAINING_JOB_KEY]
    healthy = register_variant(target, package, "canary-healthy-b")
    unsure = register_variant(target, package, "canary-unsure-c", scale=0.01)
    images = [p.read_bytes() for p in sorted((digits / "test").glob("*/*.png"))]
    baseline = [post(target, image).json() for image in images]  # version 1's recorded answers
    assert {answer["model"] for answer in baseline} == {first_job}

    arn, view, answers = deploy_under_load(target, healthy, images)

    assert view.status == "SUCCEEDED", f"{view.error}: {view.cause}"
    assert "" not in {a.model for a in answers}  # no request failed
    window = canary_window(answers, first_job, "canary-healthy-b")
    share = sum(a.model == "canary-healthy-b" for a in window) / len(window)
    print(f"canary step: {len(window)} answers, {share:.1%} from the new model")
    assert len(window) >= 50 and abs(share - CANARY_PERCENT / 100) <= 0.12, share
    assert sorted(answers, key=lambda a: a.at)[-1].model == "canary-healthy-b"  # promoted
    guard = deployment_record(target, arn)["quality_alarm"]
    assert guard["armed"] is True and guard["old_model"] == first_job, guard
    serving = {v.version for v in list_versions(target, DATASET) if v.serving}
    assert serving == {healthy}

    arn, view, answers = deploy_under_load(target, unsure, images)

    assert (view.status, view.error) == ("FAILED", "EndpointFailed"), view.cause
    assert "model-quality" in view.cause, view.cause
    models = [a.model for a in sorted(answers, key=lambda a: a.at)]
    assert "canary-unsure-c" in models  # it got its canary share ...
    assert models[-1] == "canary-healthy-b"  # ... and the update was rolled back
    assert "" not in models
    serving = {v.version for v in list_versions(target, DATASET) if v.serving}
    assert serving == {healthy}
