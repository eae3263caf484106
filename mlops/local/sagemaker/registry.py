"""The SageMaker Model Registry: model package groups and their versioned model packages.

A group is a name; each CreateModelPackage with ModelPackageGroupName adds version 1, 2, ...
to it (``arn:...:model-package/<group>/<version>``, the group lower-cased as in every
SageMaker ARN). A ClientToken makes the call idempotent: the same token for the same group
answers the ARN of the version it created before. Packages register at once (no validation
or image scan runs), so ModelPackageStatus is ``Completed`` with empty status lists.
Unversioned packages (ModelPackageName without a group) are not emulated.

CreateModel may name a versioned package instead of an image: only an ``Approved`` one
(`ModelRegistry.container_for_model`), as AWS deploys only approved versions.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from dataclasses import dataclass, field
from typing import Any

from mlops.local.sagemaker import protocol
from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.errors import ConflictException, ValidationException
from mlops.local.sagemaker.listing import paginate, sort_items, time_filters
from mlops.local.sagemaker.training_job import now

GROUP_STATUS = "Completed"
PACKAGE_STATUS = "Completed"
DEFAULT_APPROVAL = "PendingManualApproval"  # AWS's default for a versioned package
# What UpdateModelPackage replaces as given (the approval and metadata are handled apart).
REPLACED_ON_UPDATE = (
    "InferenceSpecification",
    "ModelPackageRegistrationType",
    "SourceUri",
    "ModelCard",
    "ModelLifeCycle",
)


@functools.cache
def _described_members() -> frozenset[str]:
    """The request members DescribeModelPackage echoes: those its output shape names."""
    output = protocol.control_plane_operation("DescribeModelPackage").output_shape
    assert output is not None
    return frozenset(output.members) - {"ModelPackageName", "ModelPackageGroupName"}


def _present(record: dict[str, Any]) -> dict[str, Any]:
    """A summary or description without the members that have no value."""
    return {key: value for key, value in record.items() if value is not None}


def name_of(name_or_arn: str, kind: str) -> str:
    """A group named by name or by ARN (ArnOrName) -> its name."""
    marker = f":{kind}/"
    if name_or_arn.startswith("arn:") and marker in name_or_arn:
        return name_or_arn.split(marker, 1)[1]
    return name_or_arn


@dataclass
class ModelPackageGroup:
    name: str
    arn: str
    request: dict[str, Any]
    creation_time: dt.datetime = field(default_factory=now)

    def summary(self) -> dict[str, Any]:
        return _present(
            {
                "ModelPackageGroupName": self.name,
                "ModelPackageGroupArn": self.arn,
                "ModelPackageGroupDescription": self.request.get("ModelPackageGroupDescription"),
                "CreationTime": self.creation_time,
                "ModelPackageGroupStatus": GROUP_STATUS,
                "ManagedConfiguration": self.request.get("ManagedConfiguration"),
            }
        )

    def describe(self) -> dict[str, Any]:
        # CreatedBy is required in the output; outside Studio it names no user profile.
        return {**self.summary(), "CreatedBy": {}}


@dataclass
class ModelPackage:
    """One version of a group: the CreateModelPackage request plus what changed since."""

    group: str
    version: int
    arn: str
    request: dict[str, Any]
    creation_time: dt.datetime = field(default_factory=now)
    last_modified_time: dt.datetime | None = None
    approval_status: str = DEFAULT_APPROVAL
    approval_description: str | None = None
    customer_metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        # No ModelPackageName for a versioned package: ListModelPackages gives only its ARN
        # (aws/sagemaker-python-sdk#5606, which sagemaker-core's get_all now copes with).
        return _present(
            {
                "ModelPackageGroupName": self.group,
                "ModelPackageVersion": self.version,
                "ModelPackageArn": self.arn,
                "ModelPackageDescription": self.request.get("ModelPackageDescription"),
                "CreationTime": self.creation_time,
                "ModelPackageStatus": PACKAGE_STATUS,
                "ModelApprovalStatus": self.approval_status,
                "ModelLifeCycle": self.request.get("ModelLifeCycle"),
                "ModelPackageRegistrationType": self.request.get("ModelPackageRegistrationType"),
            }
        )

    def describe(self) -> dict[str, Any]:
        echoed = {k: v for k, v in self.request.items() if k in _described_members()}
        return _present(
            {
                **echoed,
                "ModelPackageName": self.group,
                "ModelPackageGroupName": self.group,
                "ModelPackageVersion": self.version,
                "ModelPackageArn": self.arn,
                "CreationTime": self.creation_time,
                "LastModifiedTime": self.last_modified_time,
                "ModelPackageStatus": PACKAGE_STATUS,
                "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
                "ModelApprovalStatus": self.approval_status,
                "ApprovalDescription": self.approval_description,
                "CustomerMetadataProperties": self.customer_metadata or None,
            }
        )


class ModelRegistry:
    """Groups by lower-cased name (their ARNs are unique), packages by ARN, client tokens."""

    def __init__(self, config: SageMakerConfig, lock: threading.RLock) -> None:
        self.config = config
        self.lock = lock
        self.groups: dict[str, ModelPackageGroup] = {}
        self.packages: dict[str, ModelPackage] = {}
        self.client_tokens: dict[str, str] = {}  # "<group>/<token>" -> package ARN

    # --- groups -------------------------------------------------------------------------------

    def group(self, name_or_arn: str) -> ModelPackageGroup:
        name = name_of(name_or_arn, "model-package-group")
        group = self.groups.get(name.lower())
        if group is None:
            arn = self.config.arn("model-package-group", name)
            raise ValidationException(f"ModelPackageGroup {arn} does not exist.")
        return group

    def create_group(self, request: dict[str, Any]) -> ModelPackageGroup:
        name = request["ModelPackageGroupName"]
        arn = self.config.arn("model-package-group", name)
        with self.lock:
            if name.lower() in self.groups:
                raise ValidationException(f"Model Package Group already exists: {arn}")
            group = ModelPackageGroup(name, arn, request)
            self.groups[name.lower()] = group
        return group

    def delete_group(self, name_or_arn: str) -> ModelPackageGroup:
        with self.lock:
            group = self.group(name_or_arn)
            if any(p.group.lower() == group.name.lower() for p in self.packages.values()):
                raise ConflictException(
                    f"Model Package Group {group.arn} has model packages; delete them first."
                )
            del self.groups[group.name.lower()]
        return group

    def list_groups(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            summaries = [group.summary() for group in self.groups.values()]
        summaries = [
            s
            for s in summaries
            if request.get("NameContains", "") in s["ModelPackageGroupName"]
            and time_filters(request, s["CreationTime"], s["CreationTime"])
        ]
        summaries = sort_items(
            summaries,
            request.get("SortBy"),
            request.get("SortOrder"),
            {
                "Name": lambda s: s["ModelPackageGroupName"],
                "CreationTime": lambda s: s["CreationTime"],
            },
            default_sort="CreationTime",
        )
        page, token = paginate(summaries, request.get("NextToken"), request.get("MaxResults"))
        return {"ModelPackageGroupSummaryList": page, "NextToken": token}

    # --- packages -----------------------------------------------------------------------------

    def package(self, name: str) -> ModelPackage:
        """A versioned package by its ARN or by ``<group>/<version>`` (VersionedArnOrName)."""
        arn = name if name.startswith("arn:") else self.config.arn("model-package", name)
        package = self.packages.get(arn)
        if package is None:
            raise ValidationException(f"ModelPackage {arn} does not exist.")
        return package

    def create_package(self, request: dict[str, Any]) -> ModelPackage:
        if request.get("ModelPackageName") and request.get("ModelPackageGroupName"):
            raise ValidationException(
                "Both ModelPackageName and ModelPackageGroupName are provided in the input. "
                "Cannot determine which one to use."
            )
        if not request.get("ModelPackageGroupName"):
            if not request.get("ModelPackageName"):
                raise ValidationException("Missing ARN.")
            raise ValidationException(
                "The local SageMaker emulates versioned model packages only: give "
                "ModelPackageGroupName instead of ModelPackageName."
            )
        if request.get("Tags"):
            raise ValidationException(
                "A versioned model package uses the tags of its model package group: Tags "
                "cannot be supplied with ModelPackageGroupName."
            )
        with self.lock:
            try:
                group = self.group(request["ModelPackageGroupName"])
            except ValidationException:
                raise ValidationException("Model Package Group does not exist.") from None
            token = request.get("ClientToken")
            token_key = f"{group.name.lower()}/{token}"
            if token and token_key in self.client_tokens:
                return self.packages[self.client_tokens[token_key]]
            versions = [p.version for p in self.packages.values() if p.group == group.name]
            version = max(versions, default=0) + 1
            package = ModelPackage(
                group.name,
                version,
                self.config.arn("model-package", f"{group.name}/{version}"),
                {k: v for k, v in request.items() if k not in {"ClientToken", "Tags"}},
                approval_status=request.get("ModelApprovalStatus", DEFAULT_APPROVAL),
                customer_metadata=dict(request.get("CustomerMetadataProperties") or {}),
            )
            package.last_modified_time = package.creation_time
            self.packages[package.arn] = package
            if token:
                self.client_tokens[token_key] = package.arn
        return package

    def update_package(self, request: dict[str, Any]) -> ModelPackage:
        with self.lock:
            package = self.package(request["ModelPackageArn"])
            if "ModelApprovalStatus" in request:
                package.approval_status = request["ModelApprovalStatus"]
            if "ApprovalDescription" in request:
                package.approval_description = request["ApprovalDescription"]
            package.customer_metadata.update(request.get("CustomerMetadataProperties") or {})
            for key in request.get("CustomerMetadataPropertiesToRemove") or []:
                package.customer_metadata.pop(key, None)
            # A new request dict, never edited in place: a snapshot may be encoding the old one.
            changed = {key: request[key] for key in REPLACED_ON_UPDATE if key in request}
            added = request.get("AdditionalInferenceSpecificationsToAdd")
            if added:
                changed["AdditionalInferenceSpecifications"] = [
                    *package.request.get("AdditionalInferenceSpecifications", []),
                    *added,
                ]
            package.request = {**package.request, **changed}
            package.last_modified_time = now()
        return package

    def list_packages(self, request: dict[str, Any]) -> dict[str, Any]:
        group_name = request.get("ModelPackageGroupName")
        # Without a group, AWS lists Unversioned packages unless ModelPackageType says
        # otherwise (boto/boto3#3069); a group's listing is its versions.
        kind = request.get("ModelPackageType") or ("Versioned" if group_name else "Unversioned")
        with self.lock:
            packages = list(self.packages.values())
        if kind == "Unversioned":
            packages = []
        if group_name:
            wanted = name_of(group_name, "model-package-group").lower()
            packages = [p for p in packages if p.group.lower() == wanted]
        packages = [
            p
            for p in packages
            if request.get("NameContains", "") in p.group
            and request.get("ModelApprovalStatus", p.approval_status) == p.approval_status
            and time_filters(request, p.creation_time, p.last_modified_time)
        ]
        packages = sort_items(
            packages,
            request.get("SortBy"),
            request.get("SortOrder"),
            {
                "Name": lambda p: (p.group, p.version),
                "CreationTime": lambda p: (p.creation_time, p.version),
            },
            default_sort="CreationTime",
        )
        summaries = [p.summary() for p in packages]
        page, token = paginate(summaries, request.get("NextToken"), request.get("MaxResults"))
        return {"ModelPackageSummaryList": page, "NextToken": token}

    # --- models from packages -----------------------------------------------------------------

    def container_for_model(self, package_name: str) -> dict[str, Any]:
        """The container a model made from this package runs; only an Approved version."""
        with self.lock:
            package = self.package(package_name)
            if package.approval_status != "Approved":
                raise ValidationException(
                    f"Cannot create a model from model package {package.arn}: its "
                    f"ModelApprovalStatus is {package.approval_status}. A versioned model "
                    "package must be Approved to be deployed."
                )
            containers = (package.request.get("InferenceSpecification") or {}).get(
                "Containers"
            ) or []
            if not containers:
                raise ValidationException(
                    f"Model package {package.arn} has no InferenceSpecification containers."
                )
            container = containers[0]
            return {
                key: container[key]
                for key in ("Image", "ModelDataUrl", "Environment")
                if key in container
            }

    def resource_exists(self, arn: str) -> bool:
        with self.lock:
            return arn in self.packages or any(g.arn == arn for g in self.groups.values())
