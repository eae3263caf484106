"""CloudWatch embedded metric format (EMF): log lines that become metrics, as on AWS.

On AWS, a Lambda log line that is a JSON object with ``_aws.CloudWatchMetrics`` (what
Powertools Metrics prints) is turned into metrics by CloudWatch Logs; moto stores the line
and nothing more. The local cloud's Lambda runtime hands every line to `metric_data`, and
puts what it returns into moto's CloudWatch, so alarms on a function's metrics see them.

https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

MAX_DIMENSIONS = 30  # per dimension set, as the specification says


def metric_data(line: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(namespace, PutMetricData MetricData) for each directive of an EMF line; [] otherwise.

    Each dimension set of a directive is a metric of its own (same name, those dimensions),
    as CloudWatch extracts it; a value that is a list gives one datum per element."""
    text = line.strip()
    if not text.startswith("{") or '"_aws"' not in text:
        return []
    try:
        document = json.loads(text)
        meta = document["_aws"]
        directives = meta["CloudWatchMetrics"]
        timestamp = dt.datetime.fromtimestamp(int(meta["Timestamp"]) / 1000, dt.UTC)
    except (ValueError, KeyError, TypeError):
        return []
    timestamp = timestamp.replace(tzinfo=None)  # moto keeps naive UTC datetimes
    found: list[tuple[str, list[dict[str, Any]]]] = []
    for directive in directives if isinstance(directives, list) else []:
        data = _directive(document, directive, timestamp)
        if data:
            found.append((str(directive.get("Namespace", "")), data))
    return found


def _directive(
    document: dict[str, Any], directive: dict[str, Any], timestamp: dt.datetime
) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = []
    dimension_sets = directive.get("Dimensions") or [[]]
    for metric in directive.get("Metrics") or []:
        name = metric.get("Name")
        values = document.get(name)
        values = values if isinstance(values, list) else [values]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        for keys in dimension_sets:
            if len(keys) > MAX_DIMENSIONS or any(k not in document for k in keys):
                continue
            dimensions = [{"Name": k, "Value": str(document[k])} for k in keys]
            for value in numbers:
                datum: dict[str, Any] = {
                    "MetricName": name,
                    "Value": value,
                    "Dimensions": dimensions,
                    "Timestamp": timestamp,
                }
                if metric.get("Unit"):
                    datum["Unit"] = metric["Unit"]
                data.append(datum)
    return data
