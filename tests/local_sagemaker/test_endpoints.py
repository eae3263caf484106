"""Endpoints on the local SageMaker: model servers, invocations, blue/green updates."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from mlops.local.sagemaker.processes import live_process_count
from tests.support.waiting import wait_for

from .helpers import (
    IMAGE,
    REGION,
    client_config,
    invoke,
    make_config,
    wait_endpoint,
)

pytestmark = pytest.mark.timeout(120)


def test_endpoint_create_invoke_describe_delete(sm: Any, runtime: Any, s3: Any) -> None:
    config = make_config(sm, s3, "v1")
    described_config = sm.describe_endpoint_config(EndpointConfigName=config)
    assert described_config["ProductionVariants"][0]["ModelName"] == "model-v1"
    arn = sm.create_endpoint(EndpointName="ep-basic", EndpointConfigName=config)["EndpointArn"]
    assert arn.endswith(":endpoint/ep-basic")
    assert sm.describe_endpoint(EndpointName="ep-basic")["EndpointStatus"] == "Creating"

    endpoint = wait_endpoint(sm, "ep-basic")

    assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")
    variant = endpoint["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["CurrentInstanceCount"] == 1 and variant["DesiredInstanceCount"] == 1
    assert variant["DeployedImages"][0]["SpecifiedImage"] == IMAGE
    answer = invoke(runtime, "ep-basic", {"x": 1})
    assert answer == {
        "body": {"version": "v1", "echo": {"x": 1}},
        "content_type": "application/json",
        "variant": "AllTraffic",
    }
    listed = sm.list_endpoints(NameContains="ep-basic")["Endpoints"]
    assert [e["EndpointStatus"] for e in listed] == ["InService"]

    sm.delete_endpoint(EndpointName="ep-basic")
    with pytest.raises(ClientError) as raised:
        sm.describe_endpoint(EndpointName="ep-basic")
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    wait_for(live_process_count, 20, "no model server left", done=lambda count: count == 0)


def test_container_errors_map_to_model_error(sm: Any, runtime: Any, s3: Any) -> None:
    """What the real inference toolkit answers is what InvokeEndpoint reports: the status of
    its own error type, or 500 for any other exception, each with message plus traceback."""
    sm.create_endpoint(EndpointName="ep-errors", EndpointConfigName=make_config(sm, s3, "e1"))
    assert wait_endpoint(sm, "ep-errors")["EndpointStatus"] == "InService"

    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint(EndpointName="ep-errors", Body=b"abc", ContentType="text/plain")
    error = raised.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 415
    message, trace = error["OriginalMessage"].split("\n", 1)
    assert message == "unsupported content type text/plain"
    assert trace.startswith("Traceback (most recent call last):")
    assert error["Error"]["Message"].startswith("Received client error (415) from primary")
    assert "/aws/sagemaker/Endpoints/ep-errors" in error["LogStreamArn"]

    with pytest.raises(ClientError) as raised:
        invoke(runtime, "ep-errors", {"boom": True})
    error = raised.value.response
    assert error["OriginalStatusCode"] == 500
    assert error["Error"]["Message"].startswith("Received server error (500) from primary")
    assert error["OriginalMessage"].startswith("kaboom: a bug in predict_fn\nTraceback")
    assert "RuntimeError" in error["OriginalMessage"]


def test_custom_attributes_reach_the_container_verbatim(sm: Any, runtime: Any, s3: Any) -> None:
    """InvokeEndpoint's CustomAttributes go to the container as SageMaker sends them: the
    request header botocore's model names, handed to inference.py by the toolkit's context."""
    sm.create_endpoint(EndpointName="ep-attributes", EndpointConfigName=make_config(sm, s3, "a1"))
    assert wait_endpoint(sm, "ep-attributes")["EndpointStatus"] == "InService"
    asked = {"EndpointName": "ep-attributes", "Body": b"{}", "ContentType": "application/json"}

    with_attributes = runtime.invoke_endpoint(**asked, CustomAttributes="explain=true; trace=a1")
    without = runtime.invoke_endpoint(**asked)

    assert json.loads(with_attributes["Body"].read())["custom_attributes"] == (
        "explain=true; trace=a1"
    )
    assert json.loads(without["Body"].read()) == {"version": "a1", "echo": {}}
    with pytest.raises(ClientError) as raised:  # botocore's model: at most 1024 characters
        runtime.invoke_endpoint(**asked, CustomAttributes="x" * 1025)
    assert raised.value.response["Error"]["Code"] in ("ValidationError", "ParamValidation")


def test_invoke_of_unknown_endpoint_is_a_validation_error(runtime: Any) -> None:
    with pytest.raises(ClientError) as raised:
        invoke(runtime, "ep-nope", {"x": 1})
    assert raised.value.response["Error"] == {
        "Code": "ValidationError",
        "Message": "Endpoint ep-nope of account 123456789012 not found.",
    }


def test_update_switches_models_without_a_failed_request(
    sm: Any, runtime: Any, s3: Any, service: Any
) -> None:
    sm.create_endpoint(EndpointName="ep-update", EndpointConfigName=make_config(sm, s3, "u1"))
    assert wait_endpoint(sm, "ep-update")["EndpointStatus"] == "InService"
    config_v2 = make_config(sm, s3, "u2", load_seconds=1.0)

    stop = threading.Event()
    # One list per sender: across two threads, completion order is not request order.
    per_sender: list[list[str]] = [[], []]
    failures: list[str] = []

    def send_continuously(versions: list[str]) -> None:
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=service.url,
            region_name=REGION,
            config=client_config(),
        )
        while not stop.is_set():
            try:
                versions.append(
                    invoke(client, "ep-update", {"n": len(versions)})["body"]["version"]
                )
            except ClientError as error:
                failures.append(str(error))
            time.sleep(0.01)

    senders = [threading.Thread(target=send_continuously, args=(v,)) for v in per_sender]
    for sender in senders:
        sender.start()
    try:
        wait_for(lambda: all(per_sender), 20, "both senders answered by u1")
        sm.update_endpoint(EndpointName="ep-update", EndpointConfigName=config_v2)
        updating = sm.describe_endpoint(EndpointName="ep-update")
        assert updating["EndpointStatus"] == "Updating"
        assert updating["PendingDeploymentSummary"]["EndpointConfigName"] == config_v2
        assert updating["EndpointConfigName"] == "config-u1"
        with pytest.raises(ClientError) as raised:
            sm.update_endpoint(EndpointName="ep-update", EndpointConfigName=config_v2)
        assert raised.value.response["Error"]["Message"] == (
            "Cannot update in-progress endpoint "
            '"arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep-update".'
        )
        endpoint = wait_endpoint(sm, "ep-update")
        answered = [len(versions) for versions in per_sender]
        wait_for(
            lambda: all(len(v) >= n + 3 for v, n in zip(per_sender, answered, strict=True)),
            20,
            "three more answers to each sender after the update",
        )
    finally:
        stop.set()
        for sender in senders:
            sender.join()

    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == config_v2
    assert "PendingDeploymentSummary" not in endpoint
    assert failures == []
    for versions in per_sender:
        assert versions[0] == "u1" and versions[-1] == "u2"
        switched = versions.index("u2")
        assert set(versions[switched:]) == {"u2"}, "traffic went back to the old model"
    assert sum(len(versions) for versions in per_sender) > 10


def test_failed_update_rolls_back_and_keeps_serving(sm: Any, runtime: Any, s3: Any) -> None:
    sm.create_endpoint(EndpointName="ep-rollback", EndpointConfigName=make_config(sm, s3, "r1"))
    assert wait_endpoint(sm, "ep-rollback")["EndpointStatus"] == "InService"
    broken = make_config(sm, s3, "r2", crash_on_load=True)
    sm.update_endpoint(EndpointName="ep-rollback", EndpointConfigName=broken)
    endpoint = wait_endpoint(sm, "ep-rollback")
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == "config-r1"
    assert "rolled back" in endpoint["FailureReason"]
    assert "RuntimeError: model weights are corrupt" in endpoint["FailureReason"]
    assert invoke(runtime, "ep-rollback", {"x": 2})["body"]["version"] == "r1"


def test_endpoint_that_never_comes_up_is_failed(sm: Any, runtime: Any, s3: Any) -> None:
    sm.create_endpoint(
        EndpointName="ep-broken", EndpointConfigName=make_config(sm, s3, "b1", crash_on_load=True)
    )
    endpoint = wait_endpoint(sm, "ep-broken")
    assert endpoint["EndpointStatus"] == "Failed"
    assert endpoint["FailureReason"].startswith(
        "The primary container for production variant AllTraffic did not pass the ping health check"
    )
    assert "model weights are corrupt" in endpoint["FailureReason"]
    with pytest.raises(ClientError) as raised:
        invoke(runtime, "ep-broken", {"x": 1})
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as raised:
        sm.update_endpoint(EndpointName="ep-broken", EndpointConfigName="config-b1")
    assert "Cannot update failed endpoint" in raised.value.response["Error"]["Message"]


def test_endpoint_start_fault_fails_the_endpoint(
    sm: Any, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LOCAL_FAULTS", "endpoint_start_fail=ep-fault")
    sm.create_endpoint(EndpointName="ep-fault", EndpointConfigName=make_config(sm, s3, "f1"))
    endpoint = wait_endpoint(sm, "ep-fault")
    assert endpoint["EndpointStatus"] == "Failed"
    assert "injected fault endpoint_start_fail" in endpoint["FailureReason"]


def test_endpoint_config_with_unknown_model_is_refused(sm: Any) -> None:
    with pytest.raises(ClientError) as raised:
        sm.create_endpoint_config(
            EndpointConfigName="config-missing",
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "no-such-model"}],
        )
    assert raised.value.response["Error"]["Message"] == (
        'Could not find model "arn:aws:sagemaker:us-east-1:123456789012:model/no-such-model".'
    )


def test_duplicate_endpoint_is_refused(sm: Any, s3: Any) -> None:
    config = make_config(sm, s3, "d1")
    sm.create_endpoint(EndpointName="ep-dup", EndpointConfigName=config)
    with pytest.raises(ClientError) as raised:
        sm.create_endpoint(EndpointName="ep-dup", EndpointConfigName=config)
    assert raised.value.response["Error"]["Message"].startswith(
        'Cannot create already existing endpoint "arn:aws:sagemaker:'
    )
    wait_endpoint(sm, "ep-dup")


def test_blue_green_baking_keeps_the_endpoint_updating_on_the_new_model(
    sm: Any, runtime: Any, s3: Any
) -> None:
    sm.create_endpoint(EndpointName="ep-bake", EndpointConfigName=make_config(sm, s3, "b1"))
    assert wait_endpoint(sm, "ep-bake")["EndpointStatus"] == "InService"
    sm.update_endpoint(
        EndpointName="ep-bake",
        EndpointConfigName=make_config(sm, s3, "b2"),
        DeploymentConfig={
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                "TerminationWaitInSeconds": 3,
            }
        },
    )
    baking = wait_for(
        lambda: (sm.describe_endpoint(EndpointName="ep-bake"), invoke(runtime, "ep-bake", {})),
        60,
        "ep-bake to answer from b2",
        done=lambda pair: pair[1]["body"]["version"] == "b2",
    )
    started = time.monotonic()

    assert baking[0]["EndpointStatus"] == "Updating"  # the old fleet is still kept
    with pytest.raises(ClientError, match="in-progress"):
        sm.update_endpoint(EndpointName="ep-bake", EndpointConfigName="config-b1")
    done = wait_endpoint(sm, "ep-bake")
    assert (done["EndpointStatus"], done["EndpointConfigName"]) == ("InService", "config-b2")
    assert time.monotonic() - started > 1.0
