"""EventBridge schedule expressions: `rate(...)` and AWS's six-field `cron(...)`.

AWS's cron is not Unix cron: six fields (minutes, hours, day-of-month, month, day-of-week,
year), `?` in exactly one of the two day fields, day-of-week numbered 1-7 from Sunday, `nL`
for the last weekday n of the month, `n#k` for its k-th one, `W` next to a day of the month,
and no seconds. The calendar arithmetic is croniter's (pinned in requirements/dev.txt); this
module checks AWS's rules and translates the fields croniter reads differently:

    cron(15 10 ? * 6L 2027)  ->  croniter "0 15 10 * * L5 2027" (second first; Friday is 5)

A rate fires every period from an anchor (the rule's creation); a cron fires on the calendar,
in UTC (EventBridge rules) or in the schedule's ScheduleExpressionTimezone (EventBridge
Scheduler). An expression AWS would refuse raises ScheduleExpressionError, which names the
expression and the reason.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

RATE = re.compile(r"^rate\((?P<value>\d+) (?P<unit>minute|minutes|hour|hours|day|days)\)$")
CRON = re.compile(r"^cron\((?P<fields>[^()]*)\)$")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]  # AWS's 1-7
FIELD_NAMES = ["minutes", "hours", "day-of-month", "month", "day-of-week", "year"]
FIELD_RANGES = {
    "minutes": (0, 59),
    "hours": (0, 23),
    "day-of-month": (1, 31),
    "month": (1, 12),
    "year": (1970, 2199),
}
NUMBER = re.compile(r"(?<![/#\d])\d+")  # a value, not a step (/n) or an occurrence (#n)
# What each field may hold (AWS's table of wildcards); letters are checked by croniter.
FIELD_CHARACTERS = {
    "minutes": set("0123456789,-*/"),
    "hours": set("0123456789,-*/"),
    "day-of-month": set("0123456789,-*?/LW"),
    "month": set("0123456789,-*/ABCDEFGJLMNOPRSTUVY"),
    "day-of-week": set("0123456789,-*?L#ADEFHIMNORSTUW"),
    "year": set("0123456789,-*/"),
}


class ScheduleExpressionError(ValueError):
    """An expression EventBridge would refuse; the message names it and says why."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"schedule expression {expression!r} is not valid: {reason}")
        self.expression = expression
        self.reason = reason


@dataclass(frozen=True)
class RateSchedule:
    expression: str
    period_s: int

    def next_after(self, after: float, anchor: float, speedup: float = 1.0) -> float:
        """The first tick strictly after `after` of anchor + k * period (k >= 1), in epoch
        seconds; `speedup` divides the period (a local-cloud setting for tests)."""
        period = self.period_s / speedup
        ticks = max(1, math.floor((after - anchor) / period) + 1)
        return anchor + ticks * period


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    croniter_expression: str
    timezone: str = "UTC"

    def next_after(self, after: float, anchor: float = 0.0, speedup: float = 1.0) -> float | None:
        """The first matching minute strictly after `after` (epoch seconds), None when no time
        matches any more (a past year, February 30). The calendar is not sped up: a cron
        names wall-clock times."""
        start = dt.datetime.fromtimestamp(after, ZoneInfo(self.timezone))
        try:
            found = croniter(self.croniter_expression, start, second_at_beginning=True).get_next(
                dt.datetime
            )
        except CroniterError:
            return None
        return found.timestamp()


Schedule = RateSchedule | CronSchedule


def parse_schedule(expression: str, timezone: str = "UTC") -> Schedule:
    """A RateSchedule or CronSchedule; ScheduleExpressionError when AWS would refuse it."""
    if not isinstance(expression, str):
        raise ScheduleExpressionError(str(expression), "it is not a string")
    if expression.startswith("rate("):
        return _rate(expression)
    if expression.startswith("cron("):
        return _cron(expression, timezone)
    if expression.startswith("at("):
        raise ScheduleExpressionError(
            expression, "one-time at(...) schedules are not emulated by the local cloud"
        )
    raise ScheduleExpressionError(expression, "it must be rate(value unit) or cron(fields)")


