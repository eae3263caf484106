"""Data capture: the local SageMaker writes what AWS writes, and the project's reader reads both.

The reader (pipeline_common.capture) is checked first against lines in AWS's documented format
(the developer guide's "View collected data" examples), then against what the local SageMaker
writes from an endpoint config's DataCaptureConfig.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pipeline_common.capture import (
    CaptureFormatError,
    capture_config,
    parse_line,
    read_captures,
)

from tests.support.waiting import wait_for

from .helpers import ARTIFACTS_BUCKET, make_config, wait_endpoint

pytestmark = pytest.mark.timeout(120)

DESTINATION = f"s3://{ARTIFACTS_BUCKET}/capture"
# From the developer guide: a CSV request and CSV answer, and a JSON answer.
AWS_CSV_LINE = (
    '{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT",'
    '"data":"69,0,153.7,109,194.0\\n","encoding":"CSV"},"endpointOutput":{'
    '"observedContentType":"text/csv; charset=utf-8","mode":"OUTPUT",'
    '"data":"0.0254181120544672","encoding":"CSV"}},"eventMetadata":{'
    '"eventId":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","inferenceTime":"2022-02-14T17:25:49Z"},'
    '"eventVersion":"0"}'
)
AWS_JSON_LINE = (
    '{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT",'
    '"data":"6,148,72,35,0,33.6,0.627,50","encoding":"CSV"},"endpointOutput":{'
    '"observedContentType":"application/json","mode":"OUTPUT",'
    '"data":"{\\"predictions\\":[1],\\"probabilities\\":[0.85]}","encoding":"JSON"}},'
    '"eventMetadata":{"eventId":"a1b2c3d4-e5f6-7890-abcd-ef1234567890",'
    '"inferenceTime":"2025-11-15T10:30:45.123Z"},"eventVersion":"0"}'
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
AWS_IMAGE_LINE = json.dumps(
    {
        "captureData": {
            "endpointInput": {
                "observedContentType": "image/png",
                "mode": "INPUT",
                "data": base64.b64encode(PNG).decode(),
                "encoding": "BASE64",
            }
        },
        "eventMetadata": {
            "eventId": "8f45e35c-fa44-40d2-8ed3-1bcab3a596f3",
            "inferenceTime": "2020-07-30T13:36:30Z",
            "inferenceId": "request-7",
        },
        "eventVersion": "0",
    }
)
KEY = re.compile(
    r"^capture/(?P<endpoint>[^/]+)/AllTraffic/\d{4}/\d{2}/\d{2}/\d{2}/"
    r"\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl$"
)


def test_reader_reads_the_documented_aws_lines() -> None:
    csv, answer, image = (parse_line(x) for x in (AWS_CSV_LINE, AWS_JSON_LINE, AWS_IMAGE_LINE))

    assert csv.request.data == b"69,0,153.7,109,194.0\n"
    assert csv.response.content_type == "text/csv; charset=utf-8"
    assert csv.inference_time == datetime(2022, 2, 14, 17, 25, 49, tzinfo=UTC)
    assert answer.answer() == {"predictions": [1], "probabilities": [0.85]}
    assert answer.inference_time.microsecond == 123000
    assert (image.request.content_type, image.request.data) == ("image/png", PNG)
    assert (image.response, image.inference_id) == (None, "request-7")


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"eventMetadata": {}}',
        AWS_IMAGE_LINE.replace('"BASE64"', '"ROT13"'),
        AWS_IMAGE_LINE.replace('"2020-07-30T13:36:30Z"', '"yesterday"'),
        AWS_IMAGE_LINE.replace(base64.b64encode(PNG).decode()[:8], "!!!!!!!!"),
    ],
)
def test_reader_refuses_what_is_not_a_capture_record(line: str) -> None:
    with pytest.raises(CaptureFormatError):
        parse_line(line)


def test_reader_counts_bad_lines_and_keeps_the_rest(s3: Any) -> None:
    key = "capture/reader-test/AllTraffic/2025/11/15/10/30-45-123-x.jsonl"
    body = "\n".join([AWS_JSON_LINE, "garbage", AWS_JSON_LINE.replace("a1b2", "ffff")])
    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=key, Body=body.encode())
    start = datetime(2025, 11, 15, 10, 0, tzinfo=UTC)

    reading = read_captures(
        s3, DESTINATION, "reader-test", "AllTraffic", start, start.replace(hour=11)
    )

    assert (len(reading.requests), reading.bad_lines, reading.files) == (2, 1, 1)


def start_capturing(sm: Any, s3: Any, name: str, capture: dict[str, Any]) -> None:
    config = make_config(sm, s3, name, config_extra={"DataCaptureConfig": capture})
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"


def send(runtime: Any, name: str, count: int) -> list[dict[str, Any]]:
    answers = []
    for n in range(count):
        response = runtime.invoke_endpoint(
            EndpointName=name,
            Body=json.dumps({"n": n}).encode(),
            ContentType="application/json",
            InferenceId=f"request-{n}",
        )
        answers.append(json.loads(response["Body"].read()))
    return answers


def captured(s3: Any, name: str, expected: int) -> list:
    now = datetime.now(UTC)
    return wait_for(
        lambda: (
            read_captures(
                s3,
                DESTINATION,
                name,
                "AllTraffic",
                now - timedelta(hours=1),
                now + timedelta(hours=1),
            ).requests
        ),
        30,
        f"{expected} captures of {name}",
        done=lambda requests: len(requests) >= expected,
        interval=0.2,
    )


def test_endpoint_captures_requests_and_answers_in_aws_format(
    sm: Any, runtime: Any, s3: Any
) -> None:
    start_capturing(sm, s3, "capture-all", capture_config(DESTINATION, 100))

    answers = send(runtime, "capture-all", 5)
    requests = captured(s3, "capture-all", 5)

    assert len(requests) == 5
    by_id = {r.inference_id: r for r in requests}
    for n, answer in enumerate(answers):
        record = by_id[f"request-{n}"]
        assert json.loads(record.request.data) == {"n": n}
        assert record.answer() == answer
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=ARTIFACTS_BUCKET, Prefix="capture/capture-all/")[
            "Contents"
        ]
    ]
    assert keys and all(KEY.match(k) for k in keys), keys
    raw = s3.get_object(Bucket=ARTIFACTS_BUCKET, Key=keys[0])["Body"].read().splitlines()[0]
    line = json.loads(raw)
    assert line["eventVersion"] == "0"
    assert line["captureData"]["endpointOutput"]["encoding"] == "JSON"  # JsonContentTypes
    summary = sm.describe_endpoint(EndpointName="capture-all")["DataCaptureConfig"]
    assert summary == {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": 100,
        "DestinationS3Uri": DESTINATION,
        "KmsKeyId": "",
    }


def test_endpoint_without_a_content_type_header_captures_base64_and_only_what_is_asked(
    sm: Any, runtime: Any, s3: Any
) -> None:
    capture = {
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": DESTINATION,
        "CaptureOptions": [{"CaptureMode": "Output"}],
    }
    start_capturing(sm, s3, "capture-output", capture)

    [answer] = send(runtime, "capture-output", 1)
    [record] = captured(s3, "capture-output", 1)

    assert record.request is None
    assert record.answer() == answer
    key = s3.list_objects_v2(Bucket=ARTIFACTS_BUCKET, Prefix="capture/capture-output/")["Contents"][
        0
    ]["Key"]
    line = json.loads(
        s3.get_object(Bucket=ARTIFACTS_BUCKET, Key=key)["Body"].read().splitlines()[0]
    )
    assert line["captureData"]["endpointOutput"]["encoding"] == "BASE64"


def test_endpoint_samples_the_configured_share(sm: Any, runtime: Any, s3: Any) -> None:
    """200 requests at 30 %: 60 expected, binomial sd 6.5; 35-85 is about 4 sd either side."""
    start_capturing(sm, s3, "capture-some", capture_config(DESTINATION, 30))
    start_capturing(sm, s3, "capture-none", capture_config(DESTINATION, 0))

    send(runtime, "capture-some", 200)
    send(runtime, "capture-none", 20)
    some = captured(s3, "capture-some", 35)

    assert 35 <= len(some) <= 85, len(some)
    listing = s3.list_objects_v2(Bucket=ARTIFACTS_BUCKET, Prefix="capture/capture-none/")
    assert listing.get("KeyCount", 0) == 0
