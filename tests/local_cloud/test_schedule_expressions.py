"""EventBridge schedule expressions as the local cloud reads them (schedule_expressions.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from mlops.local.schedule_expressions import (
    CronSchedule,
    RateSchedule,
    ScheduleExpressionError,
    parse_schedule,
)

NEW_YEAR = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()  # a Thursday


def ticks(expression: str, count: int = 2, timezone: str = "UTC") -> list[str]:
    schedule = parse_schedule(expression, timezone)
    found, after = [], NEW_YEAR
    for _ in range(count):
        after = schedule.next_after(after, anchor=NEW_YEAR)
        found.append(dt.datetime.fromtimestamp(after, dt.UTC).strftime("%Y-%m-%d %a %H:%M"))
    return found


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("rate(1 minute)", ["2026-01-01 Thu 00:01", "2026-01-01 Thu 00:02"]),
        ("rate(5 minutes)", ["2026-01-01 Thu 00:05", "2026-01-01 Thu 00:10"]),
        ("rate(1 day)", ["2026-01-02 Fri 00:00", "2026-01-03 Sat 00:00"]),
        ("cron(0 10 * * ? *)", ["2026-01-01 Thu 10:00", "2026-01-02 Fri 10:00"]),
        ("cron(0/15 * * * ? *)", ["2026-01-01 Thu 00:15", "2026-01-01 Thu 00:30"]),
        ("cron(0 18 ? * MON-FRI *)", ["2026-01-01 Thu 18:00", "2026-01-02 Fri 18:00"]),
        # day-of-week counts from Sunday = 1: 2-6 is Monday to Friday, 1,7 the weekend
        ("cron(0 18 ? * 2-6 *)", ["2026-01-01 Thu 18:00", "2026-01-02 Fri 18:00"]),
        ("cron(0 10 ? * 1,7 *)", ["2026-01-03 Sat 10:00", "2026-01-04 Sun 10:00"]),
        ("cron(15 10 ? * 6L 2027)", ["2027-01-29 Fri 10:15", "2027-02-26 Fri 10:15"]),
        ("cron(0 8 ? * 2#1 *)", ["2026-01-05 Mon 08:00", "2026-02-02 Mon 08:00"]),
        ("cron(0 0 L * ? *)", ["2026-01-31 Sat 00:00", "2026-02-28 Sat 00:00"]),
        ("cron(0 9 15W * ? *)", ["2026-01-15 Thu 09:00", "2026-02-16 Mon 09:00"]),
        ("cron(0 12 1 JAN,JUL ? *)", ["2026-01-01 Thu 12:00", "2026-07-01 Wed 12:00"]),
    ],
)
def test_parse_schedule_fires_when_aws_does(expression, expected):
    assert ticks(expression) == expected


def test_parse_schedule_kinds():
    assert parse_schedule("rate(2 hours)") == RateSchedule("rate(2 hours)", 7200)
    cron = parse_schedule("cron(0 3 ? * MON-FRI *)")
    assert isinstance(cron, CronSchedule)
    assert cron.croniter_expression == "0 0 3 ? * MON-FRI *"


def test_parse_schedule_rate_counts_from_its_anchor_and_can_be_sped_up():
    rate = parse_schedule("rate(1 hour)")
    assert rate.next_after(NEW_YEAR + 90, anchor=NEW_YEAR + 30) == NEW_YEAR + 30 + 3600
    assert rate.next_after(NEW_YEAR, anchor=NEW_YEAR, speedup=60) == NEW_YEAR + 60


def test_parse_schedule_cron_in_a_time_zone():
    # EventBridge Scheduler's ScheduleExpressionTimezone: 10:00 in Berlin is 09:00 UTC in winter
    assert ticks("cron(0 10 * * ? *)", 1, "Europe/Berlin") == ["2026-01-01 Thu 09:00"]


def test_parse_schedule_cron_that_never_matches_again_has_no_next_tick():
    assert parse_schedule("cron(0 12 * * ? 2020)").next_after(NEW_YEAR) is None


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("rate(1 minutes)", "singular for a value of 1"),
        ("rate(5 minute)", "plural for larger values"),
        ("rate(0 hours)", "positive whole number"),
        ("rate(1 second)", "rate(value unit)"),
        ("cron(0 10 * * ?)", "six fields"),  # Unix cron's five
        ("cron(0 10 * * * *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(0 10 ? * ? *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(0 10 ? * 0 *)", "0 is not in 1-7"),  # Unix's Sunday
        ("cron(0 10 ? * 2/2 *)", "may not hold '/'"),
        ("cron(61 10 * * ? *)", "61 is not in 0-59"),
        ("cron(0 24 * * ? *)", "24 is not in 0-23"),
        ("cron(0 0 1 13 ? *)", "13 is not in 1-12"),
        ("cron(0 10 * * ? 1969)", "1969 is not in 1970-2199"),
        ("cron(0 10 ?,1 * MON *)", "'?' stands alone"),
        ("cron(0 10 # * ? *)", "may not hold '#'"),
        ("every hour", "rate(value unit) or cron(fields)"),
        ("at(2026-01-01T00:00:00)", "not emulated"),
    ],
)
def test_parse_schedule_refuses_what_aws_refuses_naming_the_expression(expression, reason):
    with pytest.raises(ScheduleExpressionError) as caught:
        parse_schedule(expression)
    message = str(caught.value)
    assert message.startswith(f"schedule expression {expression!r} is not valid: ")
    assert reason in message
