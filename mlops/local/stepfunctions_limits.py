"""Step Functions' hard limits in moto's ASL interpreter, failing the way AWS fails.

moto's interpreter (LocalStack's) already fails a state whose input or output, or a task
result, is over 256 KiB with ``States.DataLimitExceeded``. Two things it does not do:

- ``States.ALL`` (and ``States.TaskFailed``) in a Catch or Retry also match
  ``States.DataLimitExceeded`` and ``States.Runtime``. AWS documents both as terminal: those
  wildcards cannot catch them. A Catch can still name them explicitly.
- An execution's history holds at most 25,000 events. When an execution has 24,999 and the next
  one is not ``ExecutionSucceeded``, AWS logs ``ExecutionFailed`` and the execution fails
  (docs: "Avoid reaching the history quota").

``install()`` replaces the two methods concerned (``ErrorEqualsDecl._eval_body`` and
``EventManager.add_event``) and returns the function that puts them back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_HISTORY_EVENTS = 25_000
TERMINAL_ERRORS = ("States.DataLimitExceeded", "States.Runtime")
WILDCARDS = ("States.ALL", "States.TaskFailed")
EXECUTION_END_EVENTS = (
    "ExecutionSucceeded",
    "ExecutionFailed",
    "ExecutionAborted",
    "ExecutionTimedOut",
)


class ExecutionHistoryLimitExceeded(RuntimeError):
    """The execution's history is full: the interpreter ends the execution as failed."""


def _error_name(value: Any) -> str | None:
    return getattr(value, "error_name", None)


def install() -> Callable[[], None]:
    from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import (
        ErrorEqualsDecl,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

    original_match = ErrorEqualsDecl._eval_body
    original_add = EventManager.add_event

    def match(self: Any, env: Any) -> None:
        error = _error_name(env.stack[-1]) if env.stack else None
        names = {_error_name(name) for name in self.error_names}
        if error in TERMINAL_ERRORS and error not in names and names & set(WILDCARDS):
            env.stack.pop()
            env.stack.append(False)  # a wildcard never catches a terminal error
            return
        original_match(self, env)

    def add_event(self: Any, context: Any, event_type: Any, *args: Any, **kwargs: Any) -> int:
        full = len(self._history_event_list) >= MAX_HISTORY_EVENTS - 1
        if full and getattr(event_type, "value", event_type) not in EXECUTION_END_EVENTS:
            raise ExecutionHistoryLimitExceeded(
                f"The execution reached the maximum number of history events "
                f"({MAX_HISTORY_EVENTS}); split the work into child executions"
            )
        return original_add(self, context, event_type, *args, **kwargs)

    ErrorEqualsDecl._eval_body = match  # type: ignore[method-assign]
    EventManager.add_event = add_event  # type: ignore[method-assign]

    def uninstall() -> None:
        ErrorEqualsDecl._eval_body = original_match  # type: ignore[method-assign]
        EventManager.add_event = original_add  # type: ignore[method-assign]

    return uninstall