def _rate(expression: str) -> RateSchedule:
    match = RATE.match(expression)
    if match is None:
        raise ScheduleExpressionError(
            expression, "a rate is rate(value unit) with unit minute(s), hour(s) or day(s)"
        )
    value, unit = int(match["value"]), match["unit"]
    if value < 1:
        raise ScheduleExpressionError(expression, "the value must be a positive whole number")
    if (value == 1) != (not unit.endswith("s")):
        raise ScheduleExpressionError(
            expression, "the unit is singular for a value of 1 and plural for larger values"
        )
    return RateSchedule(expression, value * UNIT_SECONDS[unit.rstrip("s")])


def _cron(expression: str, timezone: str) -> CronSchedule:
    match = CRON.match(expression)
    if match is None:
        raise ScheduleExpressionError(expression, "a cron is cron(six fields)")
    fields = match["fields"].upper().split()
    if len(fields) != 6:
        raise ScheduleExpressionError(
            expression,
            f"AWS cron has six fields ({' '.join(FIELD_NAMES)}), this one has {len(fields)}",
        )
    for name, value in zip(FIELD_NAMES, fields, strict=True):
        unexpected = sorted(set(value) - FIELD_CHARACTERS[name])
        if unexpected:
            raise ScheduleExpressionError(
                expression, f"the {name} field {value!r} may not hold {''.join(unexpected)!r}"
            )
        low, high = FIELD_RANGES.get(name, (1, 7))
        for number in NUMBER.findall(value):
            if not low <= int(number) <= high:
                raise ScheduleExpressionError(
                    expression, f"the {name} field {value!r}: {number} is not in {low}-{high}"
                )
    minutes, hours, day_of_month, month, day_of_week, year = fields
    if any("?" in value and value != "?" for value in (day_of_month, day_of_week)):
        raise ScheduleExpressionError(expression, "'?' stands alone in its field")
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ScheduleExpressionError(
            expression, "exactly one of day-of-month and day-of-week must be '?'"
        )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleExpressionError(expression, f"unknown time zone {timezone!r}") from exc
    day_of_week = _day_of_week(expression, day_of_week)
    translated = f"0 {minutes} {hours} {day_of_month} {month} {day_of_week} {year}"
    schedule = CronSchedule(expression, translated, timezone)
    try:
        croniter(translated, second_at_beginning=True)
    except CroniterError as exc:
        raise ScheduleExpressionError(
            expression, f"it reads as {translated!r} in croniter's syntax, which refuses it: {exc}"
        ) from exc
    return schedule


def _day_of_week(expression: str, field: str) -> str:
    """AWS's day-of-week (1-7 from Sunday, nL, n#k) in croniter's words (names, Ln)."""
    if field in {"?", "*"}:
        return field
    items = []
    for item in field.split(","):
        if item == "L":  # the last day of the week
            items.append("SAT")
        elif item.endswith("L"):
            items.append("L" + str(DAYS.index(_day(expression, item[:-1]))))
        elif "#" in item:
            day, _, nth = item.partition("#")
            if nth not in {"1", "2", "3", "4", "5"}:
                raise ScheduleExpressionError(expression, f"{item!r}: '#' takes 1 to 5")
            items.append(f"{_day(expression, day)}#{nth}")
        else:
            items.append("-".join(_day(expression, part) for part in item.split("-")))
    return ",".join(items)


def _day(expression: str, value: str) -> str:
    if value in DAYS:
        return value
    if value.isdigit() and 1 <= int(value) <= 7:
        return DAYS[int(value) - 1]
    raise ScheduleExpressionError(
        expression, f"day-of-week {value!r} is not 1-7 (Sunday is 1) or SUN-SAT"
    )


__all__ = [
    "CronSchedule",
    "RateSchedule",
    "Schedule",
    "ScheduleExpressionError",
    "parse_schedule",
]
