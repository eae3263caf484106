"""X-Ray tracing of a handler, paid for only where tracing is on.

Powertools' ``Tracer()`` imports ``aws_xray_sdk.core`` even when it is disabled, and that
import builds the SDK's recorder, whose sampler creates a botocore X-Ray client (about 15 ms
after boto3 is loaded, 40-100 ms in a fresh interpreter; aws-xray-sdk-python issues #273 and
#311). A disabled Tracer then only wraps the handler in a subsegment that the disabled SDK
drops. So where Powertools would disable tracing (``POWERTOOLS_TRACE_DISABLED``, outside the
Lambda runtime, under ``sam local``), the handler is returned unwrapped and the SDK is never
imported; where it would trace (template.yaml's ``Tracing: Active`` on AWS), it is the same
``Tracer.capture_lambda_handler`` as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

# The Tracer class alone: aws_xray_sdk is behind Powertools' LazyLoader until a Tracer is built.
from aws_lambda_powertools.tracing.tracer import Tracer

Handler = TypeVar("Handler", bound=Callable[..., Any])


def tracing_enabled() -> bool:
    """Whether a Powertools Tracer built now would trace (Powertools' own rule, not a copy)."""
    return not Tracer._is_tracer_disabled()


def traced(handler: Handler, service: str) -> Handler:
    """``handler`` inside the Tracer's ``## handler`` subsegment when tracing is on, else as is."""
    if not tracing_enabled():
        return handler
    return Tracer(service=service).capture_lambda_handler(handler)
