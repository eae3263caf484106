"""The report's HTML: one file, inline CSS, PNGs as data: URIs, and the data as embedded JSON.

Every value from a run is escaped (state causes and failure reasons carry arbitrary text). The
JSON block (`<script type="application/json" id="report-data">`) holds what the tables show, so
programs and tests read the report without scraping tables.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from pipeline_common import records as names

from pipeline_report import analysis as an
from pipeline_report.collect import RunData
from pipeline_report.describe import Endpoint, Retrain, Tuning
from pipeline_report.lineage import Link, lineage_html, link_url, package_link
from pipeline_report.records import Confusion

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 0 24px 48px; color: #212121; }
h1 { font-size: 22px; margin: 24px 0 4px; } h2 { font-size: 18px; margin-top: 36px;
     border-bottom: 1px solid #e0e0e0; padding-bottom: 4px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 16px; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eeeeee;
         vertical-align: top; }
th { background: #fafafa; font-weight: 600; } td.num { text-align: right;
     font-variant-numeric: tabular-nums; }
tr.best td { background: #e8f5e9; font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: white;
         font-size: 12px; font-weight: 600; }
.good { background: #2e7d32; } .bad { background: #c62828; } .warn { background: #ef6c00; }
.busy { background: #1565c0; } .info { background: #757575; }
img { max-width: 100%; border: 1px solid #eeeeee; margin: 8px 0; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } .plots img { max-width: 49%; }
.error { color: #b71c1c; white-space: pre-wrap; } .muted { color: #757575; }
pre { background: #f5f5f5; padding: 8px; overflow-x: auto; white-space: pre-wrap; }
nav a { margin-right: 12px; } code { font-size: 13px; }
ol.lineage { list-style: none; padding-left: 0; } ol.lineage li { margin: 2px 0; }
ol.lineage li + li::before { content: "\2192  "; color: #757575; }
"""
SECTIONS = (
    ("dataset", "Data set"),
    ("timeline", "Timeline"),
    ("tuning", "Tuning"),
    ("training", "Training"),
    ("rules", "Rules and gate"),
    ("profile", "System profile"),
    ("endpoint", "Endpoint"),
    ("notes", "Notes"),
)


TONES = {
    "good": {
        *("SUCCEEDED", "Completed", "InService", "NoIssuesFound", "APPROVED", "pass", "Passed"),
        "Approved",  # a model package version's ModelApprovalStatus
    },
    "bad": {
        *("FAILED", "Failed", "IssuesFound", "REJECTED", "block", "TIMED_OUT", "ABORTED"),
        "Rejected",
    },
    "warn": {
        "CAUGHT",
        "warn",
        "Error",
        "Stopped",
        "Stopping",
        "RolledBack",
        "PendingManualApproval",
    },
    "busy": {"RUNNING", "InProgress", "Creating", "Updating", "Training", "Downloading"},
}


def tone(text: str) -> str:
    """The colour class of a status word (any service's); unknown words are grey."""
    return next((name for name, words in TONES.items() if text in words), "info")


