"""The frame every step handler shares: one ``@step(InputModel)`` line instead of four.

``step`` wraps a handler in Powertools' own decorators, in the order each handler used to
write them: the Logger's Lambda context (cold start, request id), the Tracer's subsegment
(where tracing is on, see pipeline_common.tracing), the Metrics flush, and the parser
turning the event into the input model. The handler returns its typed output model (a
pydantic model), which becomes the plain JSON object the state machine's ResultSelector
reads. A ClientError that no ``aws_call`` caught still
becomes the project's exception (throttling -> SageMakerThrottled, retried by the state
machine), never a raw botocore error type the Retry clauses cannot name.

The tools are created per function (its POWERTOOLS_SERVICE_NAME); ``logger`` and ``count``
reach the running function's tools from anywhere in the handler module.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from botocore.exceptions import ClientError
from pydantic import BaseModel

from pipeline_common.aws import translate_client_error
from pipeline_common.tracing import traced

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

Handler = Callable[[Any, "LambdaContext"], Any]
LambdaEntry = Callable[[dict[str, Any], "LambdaContext"], Any]


def service_name() -> str:
    """The running function's service (template.yaml sets POWERTOOLS_SERVICE_NAME per function)."""
    return os.environ.get("POWERTOOLS_SERVICE_NAME", "service_undefined")


@functools.cache
def service_logger(service: str) -> Logger:
    """One Powertools Logger per service: the handler's log lines and its Lambda context."""
    return Logger(service=service)


class _RunningLogger:
    """``logger.info(...)`` on the Logger of the function that runs now."""

    def __getattr__(self, name: str) -> Any:
        return getattr(service_logger(service_name()), name)


logger: Logger = _RunningLogger()  # type: ignore[assignment]
# Powertools' Metrics instances share one metric set; the one step() flushes publishes these.
_metrics = Metrics()


def count(name: str, value: float = 1) -> None:
    """Add a Count metric, published when the handler returns."""
    _metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def measure(name: str, value: float) -> None:
    """Add a unitless metric (a p-value, a share), published when the handler returns."""
    _metrics.add_metric(name=name, unit=MetricUnit.NoUnit, value=value)


def output_model(handler: Handler) -> Any:
    """The handler's return annotation, resolved in its module (None when it has none)."""
    annotation = inspect.get_annotations(handler).get("return")
    if isinstance(annotation, str):
        # The module's own annotation, as typing.get_type_hints would evaluate it.
        return eval(annotation, handler.__globals__)
    return annotation


def as_state(result: Any) -> Any:
    """A pydantic output as the JSON object the state machine receives."""
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


def step(input_model: type[BaseModel], *, flush_metrics: bool = True) -> Callable[[Handler], Any]:
    """Frame a step handler: Logger context, Tracer, Metrics flush, event parsed into the model.

    ``flush_metrics=False`` for a handler that records no metric (the status checks of the
    wait loops), so Powertools does not warn about an empty metric set on every poll.
    """

    def decorate(handler: Handler) -> LambdaEntry:
        service = service_name()
        log = service_logger(service)

        @functools.wraps(handler)
        def run(event: Any, context: LambdaContext) -> Any:
            try:
                return as_state(handler(event, context))
            except ClientError as e:
                raise translate_client_error(e, e.operation_name, f"step {service}") from e

        entry = event_parser(run, model=input_model)
        if flush_metrics:
            entry = Metrics(service=service).log_metrics(entry)
        entry = log.inject_lambda_context(traced(entry, service))
        entry.input_model = input_model
        entry.output_model = output_model(handler)
        return entry

    return decorate
