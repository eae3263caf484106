"""Data capture of the local SageMaker: the endpoint config's DataCaptureConfig, honoured.

Written from the developer guide ("Capture data from real-time endpoint", "View collected
data"), not from the project's reader, so that a test reading these files with
pipeline_common.capture checks the reader against AWS's format rather than against itself:

- a request is captured with probability InitialSamplingPercentage / 100;
- CaptureOptions say whether its input (mode INPUT) and/or its output (mode OUTPUT) are kept;
- a payload whose content type (its media type, parameters ignored) is listed in
  CaptureContentTypeHeader's CsvContentTypes or JsonContentTypes is kept as text with encoding
  CSV or JSON, any other is base64 (encoding BASE64), the default when no header is given;
- lines are JSON objects {captureData, eventMetadata {eventId, inferenceTime[, inferenceId]},
  eventVersion "0"} gathered into ``.jsonl`` objects under
  ``<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/``, named
  ``<minute>-<second>-<millisecond>-<uuid>.jsonl``.

SageMaker buffers captures and uploads them every few minutes; here a writer thread uploads
what came in every ``flush_interval_s`` and at shutdown, so tests need not wait.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def encode(data: bytes, content_type: str, header: dict[str, Any]) -> tuple[str, str]:
    """(data, encoding) as SageMaker writes a payload of this content type."""
    kind = media_type(content_type)
    for key, encoding in (("CsvContentTypes", "CSV"), ("JsonContentTypes", "JSON")):
        if kind in {media_type(t) for t in header.get(key) or []}:
            return data.decode("utf-8", errors="replace"), encoding
    return base64.b64encode(data).decode("ascii"), "BASE64"


def capture_line(
    config: dict[str, Any],
    request: tuple[bytes, str],
    response: tuple[bytes, str],
    when: datetime,
    inference_id: str | None = None,
) -> dict[str, Any]:
    header = config.get("CaptureContentTypeHeader") or {}
    modes = {option["CaptureMode"] for option in config["CaptureOptions"]}
    captured: dict[str, Any] = {}
    for mode, key, (data, content_type) in (
        ("Input", "endpointInput", request),
        ("Output", "endpointOutput", response),
    ):
        if mode in modes:
            text, encoding = encode(data, content_type, header)
            captured[key] = {
                "observedContentType": content_type,
                "mode": mode.upper(),
                "data": text,
                "encoding": encoding,
            }
    metadata = {"eventId": str(uuid.uuid4()), "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if inference_id:
        metadata["inferenceId"] = inference_id
    return {"captureData": captured, "eventMetadata": metadata, "eventVersion": "0"}


def capture_key(destination: str, endpoint: str, variant: str, when: datetime) -> tuple[str, str]:
    bucket, _, prefix = destination.removeprefix("s3://").partition("/")
    folder = "/".join(p for p in (prefix.strip("/"), endpoint, variant) if p)
    name = f"{when:%M-%S}-{when.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
    return bucket, f"{folder}/{when:%Y/%m/%d/%H}/{name}"


class CaptureWriter:
    """Samples invocations into capture lines and uploads them in batches."""

    def __init__(self, s3_client: Callable[[], Any], flush_interval_s: float = 1.0) -> None:
        self._s3 = s3_client
        self._interval = flush_interval_s
        self._lock = threading.Lock()
        # (destination, endpoint, variant, hour) -> the first capture's time and the lines
        self._pending: dict[tuple[str, str, str, str], list[tuple[datetime, str]]] = defaultdict(
            list
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def capture(
        self,
        config: dict[str, Any] | None,
        endpoint: str,
        variant: str,
        request: tuple[bytes, str],
        response: tuple[bytes, str],
        inference_id: str | None = None,
    ) -> None:
        if not config or not config.get("EnableCapture", True):
            return
        if random.random() * 100 >= float(config["InitialSamplingPercentage"]):
            return
        when = datetime.now(UTC)
        line = json.dumps(capture_line(config, request, response, when, inference_id))
        batch = (config["DestinationS3Uri"], endpoint, variant, when.strftime("%Y%m%d%H"))
        with self._lock:
            self._pending[batch].append((when, line))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="data-capture", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(list)
        for (destination, endpoint, variant, _), captured in pending.items():
            bucket, key = capture_key(destination, endpoint, variant, captured[0][0])
            lines = [line for _, line in captured]
            try:
                self._s3().put_object(
                    Bucket=bucket, Key=key, Body="\n".join(lines).encode() + b"\n"
                )
            except (ClientError, BotoCoreError) as error:
                # SageMaker drops captures it cannot write rather than failing requests.
                logger.warning("data capture of %s lost %d lines: %s", endpoint, len(lines), error)

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.flush()
