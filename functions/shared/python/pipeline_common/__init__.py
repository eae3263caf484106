"""Shared code of the pipeline's Lambda functions (deployed as one Lambda layer).

Everything that more than one handler needs lives here: configuration read from the
environment, resource naming, SageMaker request builders, the gate policy, S3 helpers and
the exception classes whose names the state machine's Retry and Catch clauses match.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
