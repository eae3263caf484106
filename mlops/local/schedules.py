"""The local cloud's scheduler: EventBridge rules and EventBridge Scheduler schedules fire.

moto stores scheduled rules (`events`) and schedules (`scheduler`) but never runs them. A
`LocalScheduler` thread reads them from moto's backends once a second, so a rule created,
changed, disabled or enabled through the API (`aws events disable-rule`) counts from the next
second, and fires each enabled one when its expression says (`schedule_expressions.py`):

- a rule sends the event EventBridge sends (`scheduled_event`), or its target's `Input`, to each
  Lambda target, once the function's resource policy lets events.amazonaws.com invoke it for
  that rule (the AWS::Lambda::Permission SAM generates), as an asynchronous invocation;
- a schedule sends its target's `Input` (with `<aws.scheduler.*>` context attributes filled in)
  or a default notification, signed as the schedule's RoleArn, so the role's policies decide.

Both go through Lambda's Invoke API on moto with InvocationType=Event: the local Lambda runtime's
path for every asynchronous invocation (queue, two retries, logs, the function's own role).

Missed ticks are not fired: after the cloud was down, or a rule disabled, the next tick is the
first one after now. A rate counts from the rule's creation (its anchor, kept across restarts in
`snapshot()`, with the runtime State of each rule). `MLOPS_LOCAL_SCHEDULE_SPEEDUP` (e.g. 60)
divides every rate's period for tests; crons keep the wall clock. `run_now` fires a rule or
schedule at once (`mlops schedule run NAME`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlops.local.schedule_expressions import ScheduleExpressionError, parse_schedule

log = logging.getLogger(__name__)

SPEEDUP_ENV = "MLOPS_LOCAL_SCHEDULE_SPEEDUP"
EVENTS_PRINCIPAL = "events.amazonaws.com"


class ScheduleNotFound(LookupError):
    pass


class ScheduleDisabled(RuntimeError):
    pass


def speedup_from_environment() -> float:
    value = os.environ.get(SPEEDUP_ENV, "1")
    try:
        speedup = float(value)
    except ValueError:
        speedup = 0.0
    if speedup <= 0:
        raise ValueError(f"{SPEEDUP_ENV}={value!r}: give a positive number (1 = real time)")
    return speedup


@dataclass
class Scheduled:
    """One rule or schedule as moto holds it now."""

    kind: str  # "rule" (EventBridge) or "schedule" (EventBridge Scheduler)
    name: str
    arn: str
    expression: str
    state: str
    targets: list[dict[str, Any]]
    timezone: str = "UTC"
    group: str = "default"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "arn": self.arn,
            "expression": self.expression,
            "state": self.state,
            "targets": [target.get("Arn") for target in self.targets],
        }


@dataclass
class Timer:
    anchor: float  # when the scheduler first saw it: rates count from here
    expression: str
    last_fired: float | None = None
    next_at: float | None = None
    fired: int = 0


@dataclass
class Invocation:
    """What one firing sent to one target, and whether the invoke was accepted."""

    scheduled: str
    target: str
    payload: dict[str, Any] | Any
    accepted: bool
    error: str | None = None


# -- payloads --------------------------------------------------------------------------------------
def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch_s), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_event(rule_arn: str, at: float, account: str, region: str) -> dict[str, Any]:
    """The event an EventBridge scheduled rule delivers to its targets."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": _iso(at),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def scheduler_payload(
    item: Scheduled, target: dict[str, Any], at: float, account: str, region: str
) -> Any:
    """A schedule's Input with its context attributes filled in, or a default notification."""
    execution_id = str(uuid.uuid4())
    if "Input" not in target:
        event = scheduled_event(item.arn, at, account, region)
        return {**event, "id": execution_id, "source": "aws.scheduler"}
    text = str(target["Input"])
    for attribute, value in {
        "<aws.scheduler.schedule-arn>": item.arn,
        "<aws.scheduler.scheduled-time>": _iso(at),
        "<aws.scheduler.execution-id>": execution_id,
        "<aws.scheduler.attempt-number>": "0",
    }.items():
        text = text.replace(attribute, value)
    return json.loads(text)


