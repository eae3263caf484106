"""Step Functions' hard limits in moto's ASL interpreter, failing the way AWS fails.

moto's interpreter (LocalStack's) already fails a state whose input or output, or a task
result, is over 256 KiB with ``States.DataLimitExceeded``. Two things it does not do:

- ``States.ALL`` (and ``States.TaskFailed``) in a Catch or Retry also match
  ``States.DataLimitExceeded`` and ``States.Runtime``. AWS documents both as terminal: those
  wildcards cannot catch them. A Catch can still name them explicitly.
- An execution's history holds at most 25,000 events. When an execution has 24,999 and the next
  one is not ``ExecutionSucceeded``, AWS logs ``ExecutionFailed`` and the execution fails
  (docs: "Avoid reaching the history quota").

And moto answers GetExecutionHistory with every event at once, ignoring ``maxResults``,
``reverseOrder`` and ``nextToken``. AWS answers a page: at most ``maxResults`` events (default
100, at most 1000; 0 is the default), newest first with ``reverseOrder``, and a ``nextToken``
while more remain. A client written against moto's answer reads 100 events on AWS and misses
the rest; one that polls re-reads (and the local server re-serialises, at about 1.7 ms an
event) the whole history on every poll.

``install()`` replaces the three methods concerned (``ErrorEqualsDecl._eval_body``,
``EventManager.add_event`` and ``StepFunctionResponse.get_execution_history``) and returns the
function that puts them back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

MAX_HISTORY_EVENTS = 25_000
# GetExecutionHistory's page sizes (botocore's PageSize: 0-1000; "The default is 100").
DEFAULT_HISTORY_PAGE = 100
MAX_HISTORY_PAGE = 1000
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
    from moto.stepfunctions.responses import StepFunctionResponse

    original_match = ErrorEqualsDecl._eval_body
    original_add = EventManager.add_event
    original_history = StepFunctionResponse.get_execution_history

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

    def get_execution_history(self: Any) -> Any:
        from moto.core.responses import ActionResult

        answer = original_history(self).result
        page, token = history_page(
            list(answer["events"]),
            self._get_param("maxResults") or DEFAULT_HISTORY_PAGE,
            bool(self._get_param("reverseOrder")),
            self._get_param("nextToken"),
        )
        return ActionResult({"events": page, **({"nextToken": token} if token else {})})

    ErrorEqualsDecl._eval_body = match  # type: ignore[method-assign]
    EventManager.add_event = add_event  # type: ignore[method-assign]
    StepFunctionResponse.get_execution_history = get_execution_history  # type: ignore[method-assign]

    def uninstall() -> None:
        ErrorEqualsDecl._eval_body = original_match  # type: ignore[method-assign]
        EventManager.add_event = original_add  # type: ignore[method-assign]
        StepFunctionResponse.get_execution_history = original_history  # type: ignore[method-assign]

    return uninstall


def history_page(
    events: list[dict[str, Any]], size: int, reverse: bool, token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of an execution's history and the token of the next, as AWS pages it.

    The token names the last event id returned, not a position: events are only ever appended,
    so a newest-first reader's next page stays the same however many arrive meanwhile."""
    if size > MAX_HISTORY_PAGE:
        from moto.stepfunctions.exceptions import ValidationException

        raise ValidationException(
            f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
            f"constraint: Member must have value less than or equal to {MAX_HISTORY_PAGE}"
        )
    ordered = events[::-1] if reverse else events  # the interpreter appends in id order
    if token is not None:
        after = _token_event_id(token, reverse)
        ordered = [e for e in ordered if (e["id"] < after if reverse else e["id"] > after)]
    page = ordered[:size]
    more = len(ordered) > size
    return page, (_event_token(page[-1]["id"], reverse) if more else None)


def _event_token(event_id: int, reverse: bool) -> str:
    return base64.urlsafe_b64encode(json.dumps([event_id, reverse]).encode()).decode()


def _token_event_id(token: str, reverse: bool) -> int:
    from moto.stepfunctions.exceptions import InvalidToken

    try:
        event_id, token_reverse = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error) as error:
        raise InvalidToken("the nextToken was not returned by GetExecutionHistory") from error
    if token_reverse != reverse or not isinstance(event_id, int):
        raise InvalidToken("the nextToken was returned for another reverseOrder")
    return event_id
