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
from typing import Any

from botocore.exceptions import ClientError
from pipeline_common.aws import error_code
from pipeline_common.models import ApprovalDecision
from pipeline_common.naming import execution_arn
from pipeline_common.records import APPROVAL_REQUEST, record_key
from pipeline_common.registry import (
    DATASET_KEY,
    EXECUTION_KEY,
    MANIFEST_VERSION_KEY,
    TEST_ACCURACY_KEY,
    model_package_group_name,
    package_version,
)

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


def serving_package(sagemaker: Any, endpoint_name: str) -> str | None:
    """The model package version behind the endpoint's current config (None: no endpoint, or a
    model not created from a package)."""
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        config = sagemaker.describe_endpoint_config(
            EndpointConfigName=endpoint["EndpointConfigName"]
        )
        model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    except sagemaker.exceptions.ClientError:
        return None
    containers = [model.get("PrimaryContainer") or {}, *model.get("Containers", [])]
    return next((c["ModelPackageName"] for c in containers if c.get("ModelPackageName")), None)


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
    key = record_key(execution, APPROVAL_REQUEST)
    try:
        body = target.client("s3").get_object(Bucket=target.artifacts_bucket, Key=key)["Body"]
        record = json.loads(body.read())
    except ClientError:
        raise CliError(
            f"No run waits for {package_arn}: s3://{target.artifacts_bucket}/{key} is missing"
        ) from None
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
