"""The records behind CreateModel and CreateEndpointConfig: requests kept as they came.

A model or an endpoint config does nothing by itself on SageMaker either; the endpoint that
serves a config starts the model servers (model_servers.py, endpoints.py). A model whose
container names a ModelPackageName keeps the package's container (Image, ModelDataUrl,
Environment) as CreateModel resolved it (registry.py), so it serves what was approved.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from mlops.local.sagemaker.training_job import now


@dataclass
class ModelRecord:
    name: str
    arn: str
    request: dict[str, Any]
    creation_time: dt.datetime = field(default_factory=now)
    # The model package's first container, when the requested container names a package.
    package_container: dict[str, Any] | None = None

    @property
    def requested_container(self) -> dict[str, Any]:
        if "PrimaryContainer" in self.request:
            return self.request["PrimaryContainer"]
        return self.request["Containers"][0]

    @property
    def container(self) -> dict[str, Any]:
        """What a model server runs: the request's container, or the package's under it
        (the request's Environment entries win over the package's)."""
        requested = self.requested_container
        if self.package_container is None:
            return requested
        environment = {
            **(self.package_container.get("Environment") or {}),
            **(requested.get("Environment") or {}),
        }
        return {**self.package_container, "Environment": environment}

    def describe_image(self) -> str | None:
        return self.container.get("Image")

    def describe(self) -> dict[str, Any]:
        """DescribeModel: the request as it came (a package's container is not expanded)."""
        echoed = {k: v for k, v in self.request.items() if k not in {"Tags", "ModelName"}}
        return {
            "ModelName": self.name,
            "ModelArn": self.arn,
            "CreationTime": self.creation_time,
            **echoed,
        }


@dataclass
class EndpointConfigRecord:
    name: str
    arn: str
    request: dict[str, Any]
    creation_time: dt.datetime = field(default_factory=now)

    def describe(self) -> dict[str, Any]:
        echoed = {k: v for k, v in self.request.items() if k not in {"Tags", "EndpointConfigName"}}
        return {
            "EndpointConfigName": self.name,
            "EndpointConfigArn": self.arn,
            "CreationTime": self.creation_time,
            **echoed,
        }
