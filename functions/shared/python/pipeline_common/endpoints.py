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
MODEL_PACKAGE_TAG = "mlops:model-package"  # the registry version the config serves


def endpoint_config_arn(endpoint_arn: str, config: str) -> str:
    """A config's ARN, built from its endpoint's (SageMaker lower-cases names in ARNs)."""
    return f"{endpoint_arn.rsplit(':', 1)[0]}:endpoint-config/{config.lower()}"


def config_tags(sagemaker: Any, endpoint_arn: str, config: str) -> dict[str, str]:
    arn = endpoint_config_arn(endpoint_arn, config)
    with aws_call("ListTags", arn):
        tags = sagemaker.list_tags(ResourceArn=arn).get("Tags", [])
    return {tag["Key"]: tag["Value"] for tag in tags}


def serving_config_tags(sagemaker: Any, endpoint: dict[str, Any]) -> dict[str, str]:
    """The tags of the config an endpoint (a DescribeEndpoint answer) serves; {} if none."""
    if not endpoint.get("EndpointConfigName"):
        return {}
    return config_tags(sagemaker, endpoint["EndpointArn"], endpoint["EndpointConfigName"])


def approval_time(tags: dict[str, str]) -> datetime | None:
    return parse_timestamp(tags.get(APPROVED_AT_TAG))


def serves_model_approved_after(
    sagemaker: Any, endpoint: dict[str, Any], approved_at: datetime | None
) -> bool:
    """True when the endpoint serves a model approved after ``approved_at``: a newer run's."""
    if approved_at is None:
        return False
    serving_at = approval_time(serving_config_tags(sagemaker, endpoint))
    return serving_at is not None and serving_at > approved_at


def parse_timestamp(value: str | None) -> datetime | None:
    """An ISO 8601 tag value, or None when absent or unreadable (older deployments)."""
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
