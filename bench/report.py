"""The results table: one row per goal (or reported figure) of each benchmark."""

from __future__ import annotations

import math
from typing import Any

HEADERS = ("benchmark", "metric", "value", "goal", "status")
VERDICTS = {True: "pass", False: "FAIL", None: "info"}


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def rows(outcome: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows for one benchmark: its checks, or one line saying why it has none."""
    name = outcome["name"]
    if outcome["status"] in ("skipped", "error"):
        reason = outcome.get("reason", "").splitlines()[0][:90] if outcome.get("reason") else ""
        return [(name, reason, "-", "-", outcome["status"].upper())]
    return [
        (
            name,
            check["metric"],
            format_value(check["value"]),
            check["goal"],
            VERDICTS[check["passed"]],
        )
        for check in outcome["checks"]
    ]


def format_table(outcomes: list[dict[str, Any]]) -> str:
    """A plain-text table (it reads the same in a terminal and pasted into Markdown)."""
    table = [HEADERS, *(row for outcome in outcomes for row in rows(outcome))]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        for row in table
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
