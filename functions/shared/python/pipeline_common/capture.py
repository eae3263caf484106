"""SageMaker data capture: what an endpoint records of its requests, where, and how to read it.

Endpoint configs carry a DataCaptureConfig (``capture_config``). SageMaker then writes JSON
Lines files under ``<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/``, one line per captured
request, as the developer guide ("Capture data from real-time endpoint", "View collected data")
shows::

    {"captureData": {
        "endpointInput": {"observedContentType": "image/png", "mode": "INPUT",
                          "data": "iVBORw0KGgo...", "encoding": "BASE64"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": "{\\"label\\": \\"three\\", ...}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "8f45e35c-fa44-40d2-8ed3-1bcab3a596f3",
                       "inferenceTime": "2026-12-03T10:30:45Z"},
     "eventVersion": "0"}

A payload whose content type is listed under CaptureContentTypeHeader as CSV or JSON is kept
as text (encoding CSV / JSON); anything else is base64 (encoding BASE64). The local SageMaker
writes the same files (mlops/local/sagemaker/capture.py), and this module reads both.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

CAPTURE_PREFIX = "capture"  # s3://<artifacts bucket>/capture/<endpoint>/<variant>/yyyy/mm/dd/hh/
JSON_CONTENT_TYPES = ["application/json"]  # the model's answers, kept readable


def capture_config(destination_s3_uri: str, sampling_percent: int) -> dict[str, Any]:
    """CreateEndpointConfig's DataCaptureConfig: requests and answers, sampled."""
    return {
        "EnableCapture": sampling_percent > 0,
        "InitialSamplingPercentage": sampling_percent,
        "DestinationS3Uri": destination_s3_uri,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": JSON_CONTENT_TYPES},
    }


def hour_prefix(prefix: str, endpoint: str, variant: str, hour: datetime) -> str:
    """The key prefix of one hour's capture files (UTC), without a trailing slash."""
    return f"{prefix.strip('/')}/{endpoint}/{variant}/{hour:%Y/%m/%d/%H}".lstrip("/")


class CaptureFormatError(ValueError):
    """A line that is not a SageMaker capture record; names what is wrong."""


@dataclass(frozen=True)
class CapturedPayload:
    content_type: str
    data: bytes


@dataclass(frozen=True)
class CapturedRequest:
    event_id: str
    inference_time: datetime
    request: CapturedPayload | None  # None when CaptureOptions left Input out
    response: CapturedPayload | None  # None when CaptureOptions left Output out
    inference_id: str | None = None
    key: str = ""  # the capture file it was read from (to show its image again)

    def answer(self) -> dict[str, Any] | None:
        """The model's JSON answer, when the response was captured and is JSON."""
        if self.response is None:
            return None
        try:
            value = json.loads(self.response.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def decode_payload(payload: dict[str, Any]) -> CapturedPayload:
    encoding, data = payload.get("encoding"), payload.get("data", "")
    if not isinstance(data, str):
        raise CaptureFormatError(f"payload data is {type(data).__name__}, not a string")
    if encoding == "BASE64":
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise CaptureFormatError(f"BASE64 payload does not decode: {error}") from None
    elif encoding in ("JSON", "CSV"):
        raw = data.encode("utf-8")
    else:
        raise CaptureFormatError(f"unknown payload encoding {encoding!r}")
    return CapturedPayload(str(payload.get("observedContentType", "")), raw)


def parse_time(value: str) -> datetime:
    """``2026-12-03T10:30:45Z`` or with milliseconds, as AWS writes it."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise CaptureFormatError(f"inferenceTime {value!r} is not an ISO 8601 time") from None


def parse_line(line: str | bytes) -> CapturedRequest:
    try:
        record = json.loads(line)
        data, metadata = record["captureData"], record["eventMetadata"]
    except (ValueError, KeyError, TypeError) as error:
        raise CaptureFormatError(f"not a capture record: {error}") from None
    request, response = data.get("endpointInput"), data.get("endpointOutput")
    return CapturedRequest(
        event_id=str(metadata.get("eventId", "")),
        inference_time=parse_time(metadata.get("inferenceTime", "")),
        request=decode_payload(request) if request else None,
        response=decode_payload(response) if response else None,
        inference_id=metadata.get("inferenceId"),
    )


def find_request(s3: Any, bucket: str, key: str, event_id: str) -> CapturedRequest | None:
    """One captured request, by its capture file and event id (the console shows its image)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    for line in body.splitlines():
        if event_id.encode() in line:
            with contextlib.suppress(CaptureFormatError):
                captured = parse_line(line)
                if captured.event_id == event_id:
                    return replace(captured, key=key)
    return None


def hours_between(start: datetime, end: datetime) -> Iterator[datetime]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour <= end:
        yield hour
        hour += timedelta(hours=1)


@dataclass
class CaptureReading:
    """What reading a time range found: the requests, and the lines that were not records."""

    requests: list[CapturedRequest]
    bad_lines: int = 0
    files: int = 0


def read_captures(
    s3: Any,
    destination_s3_uri: str,
    endpoint: str,
    variant: str,
    start: datetime,
    end: datetime,
) -> CaptureReading:
    """Every request captured from ``start`` up to (not including) ``end`` (UTC), oldest
    first: consecutive windows that share a bound see each request once.

    Lines that are not capture records are counted, not raised: one bad line must not blind
    the monitor to the rest of an hour."""
    bucket, _, prefix = destination_s3_uri.removeprefix("s3://").partition("/")
    reading = CaptureReading(requests=[])
    paginator = s3.get_paginator("list_objects_v2")
    for hour in hours_between(start, end):
        folder = hour_prefix(prefix, endpoint, variant, hour) + "/"
        for page in paginator.paginate(Bucket=bucket, Prefix=folder):
            for item in page.get("Contents", []):
                if not item["Key"].endswith(".jsonl"):
                    continue
                reading.files += 1
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                for line in body.splitlines():
                    if not line.strip():
                        continue
                    try:
                        captured = replace(parse_line(line), key=item["Key"])
                    except CaptureFormatError:
                        reading.bad_lines += 1
                        continue
                    if start <= captured.inference_time < end:
                        reading.requests.append(captured)
    reading.requests.sort(key=lambda r: r.inference_time)
    return reading
