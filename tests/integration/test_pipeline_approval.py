"""ApprovalMode manual through the real state machine: the run waits for a person's decision.

RegisterModel (scripted) registers a version PendingManualApproval in moto's registry;
RequestApproval (scripted like the function: the token goes to approval_request.json) lets
the run wait; `mlops approve` / `mlops reject` (mlops.models.decide, unscripted) update the
version and hand the decision back; a short ApprovalTimeoutSeconds ends the run on its own.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from pipeline_common.models import ApprovalRequested
from pipeline_report.target import Target

from mlops.models import decide, deploy_version
from mlops.runs import CliError
from tests.integration import pipeline_harness
from tests.integration.pipeline_harness import Pipeline
from tests.support.waiting import wait_for

GROUP = "mlops-digits-models"
ARTIFACTS = "mlops-artifacts-123456789012-us-east-1"
METADATA = {"execution": "run-1", "dataset": "digits", "training-job": "mlops-digits-retrain-1"}


@pytest.fixture
def short_approval_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deploy the state machine with ApprovalTimeoutSeconds=1 (before `pipeline` deploys it)."""
    monkeypatch.setitem(pipeline_harness.PARAMETERS, "ApprovalTimeoutSeconds", "1")


@pytest.fixture
def waiting(pipeline: Pipeline) -> dict[str, Any]:
    """A pending version in moto's registry, and scripts that register it and wait for it."""
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties=METADATA,
        InferenceSpecification={
            "Containers": [{"Image": "inference-image", "ModelDataUrl": "s3://a/model.tar.gz"}],
            "SupportedContentTypes": ["image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=ARTIFACTS)
    tokens: list[str] = []

    def request_approval(payload: dict[str, Any]) -> dict[str, Any]:
        record = ApprovalRequested(
            model_package_arn=payload["model_package_arn"],
            task_token=payload["task_token"],
            requested_at="now",
            deadline="later",
        ).model_dump()
        key = f"runs/{payload['execution_name']}/approval_request.json"
        s3.put_object(Bucket=ARTIFACTS, Key=key, Body=json.dumps(record).encode())
        tokens.append(payload["task_token"])
        return record

    pipeline.scripts["RegisterModelFunction"] = lambda payload: {
        "model_package_group_name": GROUP,
        "model_package_arn": arn,
        "model_package_version": 1,
        "approval_status": "PendingManualApproval",
    }
    pipeline.scripts["RequestApprovalFunction"] = request_approval
    target = Target(
        name="moto",
        session=boto3.Session(),
        outputs={
            "ProjectName": "mlops",
            "ArtifactsBucketName": ARTIFACTS,
            "StateMachineArn": pipeline.state_machine_arn,
        },
    )
    return {"arn": arn, "tokens": tokens, "target": target, "sagemaker": sagemaker}


def wait_for_the_request(waiting: dict[str, Any]) -> None:
    wait_for(lambda: waiting["tokens"], 20, "RequestApproval to be invoked")


def status_of(waiting: dict[str, Any]) -> str:
    package = waiting["sagemaker"].describe_model_package(ModelPackageName=waiting["arn"])
    return package["ModelApprovalStatus"]


def test_manual_approval_waits_then_mlops_approve_deploys(pipeline, waiting):
    execution = pipeline.start()
    wait_for_the_request(waiting)
    assert pipeline.invoked("DeployEndpointFunction") == []  # it waits

    decision = decide(waiting["target"], "digits", 1, True, "looked at the report")
    done = pipeline.wait(execution)

    assert done.status == "SUCCEEDED", done.cause
    assert decision.approved and "looked at the report" in decision.summary
    assert status_of(waiting) == "Approved"
    [request] = pipeline.invoked("RequestApprovalFunction")
    assert (request["model_package_version"], request["timeout_seconds"]) == (1, 604800)
    [deploy] = pipeline.invoked("DeployEndpointFunction")
    assert deploy["model_package_arn"] == waiting["arn"]
    states = done.states
    assert states.index("WaitForApproval") < states.index("DeployEndpoint")


def test_manual_rejection_ends_the_run_model_rejected_with_the_reason(pipeline, waiting):
    execution = pipeline.start()
    wait_for_the_request(waiting)

    decide(waiting["target"], "digits", 1, False, "wrong classes in the test split")
    done = pipeline.wait(execution)

    assert done.status == "FAILED"
    assert done.error == "ModelRejected"
    assert "wrong classes in the test split" in done.cause
    assert status_of(waiting) == "Rejected"
    assert pipeline.invoked("DeployEndpointFunction") == []
    assert done.states[-6:] == [
        "ApplyDecision",
        "IsModelApproved",
        "NotifyRejection",
        "WriteReport",
        "Outcome",
        "ModelRejected",
    ]
    assert "wrong classes" in done.published_messages()[0]


def test_a_second_decision_is_refused_and_changes_nothing(pipeline, waiting):
    execution = pipeline.start()
    wait_for_the_request(waiting)
    decide(waiting["target"], "digits", 1, True, None)
    pipeline.wait(execution)

    with pytest.raises(CliError, match="is Approved, not waiting"):
        decide(waiting["target"], "digits", 1, False, "changed my mind")
    with pytest.raises(CliError, match="has no version 9"):
        decide(waiting["target"], "digits", 9, True, None)
    assert status_of(waiting) == "Approved"


def test_no_decision_within_the_timeout_ends_the_run_approval_timed_out(
    short_approval_timeout, pipeline, waiting
):
    done = pipeline.run()

    assert done.status == "FAILED"
    assert done.error == "ApprovalTimedOut"
    assert waiting["arn"] in done.cause and "within 1 s" in done.cause
    assert pipeline.invoked("DeployEndpointFunction") == []
    assert status_of(waiting) == "PendingManualApproval"  # undecided, and undeployed
    # A decision after the run ended is refused and leaves the version as it was.
    with pytest.raises(CliError, match="has ended"):
        decide(waiting["target"], "digits", 1, True, None)
    assert status_of(waiting) == "PendingManualApproval"


def test_mlops_deploy_sends_an_approved_version_through_the_deploy_states_only(pipeline, waiting):
    first = pipeline.start()
    wait_for_the_request(waiting)
    decide(waiting["target"], "digits", 1, True, None)
    pipeline.wait(first)
    # moto's UpdateModelPackage drops the fields it was not given (AWS keeps them, and so
    # does the local SageMaker): put back what RegisterModel wrote.
    waiting["sagemaker"].update_model_package(
        ModelPackageArn=waiting["arn"],
        ModelApprovalStatus="Approved",
        CustomerMetadataProperties=METADATA,
    )
    sample = {"key": "datasets/digits/test/001.one/7.png", "class_index": 1, "class_name": "one"}
    boto3.client("s3").put_object(
        Bucket=ARTIFACTS,
        Key="runs/run-1/validation.json",
        Body=json.dumps({"smoke_test_images": [sample]}).encode(),
    )
    before = len(pipeline.calls)

    execution = deploy_version(waiting["target"], "digits", 1)
    done = pipeline.wait(execution)

    assert done.status == "SUCCEEDED", done.cause
    assert execution.rsplit(":", 1)[-1].startswith("deploy-digits-v1-")
    assert done.states[:5] == [
        "CheckInput",
        "Configure",
        "IsPromotion",
        "DeployEndpoint",
        "IsSuperseded",
    ]
    called = [name for name, _ in pipeline.calls[before:]]
    assert set(called) == {
        "DeployEndpointFunction",
        "CheckStatusFunction",
        "SmokeTestFunction",
        "WriteReportFunction",
    }
    deploy = pipeline.invoked("DeployEndpointFunction")[-1]
    assert (deploy["model_package_arn"], deploy["dataset"]) == (waiting["arn"], "digits")
    assert pipeline.invoked("SmokeTestFunction")[-1]["sample_image"] == sample


def test_mlops_deploy_refuses_a_version_that_is_not_approved(pipeline, waiting):
    with pytest.raises(CliError, match="is PendingManualApproval: only Approved versions"):
        deploy_version(waiting["target"], "digits", 1)


def test_a_hand_written_promotion_of_a_rejected_version_is_refused_by_the_state_machine(pipeline):
    document = {
        "dataset": "digits",
        "promote": {"model_package_arn": "arn:aws:sagemaker:us-east-1:1:model-package/g/1"},
        "validated": {"name": "digits", "sample_image": {}},
        "training": {"job_name": "t"},
        "gate": {"approved": True, "summary": "by hand"},
        "registered": {"approval_status": "Rejected"},
    }
    done = pipeline.run(document)

    assert (done.status, done.error) == ("FAILED", "InvalidExecutionInput")
    assert pipeline.calls == []
