"""The Model Registry of the local SageMaker: groups, versions, approval, models from packages.

Read through boto3, sagemaker-core's resource classes and the aws CLI, as the pipeline and an
operator would; restart persistence and the IAM resources of the new operations too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from mlops.local.persistence import decode_snapshot, encode_snapshot
from mlops.local.sagemaker import auth, store
from mlops.local.sagemaker.config import SageMakerConfig

from .helpers import IMAGE, REGION, ROLE_ARN, client_config, invoke, upload_model, wait_endpoint

pytestmark = pytest.mark.timeout(120)
ACCOUNT = "123456789012"
GROUP = "Mlops-Digits"  # mixed case: the ARNs carry it lower-cased
GROUP_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package-group/mlops-digits"
PACKAGE_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/mlops-digits"


def error_of(call: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    return raised.value.response["Error"]


def inference_specification(model_data_url: str = "s3://bucket/model.tar.gz") -> dict[str, Any]:
    return {
        "Containers": [
            {
                "Image": IMAGE,
                "ModelDataUrl": model_data_url,
                "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
            }
        ],
        "SupportedContentTypes": ["application/json"],
        "SupportedResponseMIMETypes": ["application/json"],
        "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large"],
    }


def register(sm: Any, group: str = GROUP, **extra: Any) -> str:
    request: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "InferenceSpecification": inference_specification(),
        **extra,
    }
    return sm.create_model_package(**request)["ModelPackageArn"]


@pytest.fixture
def group(sm: Any) -> str:
    sm.create_model_package_group(
        ModelPackageGroupName=GROUP, ModelPackageGroupDescription="digits classifiers"
    )
    return GROUP


def test_registry_group_create_describe_list(sm: Any) -> None:
    created = sm.create_model_package_group(
        ModelPackageGroupName=GROUP, ModelPackageGroupDescription="digits classifiers"
    )
    assert created["ModelPackageGroupArn"] == GROUP_ARN
    time.sleep(0.02)
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.02)
    sm.create_model_package_group(ModelPackageGroupName="other-group")
    described = sm.describe_model_package_group(ModelPackageGroupName=GROUP)
    assert described["ModelPackageGroupName"] == GROUP
    assert described["ModelPackageGroupArn"] == GROUP_ARN
    assert described["ModelPackageGroupStatus"] == "Completed"
    assert described["ModelPackageGroupDescription"] == "digits classifiers"
    assert sm.describe_model_package_group(ModelPackageGroupName=GROUP_ARN)["ModelPackageGroupName"]
    listed = sm.list_model_package_groups()["ModelPackageGroupSummaryList"]
    assert [g["ModelPackageGroupName"] for g in listed] == [GROUP, "other-group"]  # oldest first
    by_name = sm.list_model_package_groups(SortBy="Name", SortOrder="Descending")
    assert [g["ModelPackageGroupName"] for g in by_name["ModelPackageGroupSummaryList"]] == [
        "other-group",
        GROUP,
    ]
    matching = sm.list_model_package_groups(NameContains="other")["ModelPackageGroupSummaryList"]
    assert [g["ModelPackageGroupName"] for g in matching] == ["other-group"]
    first = sm.list_model_package_groups(MaxResults=1)
    second = sm.list_model_package_groups(MaxResults=1, NextToken=first["NextToken"])
    assert [g["ModelPackageGroupName"] for g in second["ModelPackageGroupSummaryList"]] == [
        "other-group"
    ]
    assert "NextToken" not in second
    later = sm.list_model_package_groups(CreationTimeAfter=between)
    assert [g["ModelPackageGroupName"] for g in later["ModelPackageGroupSummaryList"]] == [
        "other-group"
    ]


def test_registry_duplicate_group_is_validation_exception(sm: Any, group: str) -> None:
    error = error_of(sm.create_model_package_group, ModelPackageGroupName=group.lower())
    assert error["Code"] == "ValidationException"
    assert "already exists" in error["Message"]


def test_registry_missing_group_errors(sm: Any) -> None:
    error = error_of(sm.describe_model_package_group, ModelPackageGroupName="nope")
    assert (error["Code"], "does not exist" in error["Message"]) == ("ValidationException", True)
    error = error_of(
        sm.create_model_package,
        ModelPackageGroupName="nope",
        InferenceSpecification=inference_specification(),
    )
    assert (error["Code"], error["Message"]) == (
        "ValidationException",
        "Model Package Group does not exist.",
    )


def test_registry_versions_are_numbered_per_group(sm: Any, group: str) -> None:
    first = register(
        sm,
        ModelPackageDescription="first retrain",
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": "s3://b/stats.json"}
            }
        },
        CustomerMetadataProperties={"test-accuracy": "0.950000"},
        MetadataProperties={"GeneratedBy": "mlops-digits-retrain-1"},
        Domain="COMPUTER_VISION",
        Task="IMAGE_CLASSIFICATION",
    )
    second = register(sm)
    assert (first, second) == (f"{PACKAGE_ARN}/1", f"{PACKAGE_ARN}/2")
    described = sm.describe_model_package(ModelPackageName=first)
    assert described["ModelPackageGroupName"] == GROUP
    assert described["ModelPackageVersion"] == 1
    assert described["ModelPackageArn"] == first
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["ModelPackageStatus"] == "Completed"
    assert described["ModelPackageStatusDetails"] == {
        "ValidationStatuses": [],
        "ImageScanStatuses": [],
    }
    assert described["InferenceSpecification"] == inference_specification()
    assert described["CustomerMetadataProperties"] == {"test-accuracy": "0.950000"}
    assert described["ModelPackageDescription"] == "first retrain"
    assert described["MetadataProperties"] == {"GeneratedBy": "mlops-digits-retrain-1"}
    assert (described["Domain"], described["Task"]) == ("COMPUTER_VISION", "IMAGE_CLASSIFICATION")
    assert described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == "s3://b/stats.json"
    assert "LastModifiedTime" in described and "CreationTime" in described
    by_short_name = sm.describe_model_package(ModelPackageName=f"{GROUP.lower()}/2")
    assert by_short_name["ModelPackageArn"] == second


def test_registry_client_token_makes_create_idempotent(sm: Any, group: str) -> None:
    arn = register(sm, ClientToken="retrain-abc123")
    again = register(sm, ClientToken="retrain-abc123")
    other = register(sm, ClientToken="retrain-def456")
    assert (again, other) == (arn, f"{PACKAGE_ARN}/2")
    listed = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert len(listed) == 2


def test_registry_create_rejects_tags_and_unversioned(sm: Any, group: str) -> None:
    tagged = error_of(
        sm.create_model_package,
        ModelPackageGroupName=group,
        InferenceSpecification=inference_specification(),
        Tags=[{"Key": "a", "Value": "b"}],
    )
    assert tagged["Code"] == "ValidationException"
    unversioned = error_of(
        sm.create_model_package,
        ModelPackageName="solo",
        InferenceSpecification=inference_specification(),
    )
    assert unversioned["Code"] == "ValidationException"
    assert "versioned model packages only" in unversioned["Message"]


def test_registry_list_filters_sorts_and_pages(sm: Any, group: str) -> None:
    for _ in range(3):
        register(sm)
    sm.update_model_package(ModelPackageArn=f"{PACKAGE_ARN}/2", ModelApprovalStatus="Approved")
    listed = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert [p["ModelPackageVersion"] for p in listed] == [1, 2, 3]
    assert set(listed[0]) == {
        "ModelPackageGroupName",
        "ModelPackageVersion",
        "ModelPackageArn",
        "CreationTime",
        "ModelPackageStatus",
        "ModelApprovalStatus",
    }
    newest = sm.list_model_packages(
        ModelPackageGroupName=GROUP_ARN, SortBy="CreationTime", SortOrder="Descending"
    )["ModelPackageSummaryList"]
    assert [p["ModelPackageVersion"] for p in newest] == [3, 2, 1]
    approved = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="Approved")
    assert [p["ModelPackageArn"] for p in approved["ModelPackageSummaryList"]] == [
        f"{PACKAGE_ARN}/2"
    ]
    page = sm.list_model_packages(ModelPackageGroupName=group, MaxResults=2)
    rest = sm.list_model_packages(
        ModelPackageGroupName=group, MaxResults=2, NextToken=page["NextToken"]
    )
    assert [p["ModelPackageVersion"] for p in rest["ModelPackageSummaryList"]] == [3]
    # Without a group AWS lists Unversioned packages unless ModelPackageType says otherwise.
    assert sm.list_model_packages()["ModelPackageSummaryList"] == []
    both = sm.list_model_packages(ModelPackageType="Both")["ModelPackageSummaryList"]
    assert len(both) == 3


def test_registry_update_approval_and_metadata(sm: Any, group: str) -> None:
    arn = register(sm, CustomerMetadataProperties={"a": "1", "b": "2"})
    before = sm.describe_model_package(ModelPackageName=arn)["LastModifiedTime"]
    updated = sm.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus="Approved",
        ApprovalDescription="gate passed",
        CustomerMetadataProperties={"c": "3"},
        CustomerMetadataPropertiesToRemove=["a"],
    )
    assert updated["ModelPackageArn"] == arn
    described = sm.describe_model_package(ModelPackageName=arn)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "gate passed"
    assert described["CustomerMetadataProperties"] == {"b": "2", "c": "3"}
    assert described["LastModifiedTime"] >= before


def test_registry_missing_package_is_validation_exception(sm: Any, group: str) -> None:
    for call, kwargs in (
        (sm.describe_model_package, {"ModelPackageName": f"{PACKAGE_ARN}/9"}),
        (sm.update_model_package, {"ModelPackageArn": f"{PACKAGE_ARN}/9"}),
    ):
        error = error_of(call, **kwargs)
        assert error["Code"] == "ValidationException"
        assert f"{PACKAGE_ARN}/9 does not exist" in error["Message"]


def test_registry_create_model_from_pending_package_is_refused(sm: Any, group: str) -> None:
    arn = register(sm)
    error = error_of(
        sm.create_model,
        ModelName="from-pending",
        PrimaryContainer={"ModelPackageName": arn},
        ExecutionRoleArn=ROLE_ARN,
    )
    assert error["Code"] == "ValidationException"
    assert "PendingManualApproval" in error["Message"]
    missing = error_of(
        sm.create_model,
        ModelName="from-missing",
        PrimaryContainer={"ModelPackageName": f"{PACKAGE_ARN}/7"},
        ExecutionRoleArn=ROLE_ARN,
    )
    assert (missing["Code"], "does not exist" in missing["Message"]) == (
        "ValidationException",
        True,
    )


def test_registry_endpoint_serves_an_approved_package(
    sm: Any, runtime: Any, s3: Any, group: str
) -> None:
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification=inference_specification(upload_model(s3, "registered")),
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]
    sm.create_model(
        ModelName="from-package",
        PrimaryContainer={"ModelPackageName": arn},
        ExecutionRoleArn=ROLE_ARN,
    )
    assert sm.describe_model(ModelName="from-package")["PrimaryContainer"] == {
        "ModelPackageName": arn
    }
    sm.create_endpoint_config(
        EndpointConfigName="from-package",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "from-package",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName="registered", EndpointConfigName="from-package")
    endpoint = wait_endpoint(sm, "registered")
    assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")
    assert endpoint["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == IMAGE
    assert invoke(runtime, "registered", {"x": 1})["body"]["version"] == "registered"


def test_registry_sagemaker_core_reads_every_version(
    sm: Any, service: Any, group: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = pytest.importorskip("sagemaker.core.resources")
    arns = [register(sm, CustomerMetadataProperties={"n": str(n)}) for n in range(2)]
    sm.update_model_package(ModelPackageArn=arns[1], ModelApprovalStatus="Approved")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", service.url)
    session = boto3.Session(region_name=REGION)
    loaded = resources.ModelPackageGroup.get(GROUP, session=session, region=REGION)
    assert loaded.model_package_group_arn == GROUP_ARN
    one = resources.ModelPackage.get(arns[0], session=session, region=REGION)
    assert one.model_package_version == 1
    assert one.inference_specification.containers[0].image == IMAGE
    every = list(
        resources.ModelPackage.get_all(
            model_package_group_name=GROUP, session=session, region=REGION
        )
    )
    assert [p.model_package_arn for p in every] == arns
    assert [p.model_approval_status for p in every] == ["PendingManualApproval", "Approved"]


def test_registry_aws_cli_lists_the_versions(sm: Any, service: Any, group: str) -> None:
    register(sm)
    register(sm)
    aws = Path(sys.executable).with_name("aws")
    if not aws.exists():
        pytest.skip("no aws CLI beside this Python")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    env.pop("AWS_PROFILE", None)
    result = subprocess.run(
        [
            str(aws),
            "sagemaker",
            "list-model-packages",
            "--model-package-group-name",
            group,
            "--endpoint-url",
            service.url,
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["ModelPackageSummaryList"]
    assert [p["ModelPackageArn"] for p in listed] == [f"{PACKAGE_ARN}/1", f"{PACKAGE_ARN}/2"]


def test_registry_survives_a_restart(service_factory: Any, tmp_path: Path) -> None:
    first = service_factory(state_dir=tmp_path / "sm")
    sm = boto3.client(
        "sagemaker", endpoint_url=first.url, region_name=REGION, config=client_config()
    )
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    arn = register(sm, ClientToken="token-1", CustomerMetadataProperties={"a": "1"})
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    sm.create_model(
        ModelName="from-package",
        PrimaryContainer={"ModelPackageName": arn},
        ExecutionRoleArn=ROLE_ARN,
    )
    before = sm.describe_model_package(ModelPackageName=arn)
    snapshot = decode_snapshot(encode_snapshot(store.snapshot(first.backend)), None)  # type: ignore[arg-type]
    first.shutdown()

    second = service_factory(state_dir=tmp_path / "sm")
    store.restore(second.backend, snapshot)
    sm = boto3.client(
        "sagemaker", endpoint_url=second.url, region_name=REGION, config=client_config()
    )
    after = sm.describe_model_package(ModelPackageName=arn)
    for key in (
        "ModelApprovalStatus",
        "CreationTime",
        "LastModifiedTime",
        "InferenceSpecification",
    ):
        assert after[key] == before[key], key
    assert after["CustomerMetadataProperties"] == {"a": "1"}
    assert sm.describe_model_package_group(ModelPackageGroupName=GROUP)["ModelPackageGroupArn"]
    assert register(sm, ClientToken="token-1") == arn  # the token is remembered
    assert register(sm) == f"{PACKAGE_ARN}/2"  # numbering goes on
    assert second.backend.models["from-package"].container["Image"] == IMAGE


def test_registry_restores_a_version_1_snapshot(tmp_path: Path) -> None:
    """A snapshot from before the Model Registry restores with an empty registry."""
    from mlops.local.sagemaker.models import SageMakerBackend

    backend = SageMakerBackend(SageMakerConfig(state_dir=tmp_path, region=REGION))
    try:
        empty = {
            "version": 1,
            "training_jobs": [],
            "tuning_jobs": [],
            "models": [],
            "endpoint_configs": [],
            "endpoints": [],
            "tags": {},
        }
        assert store.restore(backend, empty) == []
        assert backend.registry.groups == {} and backend.registry.packages == {}
    finally:
        backend.shutdown()


def _arn(kind: str, name: str) -> str:
    return SageMakerConfig(state_dir=Path("."), region=REGION).arn(kind, name)


@pytest.mark.parametrize(
    "operation, params, resource",
    [
        ("CreateModelPackageGroup", {"ModelPackageGroupName": GROUP}, GROUP_ARN),
        ("DescribeModelPackageGroup", {"ModelPackageGroupName": GROUP_ARN}, GROUP_ARN),
        ("DeleteModelPackageGroup", {"ModelPackageGroupName": GROUP}, GROUP_ARN),
        ("CreateModelPackage", {"ModelPackageGroupName": GROUP}, f"{PACKAGE_ARN}/*"),
        ("DescribeModelPackage", {"ModelPackageName": f"{PACKAGE_ARN}/1"}, f"{PACKAGE_ARN}/1"),
        ("UpdateModelPackage", {"ModelPackageArn": f"{PACKAGE_ARN}/1"}, f"{PACKAGE_ARN}/1"),
        ("ListModelPackages", {"ModelPackageGroupName": GROUP}, "*"),
        ("ListModelPackageGroups", {}, "*"),
    ],
)
def test_registry_iam_action_and_resource(operation: str, params: dict, resource: str) -> None:
    first = auth.required(operation, params, _arn)[0]
    assert (first.action, first.resources) == (f"sagemaker:{operation}", (resource,))
