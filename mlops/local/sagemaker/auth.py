"""Which IAM permissions a SageMaker request needs, for the local SageMaker's authoriser.

AWS authorises a SageMaker call on the action ``sagemaker:<Operation>`` and on every resource
the request names (CreateEndpoint needs both the endpoint and its endpoint config), plus
``sagemaker:AddTags`` on a resource created with Tags, plus ``iam:PassRole`` (with
``iam:PassedToService = sagemaker.amazonaws.com``) on every role the request hands over.
The decision itself is moto's policy evaluator over the caller's role (mlops.local.iam).

Model Registry: a group call is authorised on ``model-package-group/<name>``, a package call on
``model-package/<group>/<version>``; CreateModelPackage, whose version is not known before it
runs, on ``model-package/<group>/*`` (the resource AWS's cross-account Model Registry policies
grant it on); ListModelPackages and ListModelPackageGroups, list actions, on ``*``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mlops.local.iam_request import Request

# Request members that name a resource, and the resource type in its ARN.
NAMED_RESOURCES = {
    "HyperParameterTuningJobName": "hyper-parameter-tuning-job",
    "TrainingJobName": "training-job",
    "ModelName": "model",
    "EndpointConfigName": "endpoint-config",
    "EndpointName": "endpoint",
    "ModelPackageGroupName": "model-package-group",
    "ModelPackageName": "model-package",
}
UNSCOPED = frozenset({"ListModelPackages", "ListModelPackageGroups"})
ROLE_MEMBERS = ("RoleArn", "ExecutionRoleArn")
PASSED_TO = (("iam:PassedToService", "sagemaker.amazonaws.com"),)


def passed_roles(value: Any) -> Iterator[str]:
    """Every role ARN a request hands to SageMaker, at any depth."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in ROLE_MEMBERS and isinstance(item, str):
                yield item
            else:
                yield from passed_roles(item)
    elif isinstance(value, list):
        for item in value:
            yield from passed_roles(item)


def required(
    operation: str, params: Mapping[str, Any], arn: Callable[[str, str], str]
) -> list[Request]:
    """The permissions one SageMaker call needs; ``arn(type, name)`` builds a resource ARN."""
    resources = [
        params[member] if params[member].startswith("arn:") else arn(kind, params[member])
        for member, kind in NAMED_RESOURCES.items()
        if isinstance(params.get(member), str)
    ]
    for member in ("ResourceArn", "ModelPackageArn"):
        if isinstance(params.get(member), str):
            resources.append(params[member])
    group = params.get("ModelPackageGroupName")
    if operation == "CreateModelPackage" and isinstance(group, str):
        resources = [arn("model-package", f"{group.rsplit('/', 1)[-1]}/*")]
    if operation in UNSCOPED:
        resources = []
    named = tuple(resources) or ("*",)
    requests = [Request(f"sagemaker:{operation}", named)]
    if operation.startswith("Create") and params.get("Tags"):
        requests.append(Request("sagemaker:AddTags", named))
    roles = tuple(dict.fromkeys(passed_roles(params)))
    if roles:
        requests.append(Request("iam:PassRole", roles, PASSED_TO))
    return requests
