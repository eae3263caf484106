"""The model registry from the command line: `mlops models`, `mlops approve`, `mlops reject`.

Reads the registry through the SageMaker API (local SageMaker or AWS alike): the data set's
model package groups, their versions newest first with the facts RegisterModel put in
CustomerMetadataProperties, and the version the endpoint's current config was created from.

A decision on a version that waits (ApprovalMode manual) updates the version's status first,
then hands the decision to the run that waits for it (SendTaskSuccess with the token
RequestApproval recorded); a run that can no longer take it leaves the version as it was.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from pipeline_common.aws import error_code
from pipeline_common.endpoints import serving_config_tags
from pipeline_common.jobs import EXECUTION_TAG
from pipeline_common.models import ApprovalDecision
from pipeline_common.naming import execution_arn, promotion_execution_name
from pipeline_common.records import APPROVAL_REQUEST, DEPLOYMENT, VALIDATION, record_key
from pipeline_common.registry import (
    DATASET_KEY,
    EXECUTION_KEY,
    MANIFEST_VERSION_KEY,
    TEST_ACCURACY_KEY,
    TRAINING_JOB_KEY,
    model_package_group_name,
    package_version,
)
from pipeline_report.lineage import Link, package_lineage, serving_package
from pipeline_report.records import read_record

from mlops.runs import CliError
from mlops.target import Target

GROUP_SUFFIX = "-models"


@dataclass
class ModelVersion:
    group: str
    version: int | None
    arn: str
    status: str
    created: str
    test_accuracy: str | None
    dataset: str | None
    manifest_version: str | None
    execution: str | None
    serving: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def project_groups(sagemaker: Any, project: str, dataset: str | None) -> list[str]:
    """The project's model package groups (one per data set), or the one of ``dataset``."""
    if dataset:
        return [model_package_group_name(project, dataset)]
    groups = []
    for page in sagemaker.get_paginator("list_model_package_groups").paginate(
        NameContains=f"{project}-"
    ):
        for summary in page["ModelPackageGroupSummaryList"]:
            name = summary["ModelPackageGroupName"]
            if name.startswith(f"{project}-") and name.endswith(GROUP_SUFFIX):
                groups.append(name)
    return sorted(groups)


def group_versions(sagemaker: Any, group: str, serving: str | None) -> list[ModelVersion]:
    versions = []
    pages = sagemaker.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending"
    )
    for page in pages:
        for summary in page["ModelPackageSummaryList"]:
            arn = summary["ModelPackageArn"]
            package = sagemaker.describe_model_package(ModelPackageName=arn)
            metadata = package.get("CustomerMetadataProperties", {})
            versions.append(
                ModelVersion(
                    group=group,
                    version=package_version(arn),
                    arn=arn,
                    status=summary.get("ModelApprovalStatus", "?"),
                    created=summary["CreationTime"].strftime("%Y-%m-%d %H:%M:%S"),
                    test_accuracy=metadata.get(TEST_ACCURACY_KEY),
                    dataset=metadata.get(DATASET_KEY),
                    manifest_version=metadata.get(MANIFEST_VERSION_KEY),
                    execution=metadata.get(EXECUTION_KEY),
                    serving=arn == serving,
                )
            )
    return versions


def list_versions(target: Target, dataset: str | None) -> list[ModelVersion]:
    sagemaker = target.client("sagemaker")
    project = target.output("ProjectName")
    serving = serving_package(sagemaker, target.output("EndpointName"))
    versions = []
    for group in project_groups(sagemaker, project, dataset):
        try:
            versions.extend(group_versions(sagemaker, group, serving))
        except sagemaker.exceptions.ClientError as error:
            if dataset:
                raise CliError(
                    f"No models registered for the data set {dataset} (model package group "
                    f"{group}): {error.response['Error']['Message']}. `mlops models` lists all."
                ) from None
            raise
    return versions


def print_versions(versions: list[ModelVersion]) -> list[str]:
    """The table `mlops models` prints; * marks the version the endpoint serves."""
    if not versions:
        return ["No model versions yet: each pipeline run that reaches the gate registers one."]
    lines = [
        f"  {'GROUP':28} {'VERSION':>7}  {'STATUS':22} {'TEST ACC':>8}  {'CREATED':19}  "
        "DATA SET VERSION"
    ]
    for v in versions:
        mark = "*" if v.serving else " "
        accuracy = f"{float(v.test_accuracy):.4f}" if v.test_accuracy else "-"
        lines.append(
            f"{mark} {v.group:28} {v.version or '-':>7}  {v.status:22} {accuracy:>8}  "
            f"{v.created:19}  {v.manifest_version or '-'}"
        )
    if any(v.serving for v in versions):
        lines.append("* serves on the endpoint")
    return lines