def badge(text: str | None, kind: str | None = None) -> str:
    text = text or "unknown"
    return f'<span class="badge {tone(kind or text)}">{escape(text)}</span>'


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def seconds(value: float | None) -> str:
    """A duration as HTML (a non-breaking space keeps number and unit on one line)."""
    if value is None:
        return "-"
    return f"{value:.1f}&nbsp;s" if value < 120 else f"{value / 60:.1f}&nbsp;min"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], attrs: Sequence[str] = ()) -> str:
    """Cells are HTML already (escaped by the caller); `attrs` are per-row attributes."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        extra = f" {attrs[index]}" if index < len(attrs) else ""
        body.append(f"<tr{extra}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(name: str, png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<img data-plot="{escape(name)}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'
    )


def short_cause(cause: str | None) -> str:
    """Lambda causes are JSON with errorMessage; show the message."""
    if not cause:
        return ""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        return str(parsed["errorMessage"])
    return cause


# -- sections ------------------------------------------------------------------------------------
def header(data: RunData) -> str:
    view = data.view
    dataset = (view.input or {}).get("dataset") if isinstance(view.input, dict) else None
    duration = seconds(view.duration_s) if view.duration_s is not None else "still running"
    outcome = an.reported_outcome(view.status, view.steps)
    status, error, cause = (
        (outcome.status, outcome.error, outcome.cause)
        if outcome
        else (view.status, view.error, view.cause)
    )
    if outcome:
        duration = "written by the run's last step (WriteReport); the execution ends next"
    parts = [
        f'<h1>Run report: {escape(view.name)} <span id="outcome">{badge(status)}</span></h1>',
        f'<p class="muted">Data set <b>{escape(str(dataset or "-"))}</b> · started '
        f"{escape(view.started.strftime('%Y-%m-%d %H:%M:%S %Z'))} · {duration} · target "
        f"{escape(data.target_name)} · generated "
        f"{escape(data.generated.strftime('%Y-%m-%d %H:%M:%S UTC'))}</p>",
    ]
    if error:
        parts.append(
            f'<p class="error" id="execution-error"><b>{escape(error)}</b>: '
            f"{escape(short_cause(cause))}</p>"
        )
    parts.append(
        "<nav>" + "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t in SECTIONS) + "</nav>"
    )
    return "\n".join(parts)


def dataset_section(validation: dict[str, Any] | None) -> str:
    """What ValidateDataset found: images per split, unreadable ones, and its warnings."""
    parts = ['<h2 id="dataset">Data set</h2>']
    if not validation:
        return parts[0] + '<p class="muted">No validation record (validation.json).</p>'
    images = validation.get("images") or {}
    readable, unreadable = images.get("readable") or {}, images.get("unreadable") or {}
    rows = [
        [
            escape(split),
            str(sum((readable.get(split) or {}).values())),
            str(sum((unreadable.get(split) or {}).values())),
            escape(str(min((readable.get(split) or {}).values(), default="-"))),
        ]
        for split in ("train", "valid", "test")
        if split in readable
    ]
    count = int(images.get("unreadable_count") or 0)
    parts.append(
        f'<p data-unreadable-images="{count}">Unreadable images found by validation (skipped by '
        f"training, never sent by the smoke test): <strong>{count}</strong></p>"
    )
    if rows:
        parts.append(table(["Split", "Readable", "Unreadable", "Smallest class"], rows))
    listed = images.get("unreadable_files") or []
    if listed:
        parts.append(
            table(
                ["Split", "File", "Reason"],
                [
                    [
                        escape(f.get("split", "")),
                        f"<code>{escape(f.get('file', ''))}</code>",
                        escape(f.get("reason", "")),
                    ]
                    for f in listed
                ],
            )
        )
    warnings = validation.get("warnings") or []
    if warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
        parts.append(f'<h3>Warnings</h3><ul id="validation-warnings">{items}</ul>')
    return "".join(parts)


def timeline_section(data: RunData, plots: dict[str, bytes]) -> str:
    rows, attrs = [], []
    for row in data.timeline:
        error = ""
        if row.error:
            error = (
                f'<span class="error">{escape(row.error)}: {escape(short_cause(row.cause))}</span>'
            )
        rows.append(
            [
                escape(row.name),
                escape(row.state_type),
                badge(row.status),
                f"+{row.started_s:.1f}&nbsp;s",
                seconds(row.duration_s),
                str(row.visits),
                error,
            ]
        )
        attrs.append(f'data-state="{escape(row.name)}" data-status="{escape(row.status)}"')
    return (
        '<h2 id="timeline">Timeline</h2>'
        + table(["State", "Type", "Status", "Start", "Duration", "Visits", "Error"], rows, attrs)
        + image("gantt", plots.get("gantt"), "Gantt chart of the states")
    )


def tuning_section(tuning: Tuning | None, plots: dict[str, bytes]) -> str:
    if tuning is None:
        return '<h2 id="tuning">Tuning</h2><p class="muted">No tuning job for this run.</p>'
    counters = ", ".join(f"{k} {v}" for k, v in tuning.counters.items() if v) or "-"
    summary = table(
        ["Tuning job", "Status", "Strategy", "Objective", "Trials"],
        [
            [
                f"<code>{escape(tuning.job_name)}</code>",
                badge(tuning.status),
                escape(str(tuning.strategy or "-")),
                f"{escape(tuning.objective_metric)} ({escape(tuning.objective_type)})",
                f"{escape(counters)} of max {escape(str(tuning.max_jobs or '-'))}",
            ]
        ],
    )
    best = table(
        ["Hyperparameter", "Value"],
        [
            [escape(k), f"<code>{escape(json.dumps(v))}</code>"]
            for k, v in sorted(tuning.best_hyperparameters.items())
        ],
    )
    names = sorted({k for t in tuning.trials for k in t["hyperparameters"]})
    rows, attrs = [], []
    for rank, trial in enumerate(tuning.trials, 1):
        rows.append(
            [
                str(rank),
                f"<code>{escape(trial['name'])}</code>",
                badge(trial["status"]),
                fmt(trial["objective"], 6),
            ]
            + [escape(fmt(trial["hyperparameters"].get(n))) for n in names]
            + [f'<span class="error">{escape(trial.get("failure_reason") or "")}</span>']
        )
        css = ' class="best"' if trial["name"] == tuning.best_name else ""
        attrs.append(f'data-trial="{escape(trial["name"])}"{css}')
    leaderboard = table(
        ["#", "Training job", "Status", tuning.objective_metric, *names, "Failure"], rows, attrs
    )
    return (
        '<h2 id="tuning">Tuning</h2>'
        + summary
        + f"<h3>Best hyperparameters (BestTrainingJob <code>{escape(tuning.best_name or '-')}"
        + f"</code>, {escape(tuning.objective_metric)} {fmt(tuning.best_objective, 6)})</h3>"
        + best
        + f'<h3>Leaderboard</h3><p class="muted">Sorted by {escape(tuning.objective_metric)}, '
        + f"best first; from {escape(tuning.trials_source)}.</p>"
        + leaderboard
        + '<div class="plots">'
        + image("objective_by_trial", plots.get("objective_by_trial"), "objective per trial")
        + image("objective_by_lr", plots.get("objective_by_lr"), "objective against learning rate")
        + "</div>"
    )


def training_section(retrain: Retrain | None, plots: dict[str, bytes]) -> str:
    if retrain is None:
        return (
            '<h2 id="training">Training</h2><p class="muted">No profiled retrain for this run.</p>'
        )
    metrics = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(retrain.final_metrics.items())) or "-"
    params = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(retrain.hyperparameters.items()))
    failure = (
        f'<p class="error">{escape(retrain.failure_reason)}</p>' if retrain.failure_reason else ""
    )
    source = retrain.curves.source if retrain.curves else "no per-epoch metrics"
    return (
        '<h2 id="training">Training (profiled retrain)</h2>'
        + table(
            ["Training job", "Status", "Instance", "Time", "Final metrics"],
            [
                [
                    f"<code>{escape(retrain.job_name)}</code>",
                    badge(retrain.status) + f" {escape(retrain.secondary_status or '')}",
                    escape(retrain.instance_type or "-"),
                    seconds(retrain.billable_s),
                    escape(metrics),
                ]
            ],
        )
        + failure
        + f'<p class="muted">Hyperparameters: {escape(params)}. Curves from {escape(source)}.</p>'
        + image("training_curves", plots.get("training_curves"), "training curves")
    )


def registration(
    record: dict[str, Any] | None, links: Sequence[Link] = (), region: str | None = None
) -> str:
    """Which model package version the run registered (every gated retrain gets one), and its
    lineage: where it came from and where it serves, each step linked."""
    if not record:
        return '<p class="muted">No model package version: the run ended before the registry.</p>'
    chain = "<h3>Lineage of this version</h3>" + lineage_html(links, region) if links else ""
    return (
        f'<p id="model-package">Registered as version '
        f"<b>{escape(str(record.get('model_package_version') or '?'))}</b> of the model package "
        f"group <code>{escape(str(record.get('model_package_group_name')))}</code> "
        f"{badge(record.get('approval_status'))}<br>"
        f'<span class="muted">{escape(str(record.get("model_package_arn")))}</span></p>'
    ) + chain


def rules_section(data: RunData) -> str:
    gate = data.gate
    parts = ['<h2 id="rules">Rules and gate</h2>']
    if gate:
        decision = "APPROVED" if gate.get("approved") else "REJECTED"
        parts.append(
            f"<p>Gate decision: {badge(decision)} {escape(str(gate.get('summary', '')))}</p>"
            f'<p class="muted">Test accuracy {fmt(gate.get("test_accuracy"))} (minimum '
            f"{fmt(gate.get('min_test_accuracy'))}); serving model's "
            f"{fmt(gate.get('baseline_accuracy'))}"
            f" (tolerance {fmt(gate.get('regression_tolerance'))}). Policy: block "
            f"{escape(', '.join(gate.get('policy', {}).get('block', [])) or '-')}; warn "
            f"{escape(', '.join(gate.get('policy', {}).get('warn', [])) or '-')}.</p>"
        )
        parts.append(
            registration(data.records.get(names.REGISTRATION), data.lineage, data.link_region)
        )
        rows, attrs = [], []
        for finding in gate.get("findings", []):
            rows.append(
                [
                    escape(finding.get("check", "?")),
                    badge(finding.get("status")),
                    escape(finding.get("source", "")),
                    badge(finding.get("severity"), finding.get("severity")),
                    escape(finding.get("details", "")),
                ]
            )
            attrs.append(
                f'data-finding="{escape(finding.get("check", "?"))}" '
                f'data-source="{escape(finding.get("source", ""))}" '
                f'data-status="{escape(finding.get("status", ""))}"'
            )
        parts.append("<h3>Findings (gate.json)</h3>")
        parts.append(table(["Check", "Status", "Source", "Severity", "Details"], rows, attrs))
        parts.append(skipped_images(gate))
    else:
        parts.append('<p class="muted">No gate decision: the run did not reach EvaluateRules.</p>')
    if data.retrain and data.retrain.rule_statuses:
        rows = [
            [escape(r["rule"]), badge(r["status"]), escape(r["source"]), escape(r["details"])]
            for r in data.retrain.rule_statuses
        ]
        attrs = [
            f'data-rule="{escape(r["rule"])}" data-status="{escape(r["status"])}"'
            for r in data.retrain.rule_statuses
        ]
        parts.append(
            "<h3>Rule evaluations of the retrain (DescribeTrainingJob's rule statuses and the "
            "job's rule_statuses.json)</h3>"
        )
        parts.append(table(["Rule", "Status", "Source", "Details"], rows, attrs))
    return "".join(parts)


def profile_section(retrain: Retrain | None, plots: dict[str, bytes]) -> str:
    parts = ['<h2 id="profile">System profile</h2>']
    profile = retrain.profile if retrain else None
    if profile is None:
        parts.append('<p class="muted">No system profile (see the notes).</p>')
    else:
        summary = ", ".join(f"{k} {fmt(v)}" for k, v in profile.summary.items())
        parts.append(f'<p class="muted">From {escape(profile.source)}. {escape(summary)}.</p>')
        parts.append(image("system_profile", plots.get("system_profile"), "CPU and memory"))
    parts.append(image("epoch_times", plots.get("epoch_times"), "time per epoch"))
    return "".join(parts)


def skipped_images(gate: dict[str, Any]) -> str:
    """The images train.py could not decode: left out of the retrain and counted here."""
    count = gate.get("skipped_images")
    if count is None:
        return '<p class="muted">The retrain wrote no list of skipped images.</p>'
    listed = gate.get("skipped_files", [])
    text = (
        f'<p data-skipped-images="{int(count)}">Images skipped by the retrain (corrupt or '
        f"unreadable, left out of training and evaluation): <strong>{int(count)}</strong>"
        + (f" (the first {len(listed)} listed)" if 0 < len(listed) < count else "")
        + "</p>"
    )
    rows = [
        [
            escape(f.get("split", "")),
            f"<code>{escape(f.get('file', ''))}</code>",
            escape(f.get("reason", "")),
        ]
        for f in listed
    ]
    return text + (table(["Split", "File", "Reason"], rows) if rows else "")


def operation_text(deployment: dict[str, Any]) -> str:
    operation = str(deployment.get("operation", "-"))
    newer = deployment.get("superseded_by")
    return f"{operation} (a model approved later serves: {newer})" if newer else operation


def package_line(deployment: dict[str, Any], region: str | None = None) -> str:
    """The model package version the run's endpoint config serves, linked to its page."""
    arn = deployment.get("model_package_arn")
    if not arn:
        return ""
    url = link_url(package_link(str(arn)), region)
    shown = f'<a href="{escape(url)}">{escape(str(arn))}</a>' if url else escape(str(arn))
    return f'<br><span class="muted" id="served-package">model package {shown}</span>'


