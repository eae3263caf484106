"""What one API call needs from IAM, shared by the evaluator (iam.py) and the services that map
their own operations onto it (the local SageMaker's auth.py), so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """What one API call needs: an action on each resource, with the request's condition keys."""

    action: str  # service:Operation, as IAM names it
    resources: tuple[str, ...] = ("*",)
    conditions: tuple[tuple[str, str], ...] = ()