# -- decisions on a version that waits -----------------------------------------------------------
PENDING = "PendingManualApproval"
REASON_MAX = 900  # ApprovalDescription holds 1,024 characters, the summary's words included


def find_version(sagemaker: Any, group: str, version: int) -> dict[str, Any]:
    """DescribeModelPackage of version ``version`` of ``group``, or a CliError naming both."""
    try:
        for page in sagemaker.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group
        ):
            for summary in page["ModelPackageSummaryList"]:
                if package_version(summary["ModelPackageArn"]) == version:
                    return sagemaker.describe_model_package(
                        ModelPackageName=summary["ModelPackageArn"]
                    )
    except ClientError as error:
        raise CliError(
            f"Cannot read the model package group {group}: {error.response['Error']['Message']}"
        ) from None
    raise CliError(f"The model package group {group} has no version {version}: `mlops models`")


def waiting_token(target: Target, execution: str, package_arn: str) -> str:
    """The task token of the run that waits for this version (RequestApproval's record)."""
    record = read_record(target, execution, APPROVAL_REQUEST)
    if record is None:
        raise CliError(
            f"No run waits for {package_arn}: {record_key(execution, APPROVAL_REQUEST)} is "
            f"missing from s3://{target.artifacts_bucket}"
        )
    if record.get("model_package_arn") != package_arn:
        raise CliError(f"Execution {execution} waits for {record.get('model_package_arn')}")
    return record["task_token"]


def check_still_waiting(target: Target, execution: str, package_arn: str) -> None:
    sfn = target.client("stepfunctions")
    arn = execution_arn(target.state_machine_arn, execution)
    status = sfn.describe_execution(executionArn=arn)["status"]
    if status != "RUNNING":
        raise CliError(
            f"Execution {execution}, which waited for {package_arn}, has ended ({status}; "
            "`mlops execution` says why); nothing changed. Upload the data set again for a new run."
        )


def decide(
    target: Target, dataset: str, version: int, approved: bool, reason: str | None
) -> ApprovalDecision:
    """Approve or reject a waiting version: its status in the registry, then the run's turn."""
    sagemaker = target.client("sagemaker")
    group = model_package_group_name(target.output("ProjectName"), dataset)
    package = find_version(sagemaker, group, version)
    arn, status = package["ModelPackageArn"], package["ModelApprovalStatus"]
    if status != PENDING:
        raise CliError(f"Version {version} of {group} is {status}, not waiting for a decision")
    execution = package.get("CustomerMetadataProperties", {}).get(EXECUTION_KEY)
    if not execution:
        raise CliError(f"{arn} names no execution (not registered by the pipeline)")
    token = waiting_token(target, execution, arn)
    check_still_waiting(target, execution, arn)
    word = "approved" if approved else "rejected"
    said = (reason or "no reason given")[:REASON_MAX]
    decision = ApprovalDecision(
        approved=approved, summary=f"{word} by {getpass.getuser()} with mlops {word[:-1]}: {said}"
    )
    new_status = "Approved" if approved else "Rejected"
    sagemaker.update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus=new_status, ApprovalDescription=decision.summary
    )
    try:
        target.client("stepfunctions").send_task_success(
            taskToken=token, output=decision.model_dump_json()
        )
    except ClientError as error:
        sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=PENDING)
        raise CliError(
            f"Execution {execution} did not take the decision ({error_code(error)}: "
            f"{error.response['Error']['Message']}); {arn} is {PENDING} again"
        ) from None
    return decision


