"""What an endpoint config remembers about the model it serves, kept as tags.

deploy_endpoint writes the tags. evaluate_rules reads the serving model's test accuracy (the
regression check), and deploy_endpoint reads when the serving model was approved, so that
runs finishing out of order never put an older model back in front of a newer one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline_common.aws import aws_call

ACCURACY_TAG = "mlops:test-accuracy"
TRAINING_JOB_TAG = "mlops:training-job"
APPROVED_AT_TAG = "mlops:approved-at"


def endpoint_config_arn(endpoint: dict[str, Any]) -> str:
    """The serving config's ARN, built from the endpoint's (SageMaker lower-cases names)."""
    arn_prefix = endpoint["EndpointArn"].rsplit(":", 1)[0]
    return f"{arn_prefix}:endpoint-config/{endpoint['EndpointConfigName'].lower()}"


def serving_config_tags(sagemaker: Any, endpoint: dict[str, Any]) -> dict[str, str]:
    """The tags of the config an endpoint (a DescribeEndpoint answer) serves; {} if none."""
    if not endpoint.get("EndpointConfigName"):
        return {}
    arn = endpoint_config_arn(endpoint)
    with aws_call("ListTags", arn):
        tags = sagemaker.list_tags(ResourceArn=arn).get("Tags", [])
    return {tag["Key"]: tag["Value"] for tag in tags}


def parse_timestamp(value: str | None) -> datetime | None:
    """An ISO 8601 tag value, or None when absent or unreadable (older deployments)."""
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
