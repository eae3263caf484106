"""Metric extraction from a training log with the job's MetricDefinitions, as SageMaker does it.

SageMaker applies each definition's regex to every log line and takes the first capture group
as the value. The last value per metric becomes FinalMetricDataList; every value is also handed
to listeners as it appears, which is what the tuning job's early stopping feeds on.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

MetricListener = Callable[[str, float, int], None]


@dataclass
class MetricPoint:
    name: str
    value: float
    timestamp: dt.datetime
    count: int  # how many values of this metric have been seen, this one included


def compile_definitions(definitions: list[dict[str, str]]) -> list[tuple[str, re.Pattern[str]]]:
    """Compile MetricDefinitions; a regex Python cannot compile is a ValueError naming it."""
    compiled = []
    for definition in definitions:
        try:
            compiled.append((definition["Name"], re.compile(definition["Regex"])))
        except re.error as error:
            raise ValueError(
                f"metric definition {definition['Name']!r} has an invalid regex "
                f"{definition['Regex']!r}: {error}"
            ) from error
    return compiled


class MetricParser:
    """Feeds log lines through the regexes; keeps the last value and notifies listeners."""

    def __init__(self, definitions: list[dict[str, str]]) -> None:
        self._definitions = compile_definitions(definitions)
        self._last: dict[str, MetricPoint] = {}
        self._listeners: list[MetricListener] = []
        self._lock = threading.Lock()

    def add_listener(self, listener: MetricListener) -> None:
        self._listeners.append(listener)

    def feed(self, line: str) -> None:
        for name, regex in self._definitions:
            match = regex.search(line)
            if not match:
                continue
            value = _first_number(match)
            if value is None:
                continue
            with self._lock:
                previous = self._last.get(name)
                count = previous.count + 1 if previous else 1
                self._last[name] = MetricPoint(name, value, dt.datetime.now(dt.UTC), count)
            for listener in self._listeners:
                try:
                    listener(name, value, count)
                except Exception:
                    logger.exception("metric listener failed on %s=%s", name, value)

    def final_metric_data(self) -> list[dict[str, Any]]:
        """FinalMetricDataList: one MetricData per metric seen, its last value."""
        with self._lock:
            return [
                {"MetricName": p.name, "Value": p.value, "Timestamp": p.timestamp}
                for p in self._last.values()
            ]

    def points(self) -> list[MetricPoint]:
        """The last point of every metric seen (what a saved job keeps, see store.py)."""
        with self._lock:
            return list(self._last.values())

    def load_points(self, points: list[MetricPoint]) -> None:
        """Back from a snapshot: the job answers FinalMetricDataList as before the restart."""
        with self._lock:
            self._last = {point.name: point for point in points}

    def last_value(self, name: str) -> float | None:
        with self._lock:
            point = self._last.get(name)
            return point.value if point else None


def _first_number(match: re.Match[str]) -> float | None:
    text = match.group(1) if match.groups() else match.group(0)
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
