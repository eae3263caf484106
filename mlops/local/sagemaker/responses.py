"""SageMaker's two wire protocols in front of the backend: parse, validate, call, serialise.

Control plane: ``json`` protocol, ``POST /`` with ``X-Amz-Target: SageMaker.<Operation>`` and
an ``application/x-amz-json-1.1`` body; errors as ``{"__type": code, "message": ...}``.
Runtime: ``rest-json``, ``POST /endpoints/<name>/invocations`` with the payload as body and
the modelled headers (Content-Type, Accept, X-Amzn-SageMaker-Target-Variant); errors carry
their code in ``x-amzn-ErrorType``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore import xform_name

from mlops.local.sagemaker import auth, protocol
from mlops.local.sagemaker.errors import (
    AccessDeniedException,
    InternalFailure,
    ResourceLimitExceeded,
    SageMakerError,
    ThrottlingException,
    UnknownOperationException,
    ValidationException,
)
from mlops.local.sagemaker.models import SageMakerBackend

logger = logging.getLogger(__name__)

TARGET_PREFIX = "SageMaker."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


@dataclass
class WireResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _request_id() -> str:
    return str(uuid.uuid4())


class SageMakerResponses:
    """Turns HTTP requests into backend calls and backend answers into HTTP responses."""

    def __init__(self, backend: SageMakerBackend) -> None:
        self.backend = backend

    # --- control plane ------------------------------------------------------------------------

    def control_plane(
        self, target: str | None, body: bytes, headers: Mapping[str, str] | None = None
    ) -> WireResponse:
        operation_name = (target or "").removeprefix(TARGET_PREFIX)
        try:
            result = self._dispatch(target, operation_name, body, headers or {})
        except SageMakerError as error:
            return self._json_error(error)
        except Exception as error:
            logger.exception("%s failed inside the local SageMaker", operation_name)
            return self._json_error(InternalFailure(f"{type(error).__name__}: {error}"))
        return WireResponse(
            200,
            json.dumps(result).encode(),
            {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-RequestId": _request_id()},
        )

    def _authorize(self, headers: Mapping[str, str], operation: str, params: Any) -> None:
        """AccessDeniedException unless the caller's role allows the call (when enforced)."""
        authorizer = self.backend.config.authorizer
        if authorizer is None or not isinstance(params, dict):
            return
        message = authorizer(headers, auth.required(operation, params, self.backend.config.arn))
        if message is not None:
            raise AccessDeniedException(message)

    def _dispatch(
        self, target: str | None, operation_name: str, body: bytes, headers: Mapping[str, str]
    ) -> Any:
        if not target or not target.startswith(TARGET_PREFIX):
            raise UnknownOperationException(
                f"Missing or foreign X-Amz-Target {target!r}: expected SageMaker.<Operation>"
            )
        if operation_name not in protocol.CONTROL_PLANE_OPERATIONS:
            raise UnknownOperationException(
                f"Operation {operation_name} is not supported by the local SageMaker; it serves "
                f"{', '.join(sorted(protocol.CONTROL_PLANE_OPERATIONS))}"
            )
        if self.backend.faults.should_throttle(operation_name):
            raise ThrottlingException("Rate exceeded")
        if self.backend.faults.fails_call("quota", operation_name):
            raise ResourceLimitExceeded(
                f"{operation_name}: the account-level service limit for this instance type is "
                "used up by other jobs (injected fault quota)"
            )
        operation = protocol.control_plane_operation(operation_name)
        params = self._parse_json(body)
        self._authorize(headers, operation_name, params)
        request = protocol.validate_request(operation, params)
        result = getattr(self.backend, xform_name(operation_name))(request)
        result = {k: v for k, v in result.items() if v is not None}
        protocol.check_response(operation, result, self.backend.config.strict_responses)
        try:
            return (
                protocol.serialize(result, operation.output_shape) if operation.output_shape else {}
            )
        except protocol.ShapeMismatch as error:
            raise InternalFailure(f"{operation_name} response: {error}") from error

    @staticmethod
    def _parse_json(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            params = json.loads(body)
        except ValueError as error:
            raise ValidationException(f"The request body is not valid JSON: {error}") from error
        if not isinstance(params, dict):
            raise ValidationException("The request body must be a JSON object")
        return params

    @staticmethod
    def _json_error(error: SageMakerError) -> WireResponse:
        if error.status >= 500:
            logger.error("%s: %s", error.code, error.message)
        return WireResponse(
            error.status,
            json.dumps(error.body()).encode(),
            {
                "Content-Type": JSON_CONTENT_TYPE,
                "x-amzn-RequestId": _request_id(),
                "x-amzn-ErrorType": error.code,
            },
        )

    # --- runtime ------------------------------------------------------------------------------

    def invoke_endpoint(
        self, endpoint_name: str, body: bytes, headers: dict[str, str]
    ) -> WireResponse:
        """InvokeEndpoint: headers are looked up case-insensitively by the caller's dict."""
        params: dict[str, Any] = {"EndpointName": endpoint_name, "Body": body}
        for member, header in (
            ("ContentType", "content-type"),
            ("Accept", "accept"),
            ("TargetVariant", "x-amzn-sagemaker-target-variant"),
            ("CustomAttributes", "x-amzn-sagemaker-custom-attributes"),
            ("InferenceId", "x-amzn-sagemaker-inference-id"),
        ):
            if headers.get(header):
                params[member] = headers[header]
        try:
            self._authorize(headers, "InvokeEndpoint", {"EndpointName": endpoint_name})
            operation = protocol.runtime_model().operation_model("InvokeEndpoint")
            protocol.validate_request(operation, params)
            invocation = self.backend.invoke_endpoint(
                endpoint_name,
                body,
                params.get("ContentType"),
                params.get("Accept"),
                params.get("TargetVariant"),
                params.get("InferenceId"),
            )
        except SageMakerError as error:
            return self._rest_error(error)
        except Exception as error:
            logger.exception(
                "InvokeEndpoint of %s failed inside the local SageMaker", endpoint_name
            )
            return self._rest_error(InternalFailure(f"{type(error).__name__}: {error}"))
        return WireResponse(
            200,
            invocation.body,
            {
                "Content-Type": invocation.content_type,
                "x-Amzn-Invoked-Production-Variant": invocation.variant,
                "x-amzn-RequestId": _request_id(),
            },
        )

    @staticmethod
    def _rest_error(error: SageMakerError) -> WireResponse:
        if error.code == "ValidationException":  # the runtime's code for the same thing
            error.code = "ValidationError"
        body = {"message": error.message, **error.fields}
        return WireResponse(
            error.status,
            json.dumps(body).encode(),
            {
                "Content-Type": "application/json",
                "x-amzn-ErrorType": error.code,
                "x-amzn-RequestId": _request_id(),
            },
        )