def endpoint_section(data: RunData, plots: dict[str, bytes]) -> str:
    endpoint: Endpoint | None = data.endpoint
    parts = ['<h2 id="endpoint">Endpoint</h2>']
    deployment = data.records.get(names.DEPLOYMENT) or {}
    if endpoint is None:
        parts.append('<p class="muted">This run deployed nothing.</p>')
    else:
        serving = "yes" if endpoint.serves_this_run else f"no (now {endpoint.config_name or '-'})"
        parts.append(
            table(
                [
                    "Endpoint",
                    "Status",
                    "This run's config",
                    "Still serving it",
                    "Model",
                    "Instance",
                    "Operation",
                ],
                [
                    [
                        f"<code>{escape(endpoint.name)}</code>",
                        badge(endpoint.status),
                        f"<code>{escape(endpoint.run_config_name or '-')}</code>",
                        escape(serving),
                        f"<code>{escape(endpoint.model_name or '-')}</code>"
                        + package_line(deployment, data.link_region)
                        + (
                            f'<br><span class="muted">{escape(endpoint.model_data)}</span>'
                            if endpoint.model_data
                            else ""
                        ),
                        escape(endpoint.instance_type or "-"),
                        escape(operation_text(deployment)),
                    ]
                ],
            )
        )
        if endpoint.failure_reason:
            parts.append(f'<p class="error">{escape(endpoint.failure_reason)}</p>')
    parts.append(smoke_test(data.records.get(names.SMOKE_TEST)))
    parts.append(accuracy(data, data.retrain.confusion if data.retrain else None, plots))
    return "".join(parts)