def rule_may_invoke(policy: dict[str, Any] | None, rule_arn: str) -> bool:
    """Whether a function's resource policy lets EventBridge invoke it for this rule."""
    for statement in (policy or {}).get("Statement", []):
        principal = statement.get("Principal", {})
        services = principal.get("Service", []) if isinstance(principal, dict) else principal
        services = services if isinstance(services, list) else [services]
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        if statement.get("Effect") != "Allow" or not (
            EVENTS_PRINCIPAL in services or "*" in services
        ):
            continue
        if not any(fnmatch.fnmatch("lambda:invokefunction", a.lower()) for a in actions):
            continue
        conditions = statement.get("Condition", {})
        sources = [
            value
            for operator in ("ArnLike", "ArnEquals", "StringEquals", "StringLike")
            for key, value in conditions.get(operator, {}).items()
            if key.lower() == "aws:sourcearn"
        ]
        if all(fnmatch.fnmatch(rule_arn, source) for source in sources):
            return True
    return False


# -- the scheduler ---------------------------------------------------------------------------------
@dataclass
class LocalScheduler:
    """Fires moto's scheduled rules and schedules; `invoke(target_arn, payload, role_arn)`
    sends one asynchronous invocation and raises on a refusal."""

    account_id: str
    region: str
    invoke: Callable[[str, Any, str | None], None]
    speedup: float = 1.0
    interval_s: float = 1.0
    clock: Callable[[], float] = time.time
    timers: dict[str, Timer] = field(default_factory=dict)
    # arn -> State the template deployed (a runtime change is kept while the template's holds)
    deployed_states: dict[str, str] = field(default_factory=dict)
    history: list[Invocation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: set[str] = set()  # expressions logged once as not valid

    # moto's view ---------------------------------------------------------------------------------
    def scheduled(self) -> list[Scheduled]:
        """Every scheduled rule on the default bus and every schedule, as moto holds them now."""
        from moto.events.models import events_backends
        from moto.scheduler.models import scheduler_backends

        found = []
        bus = events_backends[self.account_id][self.region].event_buses.get("default")
        for rule in list(bus.rules.values()) if bus else []:
            if rule.scheduled_expression:
                found.append(
                    Scheduled(
                        "rule",
                        rule.name,
                        rule.arn,
                        rule.scheduled_expression,
                        rule.state,
                        [dict(t) for t in rule.targets],
                    )
                )
        scheduler = scheduler_backends[self.account_id][self.region]
        for group in list(scheduler.schedule_groups.values()):
            for schedule in list(group.schedules.values()):
                found.append(
                    Scheduled(
                        "schedule",
                        schedule.name,
                        schedule.arn,
                        schedule.schedule_expression,
                        schedule.state,
                        [dict(schedule.target)],
                        schedule.schedule_expression_timezone or "UTC",
                        group.name,
                    )
                )
        return found

    def _set_state(self, arn: str, state: str) -> None:
        from moto.events.models import events_backends
        from moto.scheduler.models import scheduler_backends

        bus = events_backends[self.account_id][self.region].event_buses["default"]
        for rule in bus.rules.values():
            if rule.arn == arn:
                rule.state = state
        scheduler = scheduler_backends[self.account_id][self.region]
        for group in scheduler.schedule_groups.values():
            for schedule in group.schedules.values():
                if schedule.arn == arn:
                    schedule.state = state

    # ticking ------------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[Invocation]:
        """Fire what is due at `now`; the thread calls this every interval_s."""
        now = self.clock() if now is None else now
        fired: list[Invocation] = []
        with self._lock:
            present = set()
            for item in self.scheduled():
                present.add(item.arn)
                due = self._due(item, now)
                if due is not None:
                    fired += self._fire(item, due)
            for arn in set(self.timers) - present:  # deleted: a new one of that name starts anew
                del self.timers[arn]
        return fired

    def _due(self, item: Scheduled, now: float) -> float | None:
        """The tick time when `item` fires now, else None (and its next tick remembered)."""
        try:
            schedule = parse_schedule(item.expression, item.timezone)
        except ScheduleExpressionError as exc:
            if item.arn + item.expression not in self._refused:
                self._refused.add(item.arn + item.expression)
                log.warning("%s %s never fires: %s", item.kind, item.name, exc)
            return None
        timer = self.timers.get(item.arn)
        if timer is None or timer.expression != item.expression:
            timer = self.timers[item.arn] = Timer(anchor=now, expression=item.expression)
        if item.state != "ENABLED":
            timer.next_at = None  # re-enabled: from the first tick after that moment
            return None
        if timer.next_at is None:
            start = max(now, timer.last_fired or now)
            timer.next_at = schedule.next_after(start, timer.anchor, self.speedup)
        if timer.next_at is None or now < timer.next_at:
            return None
        due = timer.next_at
        timer.last_fired = due
        timer.fired += 1
        timer.next_at = schedule.next_after(now, timer.anchor, self.speedup)  # no catching up
        return due

    def _fire(self, item: Scheduled, at: float) -> list[Invocation]:
        results = []
        for target in item.targets:
            arn = str(target.get("Arn", ""))
            if item.kind == "rule":
                payload = (
                    json.loads(target["Input"])
                    if "Input" in target
                    else scheduled_event(item.arn, at, self.account_id, self.region)
                )
                unsupported = {"InputPath", "InputTransformer"} & set(target)
                if unsupported:
                    log.warning(
                        "rule %s target %s: %s not emulated; the whole event is sent",
                        item.name,
                        target.get("Id"),
                        ", ".join(sorted(unsupported)),
                    )
                role = None
            else:
                payload = scheduler_payload(item, target, at, self.account_id, self.region)
                role = target.get("RoleArn")
            results.append(self._send(item, arn, payload, role))
        return results

    def _send(self, item: Scheduled, arn: str, payload: Any, role: str | None) -> Invocation:
        if ":lambda:" not in arn or ":function:" not in arn:
            message = f"target {arn} is not a Lambda function: not emulated"
            log.warning("%s %s: %s", item.kind, item.name, message)
            return self._record(Invocation(item.name, arn, payload, False, message))
        if item.kind == "rule" and not rule_may_invoke(self._function_policy(arn), item.arn):
            message = (
                f"the resource policy of {arn} does not allow {EVENTS_PRINCIPAL} to invoke it "
                f"for {item.arn} (an AWS::Lambda::Permission): not invoked, as on AWS"
            )
            log.warning("rule %s: %s", item.name, message)
            return self._record(Invocation(item.name, arn, payload, False, message))
        try:
            self.invoke(arn, payload, role)
        except Exception as exc:  # a refused invoke is EventBridge's FailedInvocations
            log.warning("%s %s could not invoke %s: %s", item.kind, item.name, arn, exc)
            return self._record(Invocation(item.name, arn, payload, False, str(exc)))
        log.info("%s %s invoked %s", item.kind, item.name, arn)
        return self._record(Invocation(item.name, arn, payload, True))

    def _record(self, invocation: Invocation) -> Invocation:
        self.history = [*self.history[-99:], invocation]
        return invocation

    def _function_policy(self, function_arn: str) -> dict[str, Any] | None:
        from moto.awslambda.models import lambda_backends

        backend = lambda_backends[self.account_id][self.region]
        try:
            return json.loads(json.loads(backend.get_policy(function_arn))["Policy"])
        except Exception:  # no function, or no policy at all
            return None

    # now, by name -------------------------------------------------------------------------------
    def run_now(self, name: str) -> list[Invocation]:
        """Fire the rule or schedule called `name` now, as its next tick would."""
        with self._lock:
            matches = [item for item in self.scheduled() if name in (item.name, item.arn)]
            if not matches:
                known = sorted(item.name for item in self.scheduled())
                raise ScheduleNotFound(
                    f"no scheduled rule or schedule is called {name!r}; there are: "
                    + (", ".join(known) or "none")
                )
            item = matches[0]
            if item.state != "ENABLED":
                command = (
                    f"aws events enable-rule --name {item.name}"
                    if item.kind == "rule"
                    else f"aws scheduler update-schedule --name {item.name} --state ENABLED ..."
                )
                raise ScheduleDisabled(
                    f"{item.kind} {item.name} is {item.state}: it never fires on AWS; "
                    f"enable it first ({command})"
                )
            return self._fire(item, self.clock())

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = []
            for item in self.scheduled():
                timer = self.timers.get(item.arn)
                rows.append(
                    {
                        **item.describe(),
                        "next": _iso(timer.next_at) if timer and timer.next_at else None,
                        "last_fired": _iso(timer.last_fired)
                        if timer and timer.last_fired
                        else None,
                    }
                )
            return rows

    # state that lasts ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            states = {item.arn: item.state for item in self.scheduled()}
            return {
                "timers": {
                    arn: {
                        "anchor": t.anchor,
                        "expression": t.expression,
                        "last_fired": t.last_fired,
                    }
                    for arn, t in self.timers.items()
                },
                "states": states,
                "deployed_states": dict(self.deployed_states),
            }

    def restore(self, data: dict[str, Any] | None) -> dict[str, int]:
        """Anchors and last ticks of the rules that are still there with the same expression;
        a State changed at run time is kept unless the template's State changed since."""
        counts = {"schedules": 0, "state_kept": 0}
        if not data:
            return counts
        with self._lock:
            present = {item.arn: item for item in self.scheduled()}
            for arn, saved in data.get("timers", {}).items():
                item = present.get(arn)
                if item is not None and item.expression == saved["expression"]:
                    self.timers[arn] = Timer(
                        saved["anchor"], saved["expression"], saved.get("last_fired")
                    )
                    counts["schedules"] += 1
            saved_deployed = data.get("deployed_states", {})
            for arn, state in data.get("states", {}).items():
                item = present.get(arn)
                same_template = saved_deployed.get(arn) == self.deployed_states.get(arn)
                if item is not None and same_template and state != item.state:
                    self._set_state(arn, state)
                    counts["state_kept"] += 1
        return counts

    # the thread ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="schedules", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:
                log.exception("the scheduler's tick failed; it goes on")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


# -- the local-only hook: `mlops schedule list|run` --------------------------------------------
HOOK_PREFIX = "/_mlops/schedules"


class ScheduleHook:
    """WSGI middleware in front of moto: GET /_mlops/schedules lists the rules and schedules
    with their next and last ticks; POST /_mlops/schedules/<name>/run fires one now. A path of
    the local cloud only (no AWS API has it); everything else goes to moto."""

    def __init__(self, app: Callable[..., Any], scheduler: LocalScheduler) -> None:
        self.app = app
        self.scheduler = scheduler

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path != HOOK_PREFIX and not path.startswith(HOOK_PREFIX + "/"):
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        parts = path[len(HOOK_PREFIX) :].strip("/").split("/")
        if parts == [""] and method == "GET":
            return _answer(start_response, 200, {"schedules": self.scheduler.describe()})
        if len(parts) == 2 and parts[1] == "run" and method == "POST":
            from urllib.parse import unquote

            try:
                invocations = self.scheduler.run_now(unquote(parts[0]))
            except ScheduleNotFound as exc:
                return _answer(start_response, 404, {"message": str(exc)})
            except ScheduleDisabled as exc:
                return _answer(start_response, 409, {"message": str(exc)})
            return _answer(
                start_response,
                200,
                {"invocations": [invocation.__dict__ for invocation in invocations]},
            )
        return _answer(start_response, 404, {"message": f"no such local hook: {method} {path}"})


def _answer(start_response: Callable[..., Any], status: int, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    reason = {200: "OK", 404: "Not Found", 409: "Conflict"}[status]
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def install_hook(moto_server: Any, scheduler: LocalScheduler) -> None:
    """Put a ScheduleHook in front of a started ThreadedMotoServer's WSGI app."""
    wsgi = moto_server._server  # werkzeug reads `server.app` for every request
    wsgi.app = ScheduleHook(wsgi.app, scheduler)


__all__ = [
    "HOOK_PREFIX",
    "SPEEDUP_ENV",
    "Invocation",
    "LocalScheduler",
    "ScheduleDisabled",
    "ScheduleHook",
    "ScheduleNotFound",
    "Scheduled",
    "install_hook",
    "rule_may_invoke",
    "scheduled_event",
    "speedup_from_environment",
]
