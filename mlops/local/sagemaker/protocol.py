"""SageMaker's wire contract, taken from botocore's own service models.

Requests are checked with botocore's ParamValidator (required members, types, unknown members,
minimum lengths and values) and then with the constraints botocore leaves to the server
(maximum lengths and values, patterns, enums), so the local service accepts what AWS accepts.
Responses are serialised member by member from the output shape (timestamps as epoch seconds,
as the ``json`` protocol sends them) and, in strict mode, validated against it too.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections.abc import Iterator
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape
from botocore.utils import parse_to_aware_datetime
from botocore.validate import ParamValidator

from mlops.local.sagemaker.errors import InternalFailure, ValidationException

logger = logging.getLogger(__name__)

# The operations of docs/contracts.md: exactly these are served.
CONTROL_PLANE_OPERATIONS = frozenset(
    {
        "CreateHyperParameterTuningJob",
        "DescribeHyperParameterTuningJob",
        "ListHyperParameterTuningJobs",
        "ListTrainingJobsForHyperParameterTuningJob",
        "StopHyperParameterTuningJob",
        "CreateTrainingJob",
        "DescribeTrainingJob",
        "StopTrainingJob",
        "CreateModel",
        "DescribeModel",
        "CreateModelPackageGroup",
        "DescribeModelPackageGroup",
        "ListModelPackageGroups",
        "DeleteModelPackageGroup",
        "CreateModelPackage",
        "DescribeModelPackage",
        "ListModelPackages",
        "UpdateModelPackage",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "UpdateEndpoint",
        "DescribeEndpoint",
        "DescribeEndpointConfig",
        "DeleteEndpoint",
        "ListEndpoints",
        "AddTags",
        "ListTags",
    }
)
RUNTIME_OPERATIONS = frozenset({"InvokeEndpoint"})


@functools.cache
def sagemaker_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("sagemaker")


@functools.cache
def runtime_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("sagemaker-runtime")


def runtime_header(operation: str, member: str) -> str:
    """The HTTP header a runtime operation's member travels in (botocore's model), e.g.
    InvokeEndpoint's CustomAttributes: X-Amzn-SageMaker-Custom-Attributes."""
    shape = runtime_model().operation_model(operation).input_shape.members[member]
    return shape.serialization["name"]


def control_plane_operation(name: str) -> OperationModel:
    return sagemaker_model().operation_model(name)


def lower_camel(name: str) -> str:
    """AWS names members in validation messages in lowerCamelCase ('trainingJobName')."""
    return name[:1].lower() + name[1:]


# --- requests ---------------------------------------------------------------------------------


def validate_request(operation: OperationModel, params: dict[str, Any]) -> dict[str, Any]:
    """Reject what AWS rejects; return the params with timestamps as aware datetimes."""
    shape = operation.input_shape
    if shape is None:
        return {}
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ValidationException(report.generate_report())
    problems = list(constraint_problems(params, shape, ""))
    if problems:
        count = len(problems)
        plural = "error" if count == 1 else "errors"
        raise ValidationException(f"{count} validation {plural} detected: " + "; ".join(problems))
    return decode_timestamps(params, shape)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    """AWS patterns are Java regexes matched against the whole value (botocore's models drop
    the anchors); the rare one Python cannot compile is skipped."""
    try:
        return re.compile(pattern)
    except re.error:
        logger.debug("pattern not checkable in Python: %s", pattern)
        return None


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."


def constraint_problems(value: Any, shape: Shape, path: str) -> Iterator[str]:
    """Max length/value, pattern and enum violations, worded as AWS's validation errors."""
    if value is None:
        return
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                yield from constraint_problems(
                    item, shape.members[key], _join(path, lower_camel(key))
                )
    elif kind == "list" and isinstance(value, list | tuple):
        if "max" in meta and len(value) > meta["max"]:
            yield (
                f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        for index, item in enumerate(value, start=1):
            yield from constraint_problems(item, shape.member, f"{path}.{index}.member")
    elif kind == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            yield (
                f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        for key, item in value.items():
            yield from constraint_problems(key, shape.key, f"{path}.key")
            yield from constraint_problems(item, shape.value, f"{path}.{key}")
    elif kind == "string" and isinstance(value, str):
        yield from _string_problems(value, shape, path)
    elif (
        kind in {"integer", "long", "float", "double"}
        and isinstance(value, int | float)
        and "max" in meta
        and value > meta["max"]
    ):
        yield (
            f"Value '{value}' at '{path}' failed to satisfy constraint: "
            f"Member must have value less than or equal to {meta['max']}"
        )


def _string_problems(value: str, shape: Shape, path: str) -> Iterator[str]:
    meta = shape.metadata
    if "max" in meta and len(value) > meta["max"]:
        yield (
            f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {meta['max']}"
        )
    enum = getattr(shape, "enum", None)
    if enum and value not in enum:
        yield (
            f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(enum)}]"
        )
    pattern = meta.get("pattern")
    compiled = _compiled(pattern) if pattern else None
    if compiled is not None and not compiled.fullmatch(value):
        yield (
            f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {pattern}"
        )


def decode_timestamps(value: Any, shape: Shape) -> Any:
    """JSON carries timestamps as epoch numbers; the models work with aware datetimes."""
    kind = shape.type_name
    if value is None:
        return None
    if kind == "timestamp":
        if isinstance(value, int | float):
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        return parse_to_aware_datetime(value)
    if kind == "structure" and isinstance(value, dict):
        return {
            key: decode_timestamps(item, shape.members[key]) if key in shape.members else item
            for key, item in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [decode_timestamps(item, shape.member) for item in value]
    if kind == "map" and isinstance(value, dict):
        return {key: decode_timestamps(item, shape.value) for key, item in value.items()}
    return value


# --- responses --------------------------------------------------------------------------------


class ShapeMismatch(Exception):
    """A response member that the output shape does not define (a bug in the models)."""


def serialize(value: Any, shape: Shape, path: str = "") -> Any:
    """Python response -> JSON-ready value, following the shape (timestamps -> epoch seconds)."""
    kind = shape.type_name
    if kind == "structure":
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                continue
            if key not in shape.members:
                raise ShapeMismatch(f"{_join(path, key)} is not a member of {shape.name}")
            out[key] = serialize(item, shape.members[key], _join(path, key))
        return out
    if kind == "list":
        return [serialize(item, shape.member, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        return {key: serialize(item, shape.value, f"{path}.{key}") for key, item in value.items()}
    if kind == "timestamp":
        if isinstance(value, dt.datetime):
            return round(value.timestamp(), 3)
        return value
    if kind in {"float", "double"}:
        return float(value)
    return value


def check_response(operation: OperationModel, response: dict[str, Any], strict: bool) -> None:
    """Validate a response against its output shape: required members, types, enums, lengths.

    Strict mode (tests) turns a mismatch into InternalFailure so it is caught where it is made;
    otherwise it is logged, because a client may still cope with it.
    """
    shape = operation.output_shape
    if shape is None:
        return
    report = ParamValidator().validate(response, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += list(constraint_problems(response, shape, ""))
    if not problems:
        return
    message = f"{operation.name} response does not match the service model: " + "; ".join(problems)
    if strict:
        raise InternalFailure(message)
    logger.error(message)
