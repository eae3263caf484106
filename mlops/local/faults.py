"""Fault injection: the one seam through which tests make the local cloud misbehave.

Faults are named in the environment variable ``MLOPS_LOCAL_FAULTS`` (read at every check, so a
test can set it with monkeypatch after the service started) and/or in
``SageMakerConfig.faults``. Format: comma-separated ``name`` or ``name=argument``, e.g.
``MLOPS_LOCAL_FAULTS="training_fail=tune-0,endpoint_start_fail"``.

Faults wired now (the argument, when given, must be a substring of the resource name; several
alternatives are separated by ``|``, e.g. ``training_fail=-001-|retrain``):

- ``training_fail[=name-part]``: the training job fails as if the script exited 1
  (``AlgorithmError``) before the script runs (local SageMaker).
- ``endpoint_start_fail[=name-part]``: the model server of an endpoint deployment never
  passes /ping (CreateEndpoint -> Failed; UpdateEndpoint -> rolled back). The name part may
  match the endpoint or the deployed model (so one update of a long-lived endpoint can fail).
- ``throttle=Operation[:count]``: the next ``count`` (default 1) calls of that control-plane
  operation answer ``ThrottlingException`` (local SageMaker).
- ``quota=Operation[:count]``: the same with ``ResourceLimitExceeded``, as when the account's
  instance quota is used up by other jobs (local SageMaker).
- ``rule_error[=name-part]``: a Debugger rule evaluation of a training job ends in ``Error``
  instead of running (its processing job "exited"); the name part matches
  ``<training job>/<RuleConfigurationName>``: ``rule_error=/VanishingGradient`` hits that
  rule of every job, ``rule_error=ruleerr-retrain`` every rule of that data set's retrain
  (local SageMaker).
- ``lambda_hang[=name-part][:count]``: the Lambda worker blocks instead of calling the handler,
  so the local Lambda runtime's own timeout fires (``Sandbox.Timedout``, the environment is
  discarded), exactly as a hung handler on AWS. The name part matches the FunctionName or the
  template's logical id; with ``:count`` only the next ``count`` matching invocations hang,
  without it every one does.

Handlers never know about faults: they only see the AWS behaviour the fault produces.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

FAULTS_ENV = "MLOPS_LOCAL_FAULTS"
KNOWN_FAULTS = frozenset(
    {"training_fail", "endpoint_start_fail", "throttle", "quota", "lambda_hang", "rule_error"}
)

logger = logging.getLogger(__name__)


def parse_faults(spec: str) -> dict[str, str]:
    """``"a,b=x"`` -> ``{"a": "", "b": "x"}``; unknown names are logged and kept (typos show)."""
    faults: dict[str, str] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, argument = item.partition("=")
        name = name.strip()
        if name not in KNOWN_FAULTS:
            logger.warning(
                "unknown fault %r in %s (known: %s)",
                name,
                FAULTS_ENV,
                ", ".join(sorted(KNOWN_FAULTS)),
            )
        faults[name] = argument.strip()
    return faults


def split_count(argument: str) -> tuple[str, int | None]:
    """``"a|b:2"`` -> ``("a|b", 2)``; ``"a|b"`` -> ``("a|b", None)`` (no limit)."""
    head, separator, tail = argument.rpartition(":")
    if separator and tail.isdigit():
        return head, int(tail)
    return argument, None


def _names(argument: str, resource_names: tuple[str, ...]) -> bool:
    parts = [part for part in argument.split("|") if part]
    return not parts or any(part in resource for part in parts for resource in resource_names)


class Faults:
    """Answers "is fault X active for resource Y?" from config plus the live environment."""

    def __init__(self, configured: Iterable[str] = ()) -> None:
        self._configured = parse_faults(",".join(configured))
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def active(self) -> dict[str, str]:
        return {**self._configured, **parse_faults(os.environ.get(FAULTS_ENV, ""))}

    def hits(self, name: str, *resource_names: str) -> bool:
        """True when fault ``name`` is on and its argument (if any) names one of the resources.

        The argument is one name part or several separated by ``|``; it names a resource when
        one of its parts is a substring of that resource's name.
        """
        faults = self.active()
        if name not in faults:
            return False
        hit = _names(faults[name], resource_names)
        if hit:
            logger.warning("fault %s injected for %s", name, ", ".join(resource_names) or "(any)")
        return hit

    def hits_counted(self, name: str, *resource_names: str) -> bool:
        """Like ``hits`` for an argument ``name-part[:count]``: only ``count`` hits, then off.

        The count is kept per fault and argument, so a test that sets a new spec starts afresh.
        """
        return self._take(name, lambda parts: _names(parts, resource_names), default_count=None)

    def should_throttle(self, operation: str) -> bool:
        """Consume one throttled call of ``operation`` when ``throttle=Operation[:count]`` is on."""
        return self.fails_call("throttle", operation)

    def fails_call(self, name: str, operation: str) -> bool:
        """Consume one failed call of ``operation`` when ``name=Operation[:count]`` is on."""
        return self._take(name, lambda target: target == operation, default_count=1)

    def _take(self, name: str, matches: Callable[[str], bool], default_count: int | None) -> bool:
        """One use of fault ``name`` when its argument (before ``:count``) matches."""
        argument = self.active().get(name)
        if argument is None:
            return False
        target, count = split_count(argument)
        if not matches(target):
            return False
        count = default_count if count is None else count
        used = self._consume(f"{name}={argument}", count)
        if used is None:
            return False
        limit = "" if count is None else f" ({used}/{count})"
        logger.warning("fault %s injected for %s%s", name, target or "(any)", limit)
        return True

    def _consume(self, key: str, count: int | None) -> int | None:
        """Take one use of ``key``: its number (1-based), or None once ``count`` are used."""
        with self._lock:
            used = self._used.get(key, 0)
            if count is not None and used >= count:
                return None
            self._used[key] = used + 1
            return used + 1
