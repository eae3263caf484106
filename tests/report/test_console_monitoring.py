"""The console's monitoring page over HTTP, against moto's S3 holding the drift monitor's records.

The deployed version of tests/support/lineage_state.py, three findings records as
functions/monitor_endpoint writes them (no drift, drift, no drift) and the capture files their
unusual requests name, written in AWS's format by the local SageMaker's own writer
(mlops/local/sagemaker/capture.py). The console runs on 127.0.0.1 on a free port in this
process; every image link of the page is followed. The server is shut down and moto's mock
stopped in `finally`, also when a test fails.
"""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape, unescape

import boto3
import pytest
from moto import mock_aws
from PIL import Image
from pipeline_common.capture import capture_config
from pipeline_common.records import findings_key

from mlops.console import start_console
from mlops.console_monitoring import drift_chart_svg, image_url
from mlops.local.sagemaker.capture import capture_key, capture_line
from mlops.target import Target
from tests.support.lineage_state import ENDPOINT, GROUP, HOSTILE, REGION, RETRAIN, build_state

pytestmark = pytest.mark.timeout(120)

ARTIFACTS = "mlops-artifacts"
DESTINATION = f"s3://{ARTIFACTS}/capture"
THRESHOLD = 0.002
START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
CHECKS = [START + timedelta(hours=h) for h in (1, 2, 3)]  # window ends, oldest first
P_VALUES = [  # per check: embedding, predictions, confidence
    (0.41, 0.77, 0.35),
    (0.0005, 0.0, 0.12),  # drift: embedding and predictions (p = 0 as chi2 can answer)
    (0.09, 0.51, 0.64),
]


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def get(url: str) -> Reply:
    """A GET with urllib (moto's `responses` patch leaves it alone)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return Reply(answer.status, answer.headers["Content-Type"], answer.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers["Content-Type"], error.read())


def image(size: tuple[int, int], shade: int, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade, 255 - shade, 90)).save(buffer, format=kind)
    return buffer.getvalue()


def put_capture(s3, when: datetime, requests: list[tuple[bytes, str, dict]]) -> list[dict]:
    """One capture file holding these (body, content type, answer) requests; their
    unusual-entries as the monitor would name them."""
    config = capture_config(DESTINATION, 100)
    lines = [
        capture_line(
            config, (body, content_type), (json.dumps(answer).encode(), "application/json"), when
        )
        for body, content_type, answer in requests
    ]
    bucket, key = capture_key(DESTINATION, ENDPOINT, "AllTraffic", when)
    s3.put_object(Bucket=bucket, Key=key, Body="\n".join(json.dumps(x) for x in lines) + "\n")
    return [
        {
            "event_id": line["eventMetadata"]["eventId"],
            "capture_key": key,
            "inference_time": line["eventMetadata"]["inferenceTime"],
            "label": answer["label"],
            "score": 40.5 - index,
        }
        for index, (line, (_, _, answer)) in enumerate(zip(lines, requests, strict=True))
    ]


def findings_record(index: int, unusual: list[dict], retrain: str | None = None) -> dict:
    end = CHECKS[index]
    start = CHECKS[index - 1] if index else START
    findings = [
        {
            "check": check,
            "test": test,
            "statistic": round(1.5 + index, 3),
            "p_value": p,
            "threshold": THRESHOLD,
            "drifted": p < THRESHOLD,
            "detail": detail,
        }
        for (check, test, detail), p in zip(
            [
                ("embedding", "maximum mean discrepancy", "MMD² 0.31 over 16 components"),
                ("predictions", "chi2_contingency", f"class {HOSTILE} 3x its share"),
                ("confidence", "mannwhitneyu", "median 0.91 vs 0.93"),
            ],
            P_VALUES[index],
            strict=True,
        )
    ]
    key = findings_key(ENDPOINT, end)
    return {
        "endpoint": ENDPOINT,
        "model_package": f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/1",
        "model": RETRAIN,
        "reason": "schedule",
        "window": [start.isoformat(), end.isoformat()],
        "requests": [u["event_id"] for u in unusual],
        "answers_checked": 40 + index,
        "unreadable_capture_lines": 0,
        "drift": any(f["drifted"] for f in findings),
        "findings": findings,
        "unusual": unusual,
        "findings_uri": f"s3://{ARTIFACTS}/{key}",
        "retrain": retrain,
    }


@dataclass
class State:
    session: boto3.Session
    outputs: dict[str, str]
    version: int
    latest_unusual: list[dict]
    drifted_unusual: list[dict]
    capture_key: str  # a capture file holding a request that is not an image
    not_an_image: str  # its event id


@pytest.fixture
def moto_session(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    with mock_aws():
        yield boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )


@pytest.fixture
def state(moto_session: boto3.Session) -> State:
    """A deployed version, three checks of its endpoint and the captures they name."""
    run = build_state(moto_session, artifacts=ARTIFACTS)
    s3 = moto_session.client("s3")
    drifted_unusual = put_capture(
        s3,
        CHECKS[1] - timedelta(minutes=5),
        [
            (image((8, 8), 200), "image/png", {"label": "three", "class_index": 3}),
            (image((20, 12), 30, "JPEG"), "image/jpeg", {"label": "seven", "class_index": 7}),
        ],
    )
    latest_unusual = put_capture(
        s3,
        CHECKS[2] - timedelta(minutes=5),
        [
            (image((16, 16), 120), "image/png", {"label": HOSTILE, "class_index": 0}),
            (image((8, 8), 10), "image/png; charset=binary", {"label": "one", "class_index": 1}),
        ],
    )
    odd = put_capture(
        s3,
        CHECKS[2] - timedelta(minutes=3),
        [(HOSTILE.encode(), "text/html", {"label": "html", "class_index": 0})],
    )[0]
    records = [
        findings_record(0, []),
        findings_record(1, drifted_unusual, retrain=f"retrain-digits-{HOSTILE}"),
        findings_record(2, latest_unusual),
    ]
    for record in records:
        key = record["findings_uri"].removeprefix(f"s3://{ARTIFACTS}/")
        s3.put_object(Bucket=ARTIFACTS, Key=key, Body=json.dumps(record).encode())
    return State(
        moto_session,
        run.outputs,
        run.version,
        latest_unusual,
        drifted_unusual,
        odd["capture_key"],
        odd["event_id"],
    )


@pytest.fixture
def console_url(state: State) -> Iterator[str]:
    yield from serve(state.session, state.outputs)


def serve(session: boto3.Session, outputs: dict[str, str]) -> Iterator[str]:
    target = Target(name="moto", session=session, outputs=outputs, local=True)
    server, thread = start_console(target, port=0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive(), "the console's thread outlived the test"


def image_links(html: str) -> list[tuple[str, str]]:
    """(event id, image src) of every figure of the unusual requests."""
    return [
        (unescape(event), unescape(src))
        for event, src in re.findall(r'<figure data-event="([^"]+)">.*?<img src="([^"]+)"', html)
    ]


# -- tests ---------------------------------------------------------------------------------------
def test_console_monitoring_page_draws_each_checks_p_value_over_time(console_url):
    reply = get(f"{console_url}/monitoring")

    assert reply.status == 200, reply.text
    chart = re.search(r'<svg class="drift" id="drift-chart".*?</svg>', reply.text, re.S)
    assert chart, reply.text[:3000]
    svg = chart.group(0)
    checks = re.findall(r'<g class="check" data-check="([^"]+)">', svg)
    assert checks == ["embedding", "predictions", "confidence"]
    points = re.findall(r'<circle class="point" data-drifted="(true|false)"', svg)
    assert len(points) == 9 and points.count("true") == 2
    assert svg.count('<circle class="ring"') == 2 + 1  # the two drifted points and the legend
    assert f'data-threshold="{THRESHOLD:g}"' in svg
    assert "p = 0 (drawn at 1e-16), drifted" in svg


def test_drift_chart_puts_drifted_points_below_the_threshold_line_and_others_above():
    records = [findings_record(i, []) for i in range(3)]

    svg = drift_chart_svg(records)

    line = re.search(
        r'class="threshold" data-threshold="[^"]+" x1="[^"]+" x2="[^"]+" y1="([^"]+)"', svg
    )
    threshold_y = float(line.group(1))
    points = re.findall(r'data-drifted="(true|false)" cx="([^"]+)" cy="([^"]+)"', svg)
    assert len(points) == 9
    for drifted, _, cy in points:
        assert (float(cy) > threshold_y) == (drifted == "true")  # SVG y grows downwards
    xs = sorted({float(cx) for _, cx, _ in points})
    assert len(xs) == 3 and xs[0] < xs[1] < xs[2]  # one column per check time, in time order


def test_console_monitoring_page_tables_the_checks_newest_first_and_the_latest_in_full(console_url):
    html = get(f"{console_url}/monitoring").text

    rows = re.findall(r'<tr data-checked="([^"]+)" data-drift="(true|false)"', html)
    assert rows == [
        (CHECKS[2].isoformat(), "false"),
        (CHECKS[1].isoformat(), "true"),
        (CHECKS[0].isoformat(), "false"),
    ]
    assert html.count('<span class="badge bad">drift</span>') == 1
    assert html.count('<span class="badge good">no drift</span>') == 2 + 1  # and the latest's
    latest = html.split('<h2 id="latest">', 1)[1]
    findings = re.findall(
        r'<tr data-check="([^"]+)" data-drifted="(true|false)">(.*?)</tr>', latest
    )
    assert [(check, drifted) for check, drifted, _ in findings] == [
        ("embedding", "false"),
        ("predictions", "false"),
        ("confidence", "false"),
    ]
    embedding = findings[0][2]
    assert "maximum mean discrepancy" in embedding and "0.09" in embedding and "3.5" in embedding
    assert "MMD² 0.31 over 16 components" in embedding
    assert f'href="/models/{GROUP}/1"' in latest and f'href="/training-jobs/{RETRAIN}"' in latest
    assert "none started" in latest
    # the older drifted check's retrain note is in the table, escaped
    assert escape(f"retrain-digits-{HOSTILE}") in html


def test_console_monitoring_images_are_the_captured_requests_as_pngs(console_url, state):
    html = get(f"{console_url}/monitoring").text

    links = image_links(html)
    expected = state.latest_unusual + state.drifted_unusual
    assert [event for event, _ in links] == [u["event_id"] for u in expected]
    sizes = [(16, 16), (8, 8), (8, 8), (20, 12)]
    for (event, src), size in zip(links, sizes, strict=True):
        assert src.startswith("/monitoring/images/capture/") and f"event={event}" in src
        reply = get(console_url + src)
        assert reply.status == 200, reply.body[:500]
        assert reply.content_type == "image/png"
        with Image.open(io.BytesIO(reply.body)) as shown:
            assert shown.format == "PNG" and shown.size == size  # the JPEG too, re-encoded


def test_console_monitoring_page_escapes_a_hostile_label(console_url):
    html = get(f"{console_url}/monitoring").text

    assert HOSTILE not in html
    assert f"predicted <b>{escape(HOSTILE)}</b>" in html
    assert escape(f"class {HOSTILE} 3x its share") in html  # a finding's detail


@pytest.mark.parametrize(
    ("path", "says"),
    [
        (
            lambda s: image_url("runs/x/gate.json", "e"),
            "only capture files (.jsonl) under capture/",
        ),
        (
            lambda s: image_url(f"capture/{ENDPOINT}/../../runs/x.jsonl", "e"),
            "only capture files",
        ),
        (
            lambda s: image_url("capture/another-endpoint/AllTraffic/2026/a.jsonl", "e"),
            f"under capture/{ENDPOINT}/",
        ),
        (
            lambda s: image_url(f"capture/{ENDPOINT}/AllTraffic/2026/12/03/09/gone.jsonl", "e"),
            "No capture file capture/",
        ),
        (lambda s: image_url(s.capture_key, "no-such-event"), "No event no-such-event in"),
        (lambda s: image_url(s.capture_key, "").split("?")[0], "No event given"),
        (lambda s: image_url(s.capture_key, s.not_an_image), "is not a readable image"),
        (lambda s: image_url(s.capture_key, HOSTILE), f"No event {HOSTILE} in"),
        (lambda s: "/monitoring/images", "No page at /monitoring/images"),
    ],
)
def test_console_unknown_images_answer_404_with_the_reason(console_url, state, path, says):
    reply = get(console_url + path(state))

    assert reply.status == 404, reply.body[:500]
    assert reply.content_type.startswith("text/html")
    assert escape(says) in reply.text, reply.text
    assert HOSTILE not in reply.text and "Traceback" not in reply.text


def test_console_links_to_monitoring_from_every_page_and_the_serving_version(console_url, state):
    for path in ("/", "/models", f"/models/{GROUP}/{state.version}", f"/endpoints/{ENDPOINT}"):
        html = get(console_url + path).text
        assert '<a href="/monitoring">Monitoring</a>' in html, path
    version = get(f"{console_url}/models/{GROUP}/{state.version}").text
    assert 'id="monitoring-link" href="/monitoring"' in version
    endpoint = get(f"{console_url}/endpoints/{ENDPOINT}").text
    assert 'id="monitoring-link" href="/monitoring"' in endpoint


def test_console_monitoring_page_without_findings_says_so(moto_session):
    run = build_state(moto_session, artifacts=ARTIFACTS)
    for url in serve(moto_session, run.outputs):
        reply = get(f"{url}/monitoring")

        assert reply.status == 200, reply.text
        assert '<p id="no-findings">No findings yet' in reply.text
        assert f"monitoring/{ENDPOINT}/" in reply.text
        assert "<svg" not in reply.text and "Traceback" not in reply.text


def test_console_monitoring_page_names_a_record_that_does_not_parse(console_url, state):
    key = findings_key(ENDPOINT, CHECKS[2] + timedelta(hours=1))
    state.session.client("s3").put_object(Bucket=ARTIFACTS, Key=key, Body=b"{not json")

    reply = get(f"{console_url}/monitoring")

    assert reply.status == 200, reply.text
    assert f"Not a findings record: <code>{key}</code>" in reply.text
    assert re.search(r'<tr data-checked="([^"]+)"', reply.text).group(1) == CHECKS[2].isoformat()


def test_console_monitoring_page_shows_a_record_with_odd_fields_as_they_are(console_url, state):
    key = findings_key(ENDPOINT, CHECKS[2] + timedelta(hours=1))
    odd = {
        "answers_checked": 41.0,
        "drift": True,
        "findings": [
            {"check": "embedding", "p_value": "tiny", "drifted": True},
            {"check": HOSTILE, "p_value": 1e-300, "threshold": "?", "drifted": True},
        ],
        "unusual": [{"event_id": HOSTILE}],  # no capture key: not shown
    }
    state.session.client("s3").put_object(Bucket=ARTIFACTS, Key=key, Body=json.dumps(odd))

    reply = get(f"{console_url}/monitoring")

    assert reply.status == 200, reply.text
    assert HOSTILE not in reply.text and "Traceback" not in reply.text
    assert '<h2 id="latest">Latest check: 2026-12-03 13:00:00Z</h2>' in reply.text
    assert f'data-check="{escape(HOSTILE)}"' in reply.text  # drawn and tabled, escaped
    assert "This check named no unusual requests" in reply.text
