"""What a report reads from: one deployment's clients and stack outputs (local cloud or AWS).

The CLI builds a Target from the running local cloud or a deployed stack (mlops/target.py);
the WriteReport Lambda builds one from its own environment. Endpoints come from the
`endpoints` map (the CLI's local cloud) or from AWS_ENDPOINT_URL* (boto3 reads those itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3


class TargetError(RuntimeError):
    """No reachable target; the message says what to run."""


@dataclass
class Target:
    name: str
    session: boto3.Session
    outputs: dict[str, str]
    endpoints: dict[str, str] = field(default_factory=dict)  # service -> endpoint URL
    api_key: str | None = None
    # The local cloud: its resources exist nowhere the AWS console could show them, so links
    # lead to `mlops console`'s pages instead (pipeline_report.lineage.link_url).
    local: bool = False

    def client(self, service: str, config: Any = None) -> Any:
        """A client for `service` at this target's endpoint (`config`: a botocore Config)."""
        endpoint = self.endpoints.get(service) or self.endpoints.get("default")
        return self.session.client(service, endpoint_url=endpoint, config=config)

    def output(self, key: str) -> str:
        try:
            return self.outputs[key]
        except KeyError:
            raise TargetError(
                f"The stack {self.name} has no output {key}; outputs: {sorted(self.outputs)}"
            ) from None

    @property
    def region(self) -> str:
        return self.session.region_name or "us-east-1"

    @property
    def data_bucket(self) -> str:
        return self.output("DataBucketName")

    @property
    def artifacts_bucket(self) -> str:
        return self.output("ArtifactsBucketName")

    @property
    def state_machine_arn(self) -> str:
        return self.output("StateMachineArn")

    @property
    def api_url(self) -> str:
        return self.output("ApiUrl").rstrip("/")