# -- putting a version on the endpoint: `mlops deploy VERSION`, `mlops rollback` -------------------
def promotion_input(target: Target, package: dict[str, Any], why: str) -> dict[str, Any]:
    """The execution input that sends an approved version through the pipeline's deploy states:
    what those states read from a run (data set, smoke-test image, retrain, gate, version)."""
    arn = package["ModelPackageArn"]
    metadata = package.get("CustomerMetadataProperties", {})
    execution, dataset = metadata.get(EXECUTION_KEY), metadata.get(DATASET_KEY)
    if not execution or not dataset:
        raise CliError(f"{arn} names no execution or data set: not registered by the pipeline")
    validation = read_record(target, execution, VALIDATION) or {}
    images = validation.get("smoke_test_images") or []
    if not images:
        raise CliError(
            f"The run {execution} that made {arn} recorded no smoke-test image "
            f"({record_key(execution, VALIDATION)}), so a deployment could not be checked"
        )
    accuracy = metadata.get(TEST_ACCURACY_KEY)
    quality = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
    return {
        "dataset": dataset,
        "promote": {"model_package_arn": arn, "why": why},
        "validated": {"name": dataset, "sample_image": images[0]},
        "training": {"job_name": metadata.get(TRAINING_JOB_KEY, "")},
        "gate": {
            "approved": True,
            "summary": why,
            "test_accuracy": float(accuracy) if accuracy else None,
            "report_uri": quality.get("S3Uri", ""),
        },
        "registered": {
            "model_package_group_name": package.get("ModelPackageGroupName"),
            "model_package_arn": arn,
            "model_package_version": package_version(arn),
            "approval_status": package["ModelApprovalStatus"],
        },
    }


def start_promotion(target: Target, package: dict[str, Any], why: str) -> str:
    """Start the deploy states for an Approved version; returns the execution's ARN."""
    arn, status = package["ModelPackageArn"], package["ModelApprovalStatus"]
    if status != "Approved":
        raise CliError(
            f"{arn} is {status}: only Approved versions are deployed (`mlops approve` decides "
            "a pending one; a rejected one stays rejected)"
        )
    document = promotion_input(target, package, why)
    name = promotion_execution_name(
        document["dataset"], package_version(arn), datetime.now(UTC).isoformat()
    )
    started = target.client("stepfunctions").start_execution(
        stateMachineArn=target.state_machine_arn, name=name, input=json.dumps(document)
    )
    return started["executionArn"]


def deploy_version(target: Target, dataset: str, version: int) -> str:
    """`mlops deploy VERSION`: the execution that puts this version on the endpoint."""
    sagemaker = target.client("sagemaker")
    package = find_version(
        sagemaker, model_package_group_name(target.output("ProjectName"), dataset), version
    )
    return start_promotion(target, package, f"deployed by {getpass.getuser()} with mlops deploy")


def previous_package(target: Target) -> dict[str, Any]:
    """The version the endpoint served before its current config (the rollback target): the
    current config's run recorded it in deployment.json when it replaced it."""
    sagemaker = target.client("sagemaker")
    endpoint_name = target.output("EndpointName")
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    except ClientError:
        raise CliError(f"No endpoint {endpoint_name} yet: nothing to roll back") from None
    tags = serving_config_tags(sagemaker, endpoint)
    execution = tags.get(EXECUTION_TAG)
    deployment = read_record(target, execution, DEPLOYMENT) if execution else None
    previous = (deployment or {}).get("previous_endpoint_config")
    if not previous:
        raise CliError(
            f"{endpoint_name} serves {endpoint.get('EndpointConfigName')}, the first config it "
            "served (or one no run recorded): nothing to roll back to; `mlops models` lists "
            "versions for `mlops deploy VERSION --dataset NAME`"
        )
    config = sagemaker.describe_endpoint_config(EndpointConfigName=previous)
    model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    arn = (model.get("PrimaryContainer") or {}).get("ModelPackageName")
    if not arn:
        raise CliError(
            f"The config {previous} served before serves a model that is not in the registry "
            "(deployed before it existed): use `mlops deploy VERSION --dataset NAME`"
        )
    return sagemaker.describe_model_package(ModelPackageName=arn)


def rollback(target: Target) -> tuple[str, dict[str, Any]]:
    """`mlops rollback`: the execution that puts back the version served before, and it."""
    package = previous_package(target)
    why = f"rolled back by {getpass.getuser()} with mlops rollback"
    return start_promotion(target, package, why), package


# -- lineage: `mlops lineage VERSION` -------------------------------------------------------------
def lineage(target: Target, dataset: str, version: int) -> list[Link]:
    """Data set version -> execution -> tuning job -> training job -> model package version ->
    endpoint config -> endpoint (pipeline_report.lineage: the console and the report show the
    same chain)."""
    group = model_package_group_name(target.output("ProjectName"), dataset)
    return group_lineage(target, group, version)


def group_lineage(target: Target, group: str, version: int) -> list[Link]:
    """The chain of version ``version`` of ``group`` (a CliError when there is none)."""
    return package_lineage(target, find_version(target.client("sagemaker"), group, version))
