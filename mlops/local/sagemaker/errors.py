"""SageMaker's error codes and wording, raised by the models and serialised by the responses.

Each class carries the exact error code a client matches on (``e.response["Error"]["Code"]``)
and the HTTP status AWS answers with. Messages copy AWS's wording where it is known, because
callers (and the project's Lambdas) branch on it, e.g. "Could not find endpoint".
"""

from __future__ import annotations

from typing import Any


class SageMakerError(Exception):
    """A service error that the wire layer turns into AWS's JSON error shape."""

    code = "InternalFailure"
    status = 400

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        """The JSON body botocore parses: ``__type`` and ``message`` plus modelled fields."""
        return {"__type": self.code, "message": self.message, **self.fields}


class ValidationException(SageMakerError):
    code = "ValidationException"


class AccessDeniedException(SageMakerError):
    code = "AccessDeniedException"


class ResourceNotFound(SageMakerError):
    code = "ResourceNotFound"


class ResourceInUse(SageMakerError):
    code = "ResourceInUse"


class ConflictException(SageMakerError):
    code = "ConflictException"


class ResourceLimitExceeded(SageMakerError):
    code = "ResourceLimitExceeded"


class ThrottlingException(SageMakerError):
    code = "ThrottlingException"


class UnknownOperationException(SageMakerError):
    code = "UnknownOperationException"


class InternalFailure(SageMakerError):
    code = "InternalFailure"
    status = 500


# --- SageMaker Runtime (rest-json) ------------------------------------------------------------


class RuntimeValidationError(SageMakerError):
    """The runtime's own validation code is ``ValidationError`` (not ``...Exception``)."""

    code = "ValidationError"


class ModelError(SageMakerError):
    """The container answered 4xx/5xx: AWS answers 424 with the container's status and body."""

    code = "ModelError"
    status = 424


class ServiceUnavailable(SageMakerError):
    code = "ServiceUnavailable"
    status = 503


def not_found_by_arn(kind: str, arn: str) -> ValidationException:
    """AWS's wording for a missing model, endpoint config or endpoint."""
    return ValidationException(f'Could not find {kind} "{arn}".')


def already_exists(kind: str, arn: str) -> ValidationException:
    """AWS's wording for CreateModel/CreateEndpointConfig/CreateEndpoint with a taken name."""
    return ValidationException(f'Cannot create already existing {kind} "{arn}".')
