"""`mlops models`: the model package versions a project registered, and which one serves.

Reads the registry through the SageMaker API (local SageMaker or AWS alike): the data set's
model package groups, their versions newest first with the facts RegisterModel put in
CustomerMetadataProperties, and the version the endpoint's current config was created from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
