"""A rule evaluation that ends in Error, on the local cloud (slow).

With DebuggerAvailable=true the retrain also asks for the Debugger rules as SageMaker rule
evaluations (the local SageMaker runs them with training/rules.py). The fault
``rule_error=/VanishingGradient`` makes that evaluation end in Error, as on AWS when a rule's
processing job fails. The gate gives no verdict a pass: an Error on a blocking rule blocks,
the run ends in ModelRejected with the rule named in the Cause, the team is notified, and the
model already serving is left alone and keeps answering.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlops.local.process import start_cloud_process
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import local_target

from .helpers import (
    FAST_PIPELINE_PARAMETERS,
    Api,
    deploy_model,
    finish_training,
    model_archive,
    start_tiny_training,
    stop_all,
    subscribe_queue,
)

PARAMETERS = {
    **FAST_PIPELINE_PARAMETERS,
    "MaxJobs": "1",
    "DebuggerAvailable": "true",
    "GatePolicy": (
        "block:VanishingGradient;warn:LossNotDecreasing,PoorWeightInitialization,Overfit,"
        "Overtraining,LowGPUUtilization,ProfilerReport"
    ),
}
FAULTS = "rule_error=/VanishingGradient"
SERVING_CONFIG = "mlops-rules-serving"
EXECUTION_TIMEOUT_S = 900

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def rejected(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(target, api, digits, the execution, its notifications) with a model serving before."""
    digits = tmp_path_factory.mktemp("rules-data") / "digits"
    write_digits(digits, max_per_class=10, size=16, seed=4)
    work = tmp_path_factory.mktemp("rules-train")
    training = start_tiny_training(digits, work)
    root = tmp_path_factory.mktemp("rules-cloud")
    process = None
    try:
        process, info = start_cloud_process(
            root, parameters=PARAMETERS, extra_env={"MLOPS_LOCAL_FAULTS": FAULTS}
        )
        target = local_target(root)
        archive = model_archive(finish_training(training, work))
        deploy_model(target, info.deployment["parameters"], archive, SERVING_CONFIG)
        queue_url = subscribe_queue(target)
        execution = upload_dataset(target, digits, "ruleerr")
        view = follow(
            target.client("stepfunctions"),
            execution["executionArn"],
            poll_s=2.0,
            timeout_s=EXECUTION_TIMEOUT_S,
        )
        sqs = target.client("sqs")
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5
        ).get("Messages", [])
        notes = [json.loads(m["Body"]).get("Message", "") for m in messages]
        yield target, Api(url=info.api_url, key=info.api_key), digits, view, notes
    finally:
        stop_all(training, process)


def gate_record(target: Any, execution: str) -> dict[str, Any]:
    key = f"runs/{execution}/gate.json"
    body = target.client("s3").get_object(Bucket=target.artifacts_bucket, Key=key)["Body"]
    return json.loads(body.read())


def test_rule_error_on_a_blocking_rule_rejects_the_model(rejected: Any) -> None:
    target, _, _, view, _ = rejected

    assert (view.status, view.error) == ("FAILED", "ModelRejected"), view.cause
    gate = gate_record(target, view.name)
    errors = [
        f
        for f in gate["findings"]
        if f["status"] == "Error" and f["source"] == "debugger" and f["severity"] == "block"
    ]
    assert [f["check"] for f in errors] == ["VanishingGradient"], gate["findings"]
    assert "rule evaluation Error" in errors[0]["details"]
    assert "injected fault rule_error" in errors[0]["details"]
    assert "VanishingGradient" in (view.cause or "")


def test_rule_error_is_notified_and_the_serving_model_stays(rejected: Any) -> None:
    target, api, digits, view, notes = rejected
    sagemaker = target.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=target.output("EndpointName"))

    assert any(view.name in note and "not deployed" in note for note in notes), notes
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == (
        "InService",
        SERVING_CONFIG,
    )
    image = sorted(Path(digits, "test", "002.two").iterdir())[0].read_bytes()
    assert api.post(image).status_code == 200
