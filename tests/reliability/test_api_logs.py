"""No secrets or image bytes in logs: the predict function's CloudWatch Logs after real requests."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support.waiting import wait_for

from .conftest import ServingCloud
from .helpers import assert_clean_error

pytestmark = pytest.mark.timeout(600)


def log_text(logs: Any, group: str) -> str:
    """Every event of every stream of a log group, joined."""
    messages: list[str] = []
    paginator = logs.get_paginator("filter_log_events")
    for page in paginator.paginate(logGroupName=group):
        messages += [event["message"] for event in page["events"]]
    return "\n".join(messages)


def test_api_logs_hold_no_image_bytes_and_no_api_key(
    serving_cloud: ServingCloud, digit_png: bytes
) -> None:
    api = serving_cloud.api
    encoded = base64.b64encode(digit_png).decode()
    marker_body = json.dumps({"image": encoded}).encode()
    assert api.post(digit_png).status_code == 200
    assert api.post(marker_body, content_type="application/json").status_code == 200
    assert_clean_error(api.post(b"not an image at all"), 400)
    logs = serving_cloud.target.client("logs")
    group = f"/aws/lambda/{serving_cloud.target.output('PredictFunctionName')}"

    text = wait_for(
        lambda: log_text(logs, group),
        30,
        "three predict log lines",
        done=lambda t: t.count('"operation":"predict"') >= 3,
        interval=0.5,
    )

    assert encoded[:40] not in text
    assert encoded[-40:] not in text
    assert "not an image at all" not in text
    assert api.key not in text
    assert "x-api-key" not in text.lower()
