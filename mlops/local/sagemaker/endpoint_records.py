"""The records behind CreateModel and CreateEndpointConfig: requests kept as they came.

A model or an endpoint config does nothing by itself on SageMaker either; the endpoint that
serves a config starts the model servers (model_servers.py, endpoints.py).
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

    @property
    def container(self) -> dict[str, Any]:
        if "PrimaryContainer" in self.request:
            return self.request["PrimaryContainer"]
        return self.request["Containers"][0]

    def describe_image(self) -> str | None:
        return self.container.get("Image")


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
