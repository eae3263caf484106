"""Where the CLI talks to: the running local cloud, or a deployed AWS stack (`--stack NAME`).

Both give the same things (clients, the data and artifacts buckets, the state machine, the API
URL and key), so every command works the same way against either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

DEFAULT_ROOT = Path(".mlops")


class TargetError(RuntimeError):
    """No reachable target; the message says what to run."""


@dataclass
class Target:
    name: str
    session: boto3.Session
    outputs: dict[str, str]
    endpoints: dict[str, str] = field(default_factory=dict)  # service -> endpoint URL
    api_key: str | None = None

    def client(self, service: str) -> Any:
        endpoint = self.endpoints.get(service) or self.endpoints.get("default")
        return self.session.client(service, endpoint_url=endpoint)

    def output(self, key: str) -> str:
        try:
            return self.outputs[key]
        except KeyError:
            raise TargetError(
                f"The stack {self.name} has no output {key}; outputs: {sorted(self.outputs)}"
            ) from None

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


def local_target(root: Path = DEFAULT_ROOT) -> Target:
    from mlops.local.cloud import load_info  # not shipped in the report Lambda's layer
    from mlops.local.process import lock_holder

    info = load_info(root)
    if info is None:
        raise TargetError(f"No local cloud is running (no {root / 'cloud.json'}): run `mlops up`")
    if lock_holder(root) is None:
        raise TargetError(
            f"No local cloud is running ({root / 'cloud.json'} is left from one that ended): "
            "run `mlops up`"
        )
    env = info.client_env()
    session = boto3.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=info.region,
    )
    outputs = {**info.deployment["outputs"], "ApiUrl": info.api_url}
    return Target(
        name="local",
        session=session,
        outputs=outputs,
        endpoints={
            "default": info.moto_url,
            "sagemaker": info.sagemaker_url,
            "sagemaker-runtime": info.sagemaker_url,
        },
        api_key=info.api_key,
    )


def stack_target(stack_name: str, region: str | None = None) -> Target:
    """A deployed stack: its outputs, and the API key's value read through API Gateway."""
    session = boto3.Session(region_name=region)
    cloudformation = session.client("cloudformation")
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except cloudformation.exceptions.ClientError as exc:
        raise TargetError(f"Cannot read stack {stack_name}: {exc}") from exc
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}
    api_key = None
    if "ApiKeyId" in outputs:
        key = session.client("apigateway").get_api_key(
            apiKey=outputs["ApiKeyId"], includeValue=True
        )
        api_key = key["value"]
    return Target(name=stack_name, session=session, outputs=outputs, api_key=api_key)


def resolve_target(stack: str | None, root: Path = DEFAULT_ROOT) -> Target:
    return stack_target(stack) if stack else local_target(root)
