"""register_model: every gated retrain becomes a version of its data set's model package group.

moto plays the registry (groups, versions, approval statuses); DescribeTrainingJob is answered
with a stubbed job, since moto's training jobs have no model artifacts.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from pipeline_common import registry

from tests.functions.handler_helpers import training_job

EXECUTION = "digits-0123456789abcdef"
TRAINING = "mlops-digits-retrain-1a2b3c4d"
TUNING = "mlops-digits-tune-1a2b3c4d"
EXECUTION_ARN = f"arn:aws:states:us-east-1:123456789012:execution:mlops-pipeline:{EXECUTION}"
GROUP = "mlops-digits-models"


@pytest.fixture
def app(load_handler, buckets):
    module = load_handler("register_model")
    model_uri = f"s3://{buckets.artifacts}/runs/{EXECUTION}/training/{TRAINING}/model.tar.gz"
    job = training_job(TRAINING, ModelArtifacts={"S3ModelArtifacts": model_uri})

    def describe_training_job(**_: Any) -> Any:
        # Answered here; every other call goes on to moto.
        return AWSResponse("https://sagemaker", 200, {}, None), job

    module.sagemaker.meta.events.register(
        "before-call.sagemaker.DescribeTrainingJob", describe_training_job
    )
    return module


def gate(approved: bool = True, findings: int = 2, details: str = "fine") -> dict[str, Any]:
    return {
        "approved": approved,
        "summary": "approved"
        if approved
        else "rejected by 1 blocking finding(s): LossNotDecreasing",
        "test_accuracy": 0.9888,
        "baseline_accuracy": None,
        "blocking": [] if approved else ["LossNotDecreasing"],
        "findings": [
            {
                "check": f"Rule{i}",
                "source": "job",
                "status": "NoIssuesFound",
                "severity": "pass",
                "details": details,
            }
            for i in range(findings)
        ],
        "report_uri": f"s3://artifacts/runs/{EXECUTION}/gate.json",
    }


def event(execution: str = EXECUTION, **gate_args: Any) -> dict[str, Any]:
    return {
        "execution_name": execution,
        "execution_arn": EXECUTION_ARN,
        "dataset": "digits",
        "manifest_version": "v:3HL4kqtJ",
        "tuning_job_name": TUNING,
        "training_job_name": TRAINING,
        "gate": gate(**gate_args),
    }


def test_register_model_creates_the_group_and_an_approved_version(app, buckets, context):
    result = app.lambda_handler(event(), context)

    assert result["model_package_group_name"] == GROUP
    assert result["approval_status"] == "Approved"
    sm = boto3.client("sagemaker")
    assert sm.describe_model_package_group(ModelPackageGroupName=GROUP)["ModelPackageGroupName"]
    package = sm.describe_model_package(ModelPackageName=result["model_package_arn"])
    assert package["ModelApprovalStatus"] == "Approved"
    [container] = package["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"].endswith(f"{TRAINING}/model.tar.gz")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert "image/png" in package["InferenceSpecification"]["SupportedContentTypes"]
    metadata = package["CustomerMetadataProperties"]
    assert metadata[registry.TEST_ACCURACY_KEY] == "0.9888"
    assert metadata[registry.MANIFEST_VERSION_KEY] == "v:3HL4kqtJ"
    assert metadata[registry.TUNING_JOB_KEY] == TUNING
    assert metadata["finding:job:Rule0"] == "NoIssuesFound (pass): fine"
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith("gate.json")
    assert package["MetadataProperties"]["GeneratedBy"] == EXECUTION_ARN
    key = f"runs/{EXECUTION}/model_package.json"
    written = json.loads(buckets.s3.get_object(Bucket=buckets.artifacts, Key=key)["Body"].read())
    assert written == result


def test_register_model_rejected_model_is_a_rejected_version(app, buckets, context):
    result = app.lambda_handler(event(approved=False), context)

    assert result["approval_status"] == "Rejected"
    package = boto3.client("sagemaker").describe_model_package(
        ModelPackageName=result["model_package_arn"]
    )
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["CustomerMetadataProperties"][registry.GATE_KEY].startswith("rejected: ")


def test_register_model_second_run_adds_a_version_to_the_same_group(app, buckets, context):
    first = app.lambda_handler(event(), context)
    second = app.lambda_handler(event(execution="digits-fedcba9876543210"), context)

    assert first["model_package_group_name"] == second["model_package_group_name"] == GROUP
    assert (first["model_package_version"], second["model_package_version"]) == (1, 2)
    listed = boto3.client("sagemaker").list_model_packages(ModelPackageGroupName=GROUP)
    assert len(listed["ModelPackageSummaryList"]) == 2


def test_register_model_a_retry_sends_the_same_client_token(app, buckets, context):
    tokens = []
    app.sagemaker.meta.events.register(
        "provide-client-params.sagemaker.CreateModelPackage",
        lambda params, **_: tokens.append(params["ClientToken"]),
    )
    app.lambda_handler(event(), context)
    app.lambda_handler(event(), context)
    app.lambda_handler(event(execution="digits-fedcba9876543210"), context)

    assert tokens[0] == tokens[1] != tokens[2]
    assert all(len(t) <= 36 for t in tokens)


def test_register_model_keeps_metadata_within_aws_limits(app, buckets, context):
    sent = {}
    app.sagemaker.meta.events.register(
        "provide-client-params.sagemaker.CreateModelPackage",
        lambda params, **_: sent.update(params),
    )
    app.lambda_handler(event(findings=80, details="x" * 1000), context)

    metadata = sent["CustomerMetadataProperties"]
    assert len(metadata) == 50  # AWS's limit on entries
    assert max(len(v) for v in metadata.values()) == 256
    assert metadata[registry.EXECUTION_KEY] == EXECUTION  # the facts come before the findings
    assert len(sent["ModelPackageDescription"]) <= 1024


def test_register_model_group_name_fits_sagemaker_for_the_longest_names():
    import re

    longest = registry.model_package_group_name("a" * 12, "b" * 40)
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", longest)
    assert re.fullmatch(
        r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", registry.model_package_group_name("m", "x-")
    )


def test_register_model_manual_mode_leaves_an_approved_model_pending(
    load_handler, app, buckets, context
):
    manual = load_handler("register_model", ApprovalMode="manual")
    manual.sagemaker = app.sagemaker  # the client that answers DescribeTrainingJob
    approved = manual.lambda_handler(event(), context)
    rejected = manual.lambda_handler(
        event(execution="digits-fedcba9876543210", approved=False), context
    )

    assert approved["approval_status"] == "PendingManualApproval"
    assert rejected["approval_status"] == "Rejected"  # a person never sees what the gate refused


def test_register_model_names_the_retrains_monitoring_baseline(app, buckets, context):
    """baseline.json from the retrain's output.tar.gz goes next to the run's records and the
    version's DriftCheckBaselines names it; a retrain without one registers without it."""
    import io
    import tarfile

    baseline = b'{"version": 1, "count": 3}\n'
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        member = tarfile.TarInfo("baseline.json")
        member.size = len(baseline)
        tar.addfile(member, io.BytesIO(baseline))
    output_key = f"runs/{EXECUTION}/training/{TRAINING}/output.tar.gz"
    without = app.lambda_handler(event(execution="digits-ffffffffffffffff"), context)
    buckets.s3.put_object(Bucket=buckets.artifacts, Key=output_key, Body=archive.getvalue())

    result = app.lambda_handler(event(), context)

    sm = boto3.client("sagemaker")
    package = sm.describe_model_package(ModelPackageName=result["model_package_arn"])
    uri = package["DriftCheckBaselines"]["ModelDataQuality"]["Statistics"]["S3Uri"]
    assert uri == f"s3://{buckets.artifacts}/runs/{EXECUTION}/baseline.json"
    copied = buckets.s3.get_object(Bucket=buckets.artifacts, Key=f"runs/{EXECUTION}/baseline.json")
    assert copied["Body"].read() == baseline
    earlier = sm.describe_model_package(ModelPackageName=without["model_package_arn"])
    assert "DriftCheckBaselines" not in earlier