def smoke_test(record: dict[str, Any] | None) -> str:
    if not record:
        return '<p class="muted">No smoke test record.</p>'
    rejected = record.get("input_rejected")
    if rejected:
        return (
            "<h3>Smoke test</h3>"
            f'<p class="muted" data-smoke-input-rejected="{int(rejected.get("status") or 0)}">'
            f"The endpoint refused <code>{escape(str(record.get('image_key')))}</code> as bad "
            f"input ({escape(str(rejected.get('status')))}: "
            f"{escape(str(rejected.get('message', ''))[:200])}); an input error is not a model "
            "failure, so the run went on.</p>"
        )
    top = (record.get("answer") or {}).get("top_k") or []
    probability = f" ({top[0].get('probability', 0):.3f})" if top else ""
    return "<h3>Smoke test</h3>" + table(
        ["Image", "Expected", "Predicted", "Correct", "Latency"],
        [
            [
                f"<code>{escape(str(record.get('image_key')))}</code>",
                escape(str(record.get("expected_class_index"))),
                f"{escape(str(record.get('predicted_class_index')))} "
                f"{escape(str(record.get('label')))}{probability}",
                escape(str(record.get("correct"))),
                f"{fmt(record.get('latency_ms'), 1)} ms",
            ]
        ],
    )


