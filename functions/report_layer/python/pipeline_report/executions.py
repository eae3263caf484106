"""Step-by-step views of Step Functions executions, read from the execution history.

The history is the source of truth on AWS and locally alike; the CLI, reports and the console all
read states from here rather than keeping their own records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class StepRecord:
    """One visit of one state (a wait loop visits the same state many times)."""

    name: str
    state_type: str
    started: datetime
    ended: datetime | None = None
    status: str = "RUNNING"
    input: Any = None
    output: Any = None
    error: str | None = None
    cause: str | None = None
    attempts: int = 0

    @property
    def duration_s(self) -> float | None:
        return (self.ended - self.started).total_seconds() if self.ended else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.state_type,
            "status": self.status,
            "started": self.started.isoformat(),
            "ended": self.ended.isoformat() if self.ended else None,
            "duration_s": self.duration_s,
            "error": self.error,
            "cause": self.cause,
            "attempts": self.attempts,
        }


@dataclass
class ExecutionView:
    arn: str
    name: str
    status: str
    started: datetime
    stopped: datetime | None
    input: Any
    output: Any
    error: str | None
    cause: str | None
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        return (self.stopped - self.started).total_seconds() if self.stopped else None

    def to_json(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "name": self.name,
            "status": self.status,
            "started": self.started.isoformat(),
            "stopped": self.stopped.isoformat() if self.stopped else None,
            "duration_s": self.duration_s,
            "error": self.error,
            "cause": self.cause,
            "output": self.output,
            "steps": [step.to_json() for step in self.steps],
        }


@dataclass
class StateSummary:
    """All visits of one state folded into one row (wait loops visit a state many times)."""

    name: str
    state_type: str
    started: datetime
    status: str
    visits: int
    duration_s: float | None
    error: str | None
    cause: str | None


def summarize_steps(steps: list[StepRecord]) -> list[StateSummary]:
    """One row per state, in order of first visit; status, error and cause of the last visit."""
    rows: dict[str, StateSummary] = {}
    for step in steps:
        row = rows.get(step.name)
        if row is None:
            rows[step.name] = StateSummary(
                name=step.name,
                state_type=step.state_type,
                started=step.started,
                status=step.status,
                visits=1,
                duration_s=step.duration_s,
                error=step.error,
                cause=step.cause,
            )
            continue
        row.visits += 1
        row.status, row.error, row.cause = step.status, step.error, step.cause
        if step.duration_s is not None:
            row.duration_s = (row.duration_s or 0.0) + step.duration_s
    return list(rows.values())


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _history_pages(sfn: Any, **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
    """GetExecutionHistory's pages for these arguments, following nextToken."""
    while True:
        page = sfn.get_execution_history(**kwargs)
        yield page["events"]
        if "nextToken" not in page:
            return
        kwargs["nextToken"] = page["nextToken"]


def full_history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    pages = _history_pages(sfn, executionArn=execution_arn, maxResults=1000)
    return [event for page in pages for event in page]


# Newest-first page size when looking for new events: about what one poll of a wait loop adds.
NEW_EVENTS_PAGE = 25


class History:
    """An execution's history, read in full once and then only its new events on each read.

    A poll loop that re-read every event made each poll cost the whole history: a local run
    with 3,366 events took 5.6 s of the local cloud's CPU per read, and on AWS a read is pages
    of 1,000 against GetExecutionHistory's throttle. Events are only ever appended (ids 1, 2,
    ...), so the new ones are those read newest first until a known id.
    """

    def __init__(self, execution_arn: str) -> None:
        self.execution_arn = execution_arn
        self.events: list[dict[str, Any]] = []

    def read(self, sfn: Any) -> list[dict[str, Any]]:
        if not self.events:
            self.events = full_history(sfn, self.execution_arn)
        else:
            self.events.extend(self._events_after(sfn, self.events[-1]["id"]))
        return self.events

    def _events_after(self, sfn: Any, known_id: int) -> list[dict[str, Any]]:
        newest_first: list[dict[str, Any]] = []
        pages = _history_pages(
            sfn, executionArn=self.execution_arn, maxResults=NEW_EVENTS_PAGE, reverseOrder=True
        )
        for page in pages:
            for event in page:
                if event["id"] <= known_id:
                    return newest_first[::-1]
                newest_first.append(event)
        return newest_first[::-1]


def steps_from_history(events: list[dict[str, Any]]) -> list[StepRecord]:
    """Pair each StateEntered with its StateExited; task failures and retries fill the errors."""
    steps: list[StepRecord] = []
    current: StepRecord | None = None
    for event in events:
        kind: str = event["type"]
        if kind.endswith("StateEntered"):
            details = event["stateEnteredEventDetails"]
            current = StepRecord(
                name=details["name"],
                state_type=kind[: -len("StateEntered")],
                started=event["timestamp"],
                input=_loads(details.get("input")),
            )
            steps.append(current)
        elif current is None:
            continue
        elif kind.endswith("StateExited"):
            details = event["stateExitedEventDetails"]
            current.ended = event["timestamp"]
            current.output = _loads(details.get("output"))
            # An error still recorded at exit was not cured by a retry: a Catch took over.
            current.status = "CAUGHT" if current.error else "SUCCEEDED"
        elif kind in ("TaskScheduled", "LambdaFunctionScheduled"):
            current.attempts += 1
        elif kind in ("TaskSucceeded", "LambdaFunctionSucceeded"):
            current.error = current.cause = None  # an earlier attempt failed, a retry did not
        elif kind.endswith("Failed") or kind.endswith("TimedOut"):
            details = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            current.error = details.get("error")
            current.cause = details.get("cause")
            if kind == "ExecutionFailed":
                current.status, current.ended = "FAILED", event["timestamp"]
    if current and current.state_type == "Fail":
        current.status = "FAILED"
        current.ended = current.ended or current.started
    return steps


def describe(sfn: Any, execution_arn: str, history: History | None = None) -> ExecutionView:
    """The execution as it is now; pass the same `history` on every poll of one execution."""
    history = history or History(execution_arn)
    description = sfn.describe_execution(executionArn=execution_arn)
    return ExecutionView(
        arn=execution_arn,
        name=description["name"],
        status=description["status"],
        started=description["startDate"],
        stopped=description.get("stopDate"),
        input=_loads(description.get("input")),
        output=_loads(description.get("output")),
        error=description.get("error"),
        cause=description.get("cause"),
        steps=steps_from_history(history.read(sfn)),
    )


def list_executions(sfn: Any, state_machine_arn: str, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, as the console shows them."""
    page = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=limit)
    return sorted(page["executions"], key=lambda item: item["startDate"], reverse=True)


def resolve_execution_arn(sfn: Any, state_machine_arn: str, ident: str) -> str:
    """`latest`, a full ARN, or an execution name."""
    if ident.startswith("arn:"):
        return ident
    executions = list_executions(sfn, state_machine_arn, limit=1000)
    if ident == "latest":
        if not executions:
            raise LookupError("There are no executions yet: upload a data set with `mlops upload`")
        return executions[0]["executionArn"]
    for item in executions:
        if item["name"] == ident:
            return item["executionArn"]
    raise LookupError(f"No execution named {ident!r}; `mlops executions` lists them")
