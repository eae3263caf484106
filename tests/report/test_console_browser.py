"""The executions console in a real headless Chromium against a local cloud."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.console import start_console

from . import cdp
from .conftest import Runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "console.png"


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = cdp.install_chromium()
    if executable is None:
        pytest.skip(
            "Debian's chromium is not installed and could not be installed here "
            "(needs root and apt-get with a reachable package mirror): apt-get install chromium"
        )
    return executable


@pytest.fixture
def console_url(runs: Runs) -> Iterator[str]:
    server, thread = start_console(runs.target, port=0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[cdp.Browser]:
    with cdp.launch(chromium, tmp_path / "chromium-profile") as browser:
        yield browser


def test_console_lists_runs_and_shows_the_failed_runs_error(runs, console_url, browser, tmp_path):
    browser.navigate(console_url + "/")
    statuses = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('tr[data-execution]')]"
        ".map(r => [r.dataset.execution, r.dataset.status]))"
    )
    assert statuses[runs.succeeded.name] == "SUCCEEDED"
    assert statuses[runs.failed.name] == "FAILED"
    assert "FAILED" in browser.text(f'tr[data-execution="{runs.failed.name}"]')
    browser.screenshot(tmp_path / "executions.png")

    browser.click(f'tr[data-execution="{runs.failed.name}"] a')
    browser.wait_for("location.pathname.startsWith('/executions/')")
    browser.wait_for("document.readyState === 'complete' && !!document.querySelector('svg')")
    assert "DatasetInvalid" in browser.text("#execution-error")
    assert "valid" in browser.text("#execution-error")

    browser.click('g.state[data-state="ValidateDataset"]')
    details = browser.wait_for(
        "(document.querySelector('#details').innerText.includes('DatasetInvalid'))"
        " && document.querySelector('#details').innerText"
    )
    assert "ValidateDataset" in details and "Input" in details
    colours = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('g.state')]"
        ".map(g => [g.dataset.state, g.dataset.status]))"
    )
    assert colours["PipelineFailed"] == "FAILED"
    assert colours["ValidateDataset"] == "CAUGHT"
    assert colours["StartTuning"] == "NOT_VISITED"

    shot = browser.screenshot(tmp_path / "console-failed.png")
    assert shot.stat().st_size > 10_000
    if os.environ.get("MLOPS_UPDATE_SCREENSHOT"):  # refresh the README's picture on request only
        shutil.copyfile(shot, DOCS_SCREENSHOT)


def test_console_links_to_the_report_built_on_demand(runs, console_url, browser):
    browser.navigate(f"{console_url}/executions/{runs.succeeded.name}")
    assert (
        browser.evaluate(
            "document.querySelector('g.state[data-state=\"SmokeTest\"]').dataset.status"
        )
        == "SUCCEEDED"
    )

    browser.click("#report-link")
    browser.wait_for("location.pathname.endsWith('/report')", timeout_s=120)
    browser.wait_for("!!document.querySelector('#report-data')", timeout_s=120)
    assert browser.evaluate("document.querySelectorAll('img[data-plot]').length") >= 5
    assert runs.succeeded.name in browser.text("h1")
