"""boto3 clients and the translation of AWS errors into the project's exceptions.

The state machine retries on exception class names, so throttling and quota errors become
:class:`SageMakerThrottled` / :class:`ResourceLimitExceeded` (retried with backoff) and any
other ClientError becomes :class:`AwsCallFailed` with the operation, resource, code and
message in one sentence. Endpoints come from the standard ``AWS_ENDPOINT_URL*`` variables
that boto3 reads by itself, so nothing here knows whether it runs on AWS or locally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import ClientError

from pipeline_common.errors import (
    AwsCallFailed,
    PipelineError,
    ResourceLimitExceeded,
    SageMakerThrottled,
)

logger = Logger(child=True)

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)

# Short client-side retries; the long backoff belongs to the state machine's Retry.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, user_agent_extra="mlops")


def client(service: str) -> Any:
    """A boto3 client with the project's retry settings (created once per container)."""
    return boto3.client(service, config=CLIENT_CONFIG)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", ""))


def translate_client_error(error: ClientError, operation: str, resource: str) -> PipelineError:
    """Map a ClientError to the exception the state machine retries or catches."""
    code, message = error_code(error), error_message(error)
    if code in THROTTLING_CODES:
        return SageMakerThrottled(
            f"{operation} on {resource} was throttled ({code}: {message}); "
            f"the state machine retries with backoff"
        )
    if code == "ResourceLimitExceeded":
        return ResourceLimitExceeded(
            f"{operation} on {resource} hit an account quota ({message}); the state machine "
            f"retries with backoff. If it keeps failing, ask for a higher SageMaker quota in "
            f"Service Quotas or lower MaxParallelJobs / choose another instance type"
        )
    return AwsCallFailed(f"{operation} on {resource} failed with {code}: {message}")


@contextmanager
def aws_call(operation: str, resource: str) -> Iterator[None]:
    """Log a failed AWS call with its code and message, then raise the project's exception."""
    try:
        yield
    except ClientError as e:
        logger.warning(
            {
                "operation": operation,
                "resource": resource,
                "error_code": error_code(e),
                "error_message": error_message(e),
            }
        )
        raise translate_client_error(e, operation, resource) from e


def create_once(
    create: Callable[..., Any], operation: str, name: str, request: dict[str, Any]
) -> bool:
    """Call a SageMaker Create* operation; False when this run already created it (a retry).

    Job names are derived from the execution, so ResourceInUse means a retried invocation
    asked for the job it started before, not a conflict.
    """
    try:
        create(**request)
    except ClientError as e:
        if error_code(e) == "ResourceInUse":
            return False
        logger.warning({"operation": operation, "job": name, "error_code": error_code(e)})
        raise translate_client_error(e, operation, name) from e
    return True
