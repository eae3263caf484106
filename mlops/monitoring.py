"""`mlops monitor`: run the drift monitor now, and read what it found.

The monitor is the MonitorEndpointFunction Lambda (functions/monitor_endpoint): the same code
runs on its schedule and here, against the local cloud or a stack. Its findings are JSON
records under ``monitoring/<endpoint>/<time>/findings.json`` in the artifacts bucket.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline_common.records import FINDINGS, MONITORING_PREFIX, monitoring_key
from pipeline_report.target import Target

from mlops.runs import CliError


def run_monitor(target: Target, reason: str = "mlops monitor run") -> dict[str, Any]:
    """Invoke the monitor once and wait for its answer (a MonitorResult)."""
    function = target.output("MonitorFunctionName")
    answer = target.client("lambda").invoke(
        FunctionName=function, Payload=json.dumps({"reason": reason}).encode()
    )
    payload = json.loads(answer["Payload"].read() or b"{}")
    if answer.get("FunctionError"):
        message = payload.get("errorMessage", payload) if isinstance(payload, dict) else payload
        raise CliError(f"The monitor {function} failed: {message}")
    return payload


def latest_findings(target: Target, limit: int = 10) -> list[dict[str, Any]]:
    """The newest findings records of the endpoint, newest first."""
    s3 = target.client("s3")
    prefix = monitoring_key(target.output("EndpointName")) + "/"
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=target.artifacts_bucket, Prefix=prefix
    ):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith("/" + FINDINGS)]
    records = []
    for key in sorted(keys, reverse=True)[:limit]:
        body = s3.get_object(Bucket=target.artifacts_bucket, Key=key)["Body"].read()
        records.append(json.loads(body))
    return records


def print_findings(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return [
            f"No findings yet under {MONITORING_PREFIX}/: the monitor judges a window once it "
            "has enough captured requests (`mlops monitor run` checks now)."
        ]
    lines = []
    for record in records:
        start, end = record["window"]
        verdict = "DRIFT" if record["drift"] else "no drift"
        lines.append(
            f"{end[:19]}Z  {verdict:8}  {record['answers_checked']} answers of "
            f"{record['model']} since {start[:19]}Z"
        )
        for finding in record["findings"]:
            mark = "!" if finding["drifted"] else " "
            lines.append(
                f"   {mark} {finding['check']:12} p={finding['p_value']:<9.3g} "
                f"{finding['test']}: {finding['detail']}"
            )
        if record.get("retrain"):
            lines.append(f"     retrain: {record['retrain']}")
    return lines
