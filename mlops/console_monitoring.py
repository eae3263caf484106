"""The console's monitoring page: the drift monitor's findings over time, and what it flagged.

`/monitoring` reads the findings records the drift monitor (functions/monitor_endpoint) writes
under ``monitoring/<endpoint>/<time>/findings.json`` in the artifacts bucket (the records
`mlops monitor` prints) and shows:

1. each check's p-value per check time on a log scale with its threshold, drifted points
   marked (an inline SVG, drawn here like console_graph.py's graph), and the checks as a table;
2. the latest check in full: each test, statistic, p-value and verdict, and the retrain note;
3. the most unusual captured requests of the latest check (and of the latest drifted one, if
   older): the image as the endpoint received it, the label the model answered and the score.

The images are served at ``/monitoring/images/<capture key>?event=<event id>``: only keys under
the endpoint's capture folder (``capture/<endpoint>/``) of the artifacts bucket, read back with
pipeline_common.capture.find_request, decoded with Pillow and sent as PNG whatever content
type the request claimed, so a captured payload can never be served as a page.

Page functions return (title, body HTML) like console_registry's; every value of a record is
escaped (labels come from the model, reasons and details from the monitor's input).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError
from pipeline_common.aws import error_code
from pipeline_common.capture import CAPTURE_PREFIX, find_request
from pipeline_common.records import FINDINGS, monitoring_key
from pipeline_report.lineage import Link, package_link
from pipeline_report.render import badge, table

from mlops.console_registry import NOT_FOUND, Page, facts, linked
from mlops.target import Target

MAX_RECORDS = 60  # checks shown, newest; hourly checks: two and a half days
SERVED_FORMATS = {"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"}  # what an image may be read as
MAX_IMAGE_PIXELS = 40_000_000  # larger captures are not decoded (a decompression bomb)

MONITORING_CSS = """
svg.drift text { font: 11px system-ui, sans-serif; fill: #424242; }
svg.drift .axis { stroke: #9e9e9e; stroke-width: 1; } svg.drift .grid { stroke: #eeeeee; }
svg.drift .threshold { stroke: #c62828; stroke-dasharray: 5 4; stroke-width: 1.2; }
svg.drift .series { fill: none; stroke-width: 1.5; }
svg.drift circle.ring { fill: none; stroke: #c62828; stroke-width: 2; }
td.drifted { color: #b71c1c; font-weight: 600; }
.unusual { display: flex; flex-wrap: wrap; gap: 12px; }
.unusual figure { margin: 0; width: 150px; }
.unusual img { width: 128px; height: 128px; object-fit: contain; image-rendering: pixelated;
               background: #fafafa; }
.unusual figcaption { font-size: 12px; overflow-wrap: anywhere; }
"""
DRIFT_TONE, CLEAN_TONE = "IssuesFound", "NoIssuesFound"  # badge colours: red, green
CHECK_COLOURS = {
    "embedding": "#1565c0",
    "predictions": "#6a1b9a",
    "confidence": "#2e7d32",
    "brightness": "#ef6c00",
    "contrast": "#00838f",
}
OTHER_COLOURS = ("#5d4037", "#455a64", "#ad1457", "#827717")


# -- records ---------------------------------------------------------------------------------------
@dataclass
class Records:
    endpoint: str
    prefix: str  # monitoring/<endpoint>/
    records: list[dict[str, Any]]  # oldest first
    unreadable: list[str]  # keys of records that are not JSON objects
    more: int  # older records not shown


def read_findings(target: Target, limit: int = MAX_RECORDS) -> Records:
    """The newest ``limit`` findings records of the endpoint, oldest first; records that do
    not parse are named, not raised (one bad object must not hide the rest)."""
    s3, bucket = target.client("s3"), target.artifacts_bucket
    endpoint = target.output("EndpointName")
    prefix = monitoring_key(endpoint) + "/"
    keys: list[str] = []
    for listing in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("/" + FINDINGS)]
    keys.sort()  # the time folder sorts by time (records.findings_key)
    shown, unreadable, records = keys[-limit:], [], []
    for key in shown:
        try:
            record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append({**record, "_key": key})
        else:
            unreadable.append(key)
    return Records(endpoint, prefix, records, unreadable, len(keys) - len(shown))


def checked_until(record: dict[str, Any]) -> str:
    """The end of the record's window (when its check looked up to), else its key's folder."""
    window = record.get("window")
    if isinstance(window, list) and len(window) == 2 and isinstance(window[1], str):
        return window[1]
    return str(record.get("_key", "?")).rsplit("/", 2)[-2]


def parse_moment(text: str) -> datetime | None:
    """An ISO time, or a findings key's folder (``2026-12-03T10-30-00Z``), as UTC."""
    for parse in (
        lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")),
        lambda t: datetime.strptime(t, "%Y-%m-%dT%H-%M-%SZ").replace(tzinfo=UTC),
    ):
        try:
            return parse(text)
        except ValueError:
            continue
    return None


def short_time(text: str) -> str:
    moment = parse_moment(text)
    return f"{moment:%Y-%m-%d %H:%M:%S}Z" if moment else text


def findings_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's findings that carry a check name and a numeric p-value."""
    found = []
    for finding in record.get("findings") or []:
        if not isinstance(finding, dict) or not isinstance(finding.get("check"), str):
            continue
        p = finding.get("p_value")
        if isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p):
            found.append(finding)
    return found


def number(value: Any, spec: str = ".3g") -> str:
    """A record's number as text; anything else (a record written by hand) escaped as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except ValueError:  # "d" of a float
            return format(value, "g")
    return escape(str(value)) if value is not None else "-"


# -- the chart -------------------------------------------------------------------------------------
CHART_W, CHART_H = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 60, 130, 14, 40
FLOOR_DECADES = 16  # p-values below 1e-16 (or 0) are drawn at the floor


def colour(check: str, order: list[str]) -> str:
    if check in CHECK_COLOURS:
        return CHECK_COLOURS[check]
    others = [c for c in order if c not in CHECK_COLOURS]
    return OTHER_COLOURS[others.index(check) % len(OTHER_COLOURS)]


def drift_chart_svg(records: list[dict[str, Any]]) -> str:
    """Each check's p-value per check time (x: time, y: log10 p), one line per check, the
    thresholds as dashed lines, drifted points ringed. Records oldest first; empty when no
    record has a finding."""
    labels = [checked_until(record) for record in records]
    moments = [parse_moment(label) for label in labels]
    # x: the check's time; in record order when a time does not parse
    xs = (
        [m.timestamp() for m in moments] if all(moments) else [float(i) for i in range(len(labels))]
    )
    points: list[tuple[float, str, str, dict[str, Any]]] = []  # (x, label, check, finding)
    for x, label, record in zip(xs, labels, records, strict=True):
        points += [(x, label, f["check"], f) for f in findings_of(record)]
    if not points:
        return ""
    order: list[str] = []
    for _, _, check, _ in points:
        if check not in order:
            order.append(check)
    thresholds = sorted(
        {
            float(f["threshold"])
            for _, _, _, f in points
            if isinstance(f.get("threshold"), int | float) and 0 < f["threshold"] <= 1
        }
    )

    def decades(p: float) -> float:
        return min(max(math.log10(p), -FLOOR_DECADES), 0.0) if p > 0 else -FLOOR_DECADES

    def below_floor(p: float) -> bool:
        return p <= 0 or math.log10(p) < -FLOOR_DECADES

    lowest = min([decades(f["p_value"]) for *_, f in points] + [decades(t) for t in thresholds])
    bottom = min(-1, math.floor(lowest - 0.5))
    x_min, x_max = min(p[0] for p in points), max(p[0] for p in points)
    width, height = CHART_W - LEFT - RIGHT, CHART_H - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (width / 2 if x_max == x_min else (x - x_min) / (x_max - x_min) * width)

    def sy(p: float) -> float:
        return TOP + max(decades(p), bottom) / bottom * height

    parts = [
        f'<svg class="drift" id="drift-chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" role="img" '
        f'aria-label="p-value of each drift check per check time, log scale">'
    ]
    step = 1 if -bottom <= 8 else 2 if -bottom <= 16 else 4
    for decade in range(0, bottom - 1, -step):
        y = sy(10.0**decade)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + width}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{'1' if decade == 0 else f'1e{decade}'}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + height}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{LEFT + width}" y1="{TOP + height}" '
        f'y2="{TOP + height}"/>'
        f'<text x="14" y="{TOP + height / 2:.1f}" transform="rotate(-90 14 '
        f'{TOP + height / 2:.1f})" text-anchor="middle">p-value (log scale)</text>'
    )
    for threshold in thresholds:
        y = sy(threshold)
        parts.append(
            f'<line class="threshold" data-threshold="{threshold:g}" x1="{LEFT}" '
            f'x2="{LEFT + width}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{LEFT + width - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#c62828">'
            f"threshold {threshold:g}</text>"
        )
    times = sorted({(x, label) for x, label, _, _ in points})
    for x, label in [times[0], times[-1]] if len(times) > 1 else times:
        anchor = "start" if x == times[0][0] and len(times) > 1 else "end"
        anchor = "middle" if len(times) == 1 else anchor
        parts.append(
            f'<text x="{sx(x):.1f}" y="{TOP + height + 16}" text-anchor="{anchor}">'
            f"{escape(short_time(label))}</text>"
        )
    parts.append(
        f'<text x="{LEFT + width / 2:.1f}" y="{CHART_H - 4}" text-anchor="middle">'
        f"check time (end of its window, UTC)</text>"
    )
    for rank, check in enumerate(order):
        series = [(x, label, f) for x, label, c, f in points if c == check]
        fill = colour(check, order)
        coordinates = " ".join(f"{sx(x):.1f},{sy(f['p_value']):.1f}" for x, _, f in series)
        parts.append(
            f'<g class="check" data-check="{escape(check)}">'
            f'<polyline class="series" stroke="{fill}" points="{coordinates}"/>'
        )
        for x, label, finding in series:
            p, drifted = finding["p_value"], bool(finding.get("drifted"))
            cx, cy = sx(x), sy(p)
            tip = (
                f"{check} at {short_time(label)}: p = {p:.3g}"
                + (f" (drawn at 1e-{FLOOR_DECADES})" if below_floor(p) else "")
                + (", drifted" if drifted else "")
            )
            parts.append(
                f'<circle class="point" data-drifted="{str(drifted).lower()}" cx="{cx:.1f}" '
                f'cy="{cy:.1f}" r="3.5" fill="{fill}"><title>{escape(tip)}</title></circle>'
            )
            if drifted:
                parts.append(f'<circle class="ring" cx="{cx:.1f}" cy="{cy:.1f}" r="7"/>')
        y = TOP + 30 + rank * 16
        parts.append(
            f'<line x1="{LEFT + width + 6}" x2="{LEFT + width + 22}" y1="{y}" y2="{y}" '
            f'stroke="{fill}" stroke-width="3"/>'
            f'<text x="{LEFT + width + 26}" y="{y + 4}">{escape(check)}</text></g>'
        )
    ring_y = TOP + 30 + len(order) * 16
    parts.append(
        f'<circle class="ring" cx="{LEFT + width + 14}" cy="{ring_y}" r="6"/>'
        f'<text x="{LEFT + width + 26}" y="{ring_y + 4}">drifted</text></svg>'
    )
    return "".join(parts)


# -- the page --------------------------------------------------------------------------------------
def verdict(record: dict[str, Any]) -> str:
    return badge("drift", DRIFT_TONE) if record.get("drift") else badge("no drift", CLEAN_TONE)


def checks_table(records: list[dict[str, Any]]) -> str:
    """One row per check time, newest first: answers, verdict, each check's p-value."""
    order: list[str] = []
    for record in records:
        for finding in findings_of(record):
            if finding["check"] not in order:
                order.append(finding["check"])
    rows, attrs = [], []
    for record in reversed(records):
        by_check = {f["check"]: f for f in findings_of(record)}
        cells = [
            escape(short_time(checked_until(record))),
            number(record.get("answers_checked"), "d"),
            verdict(record),
        ]
        for check in order:
            finding = by_check.get(check)
            if finding is None:
                cells.append("-")
            elif finding.get("drifted"):
                cells.append(f'<span class="error"><b>{number(finding["p_value"])}</b></span>')
            else:
                cells.append(number(finding["p_value"]))
        cells.append(escape(str(record.get("retrain") or "-")))
        rows.append(cells)
        attrs.append(
            f'data-checked="{escape(checked_until(record))}" '
            f'data-drift="{str(bool(record.get("drift"))).lower()}"'
        )
    headers = ["Checked until", "Answers", "Verdict", *(f"p {c}" for c in order), "Retrain"]
    return table([escape(h) for h in headers], rows, attrs)


def latest_section(record: dict[str, Any]) -> str:
    window = record.get("window")
    window = window if isinstance(window, list) and window else ["?"]
    package = record.get("model_package")
    model = record.get("model")
    retrain = record.get("retrain")
    rows = [
        ("Verdict", verdict(record)),
        (
            "Window",
            f"{escape(short_time(str(window[0])))} to {escape(short_time(str(window[-1])))} (UTC)",
        ),
        ("Answers checked", number(record.get("answers_checked"), "d")),
        ("Model version", linked(package_link(package)) if package else "-"),
        ("Model (training job)", linked(Link("training job", model)) if model else "-"),
        ("Reason", escape(str(record.get("reason") or "-"))),
        ("Unreadable capture lines", number(record.get("unreadable_capture_lines", 0), "d")),
        (
            "Retrain",
            escape(str(retrain))
            if retrain
            else "none started"
            + (" (drift found: see RetrainOnDrift)" if record.get("drift") else ""),
        ),
        ("Record", f"<code>{escape(str(record.get('findings_uri') or record['_key']))}</code>"),
    ]
    findings = [
        [
            escape(str(f["check"])),
            escape(str(f.get("test", "-"))),
            number(f.get("statistic")),
            number(f["p_value"]),
            number(f.get("threshold")),
            badge("drifted", DRIFT_TONE) if f.get("drifted") else badge("ok", CLEAN_TONE),
            escape(str(f.get("detail", ""))),
        ]
        for f in findings_of(record)
    ]
    attrs = [
        f'data-check="{escape(str(f["check"]))}" '
        f'data-drifted="{str(bool(f.get("drifted"))).lower()}"'
        for f in findings_of(record)
    ]
    return (
        f'<h2 id="latest">Latest check: {escape(short_time(checked_until(record)))}</h2>'
        + facts(rows)
        + table(
            ["Check", "Test", "Statistic", "p-value", "Threshold", "Verdict", "Detail"],
            findings,
            attrs,
        )
    )


def image_url(capture_key: str, event_id: str) -> str:
    """The console's address of one captured request's image (each key segment encoded)."""
    return f"/monitoring/images/{quote(capture_key, safe='/')}?event={quote(event_id, safe='')}"


def unusual_section(record: dict[str, Any], heading: str) -> str:
    figures = []
    for entry in record.get("unusual") or []:
        if not isinstance(entry, dict) or not entry.get("capture_key") or not entry.get("event_id"):
            continue
        key, event = str(entry["capture_key"]), str(entry["event_id"])
        label = entry.get("label")
        figures.append(
            f'<figure data-event="{escape(event)}"><a href="{escape(image_url(key, event))}">'
            f'<img src="{escape(image_url(key, event))}" alt="captured request {escape(event)}">'
            f"</a><figcaption>predicted <b>{escape(str(label)) if label is not None else '-'}"
            f"</b><br>score {number(entry.get('score'))}<br>"
            f"{escape(short_time(str(entry.get('inference_time', '?'))))}<br>"
            f'<span class="muted">{escape(event)}</span></figcaption></figure>'
        )
    body = (
        f'<div class="unusual">{"".join(figures)}</div>'
        if figures
        else "<p>This check named no unusual requests (it had no embeddings).</p>"
    )
    return f"<h2>{heading}</h2>" + body


def monitoring_page(target: Target) -> Page:
    """The drift monitor's findings: chart and table over time, the latest check in full and the
    most unusual requests it saw; a page that says so when there are none yet."""
    found = read_findings(target)
    head = (
        f"<h1>Drift monitoring of {escape(found.endpoint)}</h1>"
        f'<p class="muted">Findings records under <code>s3://{escape(target.artifacts_bucket)}/'
        f"{escape(found.prefix)}</code>, written by the drift monitor on its schedule and by "
        "<code>mlops monitor run</code> (docs/monitoring.md).</p>"
    )
    notes = [
        f'<p class="error">Not a findings record: <code>{escape(key)}</code></p>'
        for key in found.unreadable
    ]
    if not found.records:
        return "Monitoring", head + "".join(notes) + (
            '<p id="no-findings">No findings yet: the monitor judges a window once the endpoint '
            "has captured enough answers (20); <code>mlops monitor run</code> checks now.</p>"
        )
    records = found.records
    latest = records[-1]
    body = [head, *notes, '<h2 id="over-time">Drift over time</h2>']
    if found.more:
        total = found.more + len(records)
        body.append(f'<p class="muted">The newest {len(records)} checks of {total}.</p>')
    body += [drift_chart_svg(records), checks_table(records), latest_section(latest)]
    body.append(unusual_section(latest, "Most unusual requests of the latest check"))
    drifted = next((r for r in reversed(records) if r.get("drift")), None)
    if drifted is not None and drifted is not latest:
        when = escape(short_time(checked_until(drifted)))
        heading = f"Most unusual requests of the last drifted check ({when})"
        body.append(unusual_section(drifted, heading))
    body.append(
        '<p class="muted">Score: minus the log of the density the validation embeddings give the '
        "request; higher is less like the validation data.</p>"
    )
    return "Monitoring", "".join(body)


# -- the images ------------------------------------------------------------------------------------
def captured_image(target: Target, capture_key: str, event_id: str) -> bytes:
    """The image of one captured request as PNG; LookupError (a 404) naming why there is none:
    a key outside the endpoint's capture folder, no such file or event, no request body, or a
    body that is not an image."""
    folder = f"{CAPTURE_PREFIX}/{target.output('EndpointName')}/"
    segments = capture_key.split("/")
    if (
        not capture_key.startswith(folder)
        or not capture_key.endswith(".jsonl")
        or any(s in ("", ".", "..") for s in segments)
    ):
        raise LookupError(
            f"No captured image at {capture_key}: the console shows only capture files "
            f"(.jsonl) under {folder} of the artifacts bucket"
        )
    if not event_id:
        raise LookupError(f"No event given for {capture_key}: add ?event=<event id>")
    try:
        captured = find_request(target.client("s3"), target.artifacts_bucket, capture_key, event_id)
    except ClientError as exc:
        if error_code(exc) in NOT_FOUND | {"NoSuchBucket"}:
            raise LookupError(f"No capture file {capture_key} in the artifacts bucket") from None
        raise
    if captured is None:
        raise LookupError(f"No event {event_id} in {capture_key}")
    if captured.request is None:
        raise LookupError(f"Event {event_id} was captured without its request (CaptureOptions)")
    return as_png(captured.request.data, f"event {event_id} of {capture_key}")


def as_png(data: bytes, what: str) -> bytes:
    """The bytes of a PNG as they are, any other readable image re-encoded as PNG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in SERVED_FORMATS:
                raise LookupError(f"The request of {what} is {image.format}, not shown here")
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise LookupError(f"The request of {what} is too large to show")
            image.load()
            if image.format == "PNG":
                return data
            out = io.BytesIO()
            image.convert("RGBA" if "A" in image.getbands() else "RGB").save(out, "PNG")
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise LookupError(f"The request of {what} is not a readable image: {exc}") from None