def accuracy(data: RunData, confusion: Confusion | None, plots: dict[str, bytes]) -> str:
    test = (data.retrain.final_metrics.get("test:accuracy") if data.retrain else None) or (
        (data.gate or {}).get("test_accuracy")
    )
    parts = [
        f"<h3>Test split</h3><p>Test accuracy (training job's test:accuracy): <b>{fmt(test)}</b>"
    ]
    if confusion:
        parts.append(
            f"; its test pass: <b>{fmt(confusion.accuracy)}</b> on {confusion.images} test "
            "images (confusion.json).</p>"
        )
        parts.append(
            table(
                ["Class", "Accuracy"],
                [[escape(k), fmt(v)] for k, v in confusion.per_class_accuracy.items()],
            )
        )
        parts.append(image("confusion_matrix", plots.get("confusion_matrix"), "confusion matrix"))
    else:
        parts.append(".</p>")
    return "".join(parts)


def notes_section(notes: list[str]) -> str:
    items = "".join(f"<li>{escape(n)}</li>" for n in notes) or "<li>None.</li>"
    return f'<h2 id="notes">Notes</h2><ul>{items}</ul>'


# -- the document ---------------------------------------------------------------------------------
def report_json(data: RunData, plots: dict[str, bytes]) -> dict[str, Any]:
    """What the tables show, for programs: embedded in the page and returned by build."""
    tuning, retrain = data.tuning, data.retrain
    return {
        "execution": data.view.name,
        "status": data.view.status,
        "error": data.view.error,
        "cause": short_cause(data.view.cause),
        "states": [
            {"name": r.name, "status": r.status, "visits": r.visits, "duration_s": r.duration_s}
            for r in data.timeline
        ],
        "tuning": None
        if tuning is None
        else {
            "job_name": tuning.job_name,
            "objective": {"metric": tuning.objective_metric, "type": tuning.objective_type},
            "best_training_job": tuning.best_name,
            "best_hyperparameters": tuning.best_hyperparameters,
            "trials": [
                {k: t.get(k) for k in ("name", "status", "objective", "hyperparameters")}
                for t in tuning.trials
            ],
        },
        "retrain": None
        if retrain is None
        else {
            "job_name": retrain.job_name,
            "status": retrain.status,
            "final_metrics": retrain.final_metrics,
            "rule_statuses": retrain.rule_statuses,
            "curves": retrain.curves.to_json() if retrain.curves else None,
        },
        "gate": data.gate,
        "validation": _validation_json(data.records.get(names.VALIDATION)),
        "confusion": None if not (retrain and retrain.confusion) else retrain.confusion.__dict__,
        "plots": sorted(plots),
        "notes": data.notes,
        "lineage": [
            {**vars(link), "url": link_url(link, data.link_region)} for link in data.lineage
        ],
    }


def _validation_json(validation: dict[str, Any] | None) -> dict[str, Any] | None:
    if not validation:
        return None
    images = validation.get("images") or {}
    return {
        "unreadable_count": images.get("unreadable_count"),
        "unreadable": images.get("unreadable"),
        "warnings": validation.get("warnings") or [],
        "smoke_test_images": validation.get("smoke_test_images") or [],
    }


def render(data: RunData, plots: dict[str, bytes]) -> str:
    payload = json.dumps(report_json(data, plots), default=str).replace("</", "<\\/")
    body = "\n".join(
        [
            header(data),
            dataset_section(data.records.get(names.VALIDATION)),
            timeline_section(data, plots),
            tuning_section(data.tuning, plots),
            training_section(data.retrain, plots),
            rules_section(data),
            profile_section(data.retrain, plots),
            endpoint_section(data, plots),
            notes_section(data.notes),
        ]
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Run report: {escape(data.view.name)}</title><style>{CSS}</style></head>"
        f"<body>\n{body}\n"
        f'<script type="application/json" id="report-data">{payload}</script>\n'
        "</body></html>\n"
    )
