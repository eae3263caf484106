"""boto3 clients and the translation of AWS errors into the project's exceptions.

The state machine retries on exception class names, so throttling and quota errors become
:class:`SageMakerThrottled` / :class:`ResourceLimitExceeded` (retried with backoff) and any
other ClientError becomes :class:`AwsCallFailed` with the operation, resource, code and
message in one sentence. Endpoints come from the standard ``AWS_ENDPOINT_URL*`` variables
that boto3 reads by itself, so nothing here knows whether it runs on AWS or locally.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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


class LazyClient:
    """A boto3 client built at its first use, then kept for the container's life.

    Building one costs 40-60 ms (service model, endpoint rules); a handler that names several
    at module level (as Powertools' examples do) paid for all of them in its cold start, also
    for the ones its path does not use (a refused request, an error path, an SNS client that
    only a failure needs). Attribute access goes to the real client, so calls, paginators,
    waiters, ``meta`` and botocore's Stubber work as on the client itself.
    """

    def __init__(self, service: str, config: Config) -> None:
        self._service = service
        self._config = config
        self._client: Any = None
        # boto3's default session must not build clients in two threads at once (a handler
        # whose first use of a client is inside a thread pool would)
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = boto3.client(self._service, config=self._config)
        return getattr(self._client, name)

    def __repr__(self) -> str:
        state = "created" if self._client is not None else "not created yet"
        return f"<LazyClient {self._service} ({state})>"


def client(service: str, config: Config = CLIENT_CONFIG) -> Any:
    """A boto3 client with the project's retry settings, built at its first use (LazyClient)."""
    return LazyClient(service, config)


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


Expected = Mapping[str, str | None] | Collection[str]
"""Error codes a call may answer without failing: a set of codes, or code -> a phrase the
message must contain (SageMaker says "already exists" in a ValidationException)."""

ALREADY_EXISTS: dict[str, str | None] = {"ValidationException": "already exist"}
NOT_FOUND: dict[str, str | None] = {"ValidationException": None}  # SageMaker's Describe*


@dataclass
class Call:
    """One AWS call made through :func:`aws_call`: which expected error it answered, if any."""

    operation: str
    resource: str
    expected: str | None = None  # the error code from ``ok`` that the call answered
    error: ClientError | None = None

    @property
    def succeeded(self) -> bool:
        """True when the call answered without an error (no expected one either)."""
        return self.expected is None


def is_expected(error: ClientError, ok: Expected) -> bool:
    """Whether ``error`` is one of the answers ``ok`` lists (code, and phrase where given)."""
    code = error_code(error)
    if code not in ok:
        return False
    phrase = ok[code] if isinstance(ok, Mapping) else None
    return phrase is None or phrase.lower() in error_message(error).lower()


@contextmanager
def aws_call(operation: str, resource: str, ok: Expected = ()) -> Iterator[Call]:
    """Make one AWS call; an error ``ok`` lists is an answer, any other is the project's exception.

    An expected error (a retry meeting the resource it created, a lookup of something absent)
    is recorded on the yielded :class:`Call` and the block ends there; any other ClientError is
    logged with its code and message and raised as the exception the state machine retries or
    catches (:func:`translate_client_error`).
    """
    call = Call(operation, resource)
    try:
        yield call
    except ClientError as e:
        if is_expected(e, ok):
            call.expected, call.error = error_code(e), e
            logger.info({"operation": operation, "resource": resource, "answered": call.expected})
            return
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
    with aws_call(operation, name, ok={"ResourceInUse"}) as call:
        create(**request)
    return call.succeeded
