"""Where the CLI talks to: the running local cloud, or a deployed AWS stack (`--stack NAME`).

The Target itself is pipeline_report's (the report reads through it); finding the local cloud
stays here, behind the CLI, so the report package never imports the local cloud.

Both give the same things (clients, the data and artifacts buckets, the state machine, the API
URL and key), so every command works the same way against either.
"""

from __future__ import annotations

from pathlib import Path

import boto3
from pipeline_report.target import Target, TargetError

DEFAULT_ROOT = Path(".mlops")
__all__ = [
    "DEFAULT_ROOT",
    "Target",
    "TargetError",
    "local_target",
    "resolve_target",
    "stack_target",
]


def local_target(root: Path = DEFAULT_ROOT) -> Target:
    from mlops.local.cloud_info import load_info
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
        local=True,
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
