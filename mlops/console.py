"""`mlops console`: a small web console for the pipeline's executions (local cloud or a stack).

Pages are rendered on the server from the same reads as the CLI (executions.describe, the
state machine's definition) with the standard library's HTTP server; a little JavaScript shows
a state's input/output/error on click and reloads a running execution every few seconds.

- `/` lists executions (status, start, duration, data set), newest first;
- `/executions/<name>` draws the state machine from DescribeStateMachine's definition, each
  state coloured by its status in this execution's history, with the state timeline below;
- `/executions/<name>/report` builds the run report on demand (cached once the run ended);
- `/models` lists every model version, and `/models/<group>/<version>`, `/datasets/<name>`,
  `/tuning-jobs/<name>`, `/training-jobs/<name>`, `/endpoint-configs/<name>` and
  `/endpoints/<name>` show each element of a version's lineage (console_registry.py); an
  execution that registered or deployed a version shows its lineage too;
- `/monitoring` shows the drift monitor's findings over time, the latest in full and the most
  unusual captured images, served by `/monitoring/images/<capture key>?event=<event id>`
  (console_monitoring.py).

The graph itself (layout and SVG) is console_graph.py, the lineage pages console_registry.py,
the monitoring page console_monitoring.py; this module is the execution pages and the server.

It listens on 127.0.0.1 by default: it shows inputs and outputs as they are, unauthenticated.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from pipeline_report import analysis as an
from pipeline_report import executions as ex
from pipeline_report.render import CSS, badge, seconds, short_cause, table

from mlops import console_monitoring as monitoring
from mlops import console_registry as registry
from mlops.console_graph import FILL, graph_svg
from mlops.runs import CliError
from mlops.target import Target, TargetError

log = logging.getLogger(__name__)

REFRESH_MS = 3000
MAX_SHOWN_CHARS = 20_000
DATASET_SUFFIX_HEX = 16  # execution names are <data set>-<16 hex> (docs/contracts.md)

CONSOLE_CSS = """
.layout { display: flex; gap: 24px; align-items: flex-start; }
.graph { flex: 0 0 auto; } .side { flex: 1 1 auto; min-width: 300px; position: sticky; top: 8px; }
g.state { cursor: pointer; } g.state rect { stroke: #424242; stroke-width: 1; rx: 6; }
g.state.selected rect { stroke: #000; stroke-width: 3; }
g.state text { font: 12px system-ui, sans-serif; fill: white; pointer-events: none; }
g.state.unvisited text { fill: #424242; }
.edge { fill: none; stroke: #9e9e9e; stroke-width: 1.2; }
.edge.catch { stroke-dasharray: 4 3; stroke: #e0a0a0; } .edge.loop { stroke: #90caf9; }
.edge.taken { stroke: #424242; stroke-width: 1.8; } .edge.catch.taken { stroke: #c62828; }
.edge.loop.taken { stroke: #1565c0; }
#details pre { max-height: 320px; } .legend span { margin-right: 10px; }
.progress { background: #e3f2fd; padding: 6px 10px; border-radius: 4px; }
"""


# -- pages ---------------------------------------------------------------------------------------
def dataset_of(name: str) -> str:
    """`digits-0123456789abcdef` -> `digits`."""
    head, _, tail = name.rpartition("-")
    return head if head and len(tail) == DATASET_SUFFIX_HEX else "-"


def page(title: str, body: str, refresh: bool = False) -> str:
    script = (
        f"<script>setTimeout(() => location.reload(), {REFRESH_MS});</script>" if refresh else ""
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}{CONSOLE_CSS}{monitoring.MONITORING_CSS}"
        '</style></head><body><p class="muted" id="nav"><a href="/">Executions</a> · '
        '<a href="/models">Model versions</a> · <a href="/monitoring">Monitoring</a> · '
        f"mlops console</p>{body}{script}"
        "</body></html>\n"
    )


def clip(value: Any) -> Any:
    """Inputs and outputs as JSON text, cut at MAX_SHOWN_CHARS (a state may carry a lot)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "\n... (cut)"


DETAILS_JS = """
const states = JSON.parse(document.getElementById('states-data').textContent);
function field(label, text, css) {
  const box = document.createElement('div');
  const head = document.createElement('h3'); head.textContent = label; box.appendChild(head);
  const pre = document.createElement('pre'); pre.textContent = text;
  if (css) pre.className = css;
  box.appendChild(pre); return box;
}
function show(name) {
  const s = states[name]; if (!s) return;
  const panel = document.getElementById('details'); panel.replaceChildren();
  const head = document.createElement('h2'); head.textContent = name; panel.appendChild(head);
  const info = document.createElement('p');
  info.textContent = `${s.type} · ${s.status} · ${s.visits} visit(s) · ${s.duration}`;
  panel.appendChild(info);
  if (s.error) panel.appendChild(field('Error', `${s.error}: ${s.cause || ''}`, 'error'));
  if (s.input !== null) panel.appendChild(field('Input', s.input));
  if (s.output !== null) panel.appendChild(field('Output', s.output));
  document.querySelectorAll('g.state').forEach(
    g => g.classList.toggle('selected', g.dataset.state === name));
  history.replaceState(null, '', '#state=' + encodeURIComponent(name));
}
document.querySelectorAll('g.state').forEach(g => {
  g.addEventListener('click', () => show(g.dataset.state));
  g.addEventListener('keydown', e => { if (e.key === 'Enter') show(g.dataset.state); });
});
const wanted = decodeURIComponent((location.hash.match(/state=([^&]+)/) || [])[1] || '');
if (wanted) show(wanted);
"""


class Console:
    """Reads for the pages; the state machine's definition is read once."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._definition: dict[str, Any] | None = None
        self._reports: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def sfn(self) -> Any:
        return self.target.client("stepfunctions")

    def definition(self) -> dict[str, Any]:
        if self._definition is None:
            described = self.sfn.describe_state_machine(
                stateMachineArn=self.target.state_machine_arn
            )
            self._definition = json.loads(described["definition"])
        return self._definition

    def executions_page(self) -> str:
        items = ex.list_executions(self.sfn, self.target.state_machine_arn, limit=100)
        now = datetime.now(UTC)
        rows, attrs = [], []
        for item in items:
            name, status = item["name"], item["status"]
            took = ((item.get("stopDate") or now) - item["startDate"]).total_seconds()
            rows.append(
                [
                    f'<a href="/executions/{quote(name)}">{escape(name)}</a>',
                    badge(status),
                    escape(dataset_of(name)),
                    escape(item["startDate"].astimezone().strftime("%Y-%m-%d %H:%M:%S")),
                    seconds(took) + ("" if item.get("stopDate") else " so far"),
                ]
            )
            attrs.append(f'data-execution="{escape(name)}" data-status="{escape(status)}"')
        body = (
            f"<h1>Executions of {escape(self.target.state_machine_arn.rsplit(':', 1)[-1])}</h1>"
            + (
                table(["Execution", "Status", "Data set", "Started", "Duration"], rows, attrs)
                if rows
                else "<p>No executions yet: `mlops upload DIR --name NAME` starts one.</p>"
            )
        )
        running = any(item["status"] == "RUNNING" for item in items)
        return page("Executions", body, refresh=running)

    def execution_page(self, name: str) -> str:
        arn = ex.resolve_execution_arn(self.sfn, self.target.state_machine_arn, name)
        view = ex.describe(self.sfn, arn)
        now = datetime.now(UTC)
        rows = an.timeline(view.steps, view.started, view.stopped or now)
        statuses = {row.name: row.status for row in rows}
        definition = self.definition()
        states = {
            state: self._state_details(state, spec.get("Type", "?"), view, rows)
            for state, spec in definition.get("States", {}).items()
        }
        body = [self._execution_header(view)]
        progress = self._progress(view)
        if progress:
            body.append(f'<p class="progress" id="progress">{escape(progress)}</p>')
        legend = " ".join(
            f'<span><svg width="12" height="12"><rect width="12" height="12" fill="{FILL[k]}"/>'
            f"</svg> {escape(label)}</span>"
            for k, label in (
                ("good", "succeeded"),
                ("warn", "caught"),
                ("bad", "failed"),
                ("busy", "running"),
                ("unvisited", "not visited"),
            )
        )
        body.append(
            '<div class="layout"><div class="graph"><p class="legend">'
            + legend
            + "</p>"
            + graph_svg(definition, statuses)
            + '</div><div class="side" id="details"><p class="muted">Click a state to see its '
            "input, output and error.</p></div></div>"
        )
        body.append(self._timeline_table(rows))
        body.append(registry.run_lineage_section(self.target, view.name))
        payload = json.dumps(states, default=str).replace("</", "<\\/")
        body.append(f'<script type="application/json" id="states-data">{payload}</script>')
        body.append(f"<script>{DETAILS_JS}</script>")
        return page(f"Execution {view.name}", "".join(body), refresh=view.status == "RUNNING")

    def report_page(self, name: str) -> str:
        """The run report, built on demand; kept once the execution has ended."""
        from pipeline_report.build import build_report

        with self._lock:
            if name in self._reports:
                return self._reports[name]
        report = build_report(self.target, name)
        if report.data.view.status != "RUNNING":
            with self._lock:
                self._reports[name] = report.html
        return report.html

    def _execution_header(self, view: ex.ExecutionView) -> str:
        duration = seconds(view.duration_s) if view.duration_s is not None else "running"
        parts = [
            f"<h1>{escape(view.name)} {badge(view.status)}</h1>",
            f'<p class="muted">Data set {escape(dataset_of(view.name))} · started '
            f"{escape(view.started.astimezone().strftime('%Y-%m-%d %H:%M:%S'))} · {duration} · "
            f'<a id="report-link" href="/executions/{quote(view.name)}/report">Run report</a>'
            " (built on demand)</p>",
        ]
        if view.error or view.cause:
            parts.append(
                f'<p class="error" id="execution-error"><b>{escape(view.error or "")}</b>: '
                f"{escape(short_cause(view.cause))}</p>"
            )
        return "".join(parts)

    def _state_details(
        self, name: str, state_type: str, view: ex.ExecutionView, rows: list[an.TimelineRow]
    ) -> dict[str, Any]:
        row = next((r for r in rows if r.name == name), None)
        last = next((s for s in reversed(view.steps) if s.name == name), None)
        return {
            "type": state_type,
            "status": row.status if row else "not visited",
            "visits": row.visits if row else 0,
            "duration": seconds(row.duration_s).replace("&nbsp;", " ") if row else "-",
            "error": row.error if row else None,
            "cause": short_cause(row.cause) if row else None,
            "input": clip(last.input) if last else None,
            "output": clip(last.output) if last else None,
        }

    def _timeline_table(self, rows: list[an.TimelineRow]) -> str:
        cells = [
            [
                escape(r.name),
                badge(r.status),
                f"+{r.started_s:.1f}&nbsp;s",
                seconds(r.duration_s),
                str(r.visits),
                f'<span class="error">{escape(r.error)}: {escape(short_cause(r.cause))}</span>'
                if r.error
                else "",
            ]
            for r in rows
        ]
        return "<h2>States</h2>" + table(
            ["State", "Status", "Start", "Duration", "Visits", "Error"], cells
        )

    def _progress(self, view: ex.ExecutionView) -> str | None:
        if view.status != "RUNNING":
            return None
        from pipeline_report.progress import execution_progress

        return execution_progress(view, self.target.client("sagemaker"), self.target.client("logs"))


# -- HTTP ----------------------------------------------------------------------------------------
def make_handler(console: Console) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mlops-console/1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            raw = url.path
            # Split before decoding: an encoded "/" inside a name stays inside its segment.
            parts = [unquote(part) for part in raw.strip("/").split("/") if part]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                status, html = route(console, parts, query)
            except LookupError as exc:
                status, html = (
                    HTTPStatus.NOT_FOUND,
                    page("Not found", f"<h1>Not found</h1><p>{escape(str(exc))}</p>"),
                )
            except (TargetError, CliError) as exc:  # the target lacks what the page reads
                log.warning("console %s: %s", raw, exc)
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                html = page(
                    "Cannot show this", f"<h1>Cannot show this</h1><p>{escape(str(exc))}</p>"
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("console %s: %s", raw, exc)
                status = HTTPStatus.BAD_GATEWAY
                html = page(
                    "AWS call failed",
                    f"<h1>An AWS call failed</h1><p class='error'>{escape(str(exc))}</p>"
                    "<p>Is the local cloud still running? `mlops status` tells.</p>",
                )
            if isinstance(html, Binary):
                body, content_type = html.body, html.content_type
            else:
                body, content_type = html.encode("utf-8"), "text/html; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("console: " + format, *args)

    return Handler


# The lineage pages: /<prefix>/<name> -> (title, body) (console_registry).
NAMED_PAGES: dict[str, Callable[[Target, str], registry.Page]] = {
    "datasets": registry.dataset_page,
    "tuning-jobs": registry.tuning_job_page,
    "training-jobs": registry.training_job_page,
    "endpoint-configs": registry.endpoint_config_page,
    "endpoints": registry.endpoint_page,
}


@dataclass(frozen=True)
class Binary:
    """A reply that is not a page (a captured image)."""

    content_type: str
    body: bytes


def route(
    console: Console, parts: list[str], query: dict[str, str] | None = None
) -> tuple[HTTPStatus, str | Binary]:
    """The page for a path's decoded segments (and query parameters); LookupError (a 404) for
    any other path."""
    query = query or {}
    if not parts:
        return HTTPStatus.OK, console.executions_page()
    head, rest = parts[0], parts[1:]
    if head == "executions" and len(rest) == 1:
        return HTTPStatus.OK, console.execution_page(rest[0])
    if head == "executions" and len(rest) == 2 and rest[1] == "report":
        return HTTPStatus.OK, console.report_page(rest[0])
    if head == "models" and len(rest) in (0, 2):
        title, body = (
            registry.version_page(console.target, *rest)
            if rest
            else registry.models_page(console.target)
        )
        return HTTPStatus.OK, page(title, body)
    if head == "monitoring" and not rest:
        return HTTPStatus.OK, page(*monitoring.monitoring_page(console.target))
    if head == "monitoring" and len(rest) >= 2 and rest[0] == "images":
        key = "/".join(rest[1:])
        png = monitoring.captured_image(console.target, key, query.get("event", ""))
        return HTTPStatus.OK, Binary("image/png", png)
    if head in NAMED_PAGES and len(rest) == 1:
        title, body = NAMED_PAGES[head](console.target, rest[0])
        return HTTPStatus.OK, page(title, body)
    raise LookupError(
        f"No page at /{'/'.join(parts)}: the console serves /, /executions/<name>, /models, "
        f"/models/<group>/<version>, /monitoring and /{{{','.join(NAMED_PAGES)}}}/<name>"
    )


def start_console(
    target: Target, host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve in a background thread (tests); `server.shutdown(); server.server_close()` stops."""
    server = ThreadingHTTPServer((host, port), make_handler(Console(target)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="mlops-console", daemon=True)
    thread.start()
    return server, thread


def serve(target: Target, host: str, port: int, say: Callable[[str], None]) -> None:
    """Serve until Ctrl-C (the CLI's `mlops console`)."""
    server = ThreadingHTTPServer((host, port), make_handler(Console(target)))
    server.daemon_threads = True
    say(f"Console on http://{host}:{server.server_address[1]}/ (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
