"""A headless Chromium driven over the Chrome DevTools Protocol, for the console's browser test.

Debian's chromium package works here while Playwright's browser download does not; CDP over
one websocket (websocket-client) needs no driver binary that must match the browser version.
Clicks go through Input.dispatchMouseEvent, so they hit what a user would hit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import websocket

from tests.support import waiting

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--window-size=1280,1000",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
)


class CdpError(RuntimeError):
    pass


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def install_chromium() -> str | None:
    """Install Debian's chromium (as root, through apt-get); the path, or None if impossible."""
    if find_chromium():
        return find_chromium()
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            return None
    return find_chromium()


@contextlib.contextmanager
def launch(executable: str, profile_dir: Path, timeout_s: float = 60) -> Iterator[Browser]:
    """Start Chromium with a fresh profile; it is killed (its whole process group) on exit."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    log = (profile_dir / "chromium.log").open("w")
    process = subprocess.Popen(
        [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    browser = None
    try:
        port = _devtools_port(profile_dir, process, timeout_s)
        browser = Browser(_page_websocket(port, timeout_s))
        yield browser
    finally:
        if browser:
            browser.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # renderers and helpers of the group too
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.close()


def _devtools_port(profile_dir: Path, process: subprocess.Popen, timeout_s: float) -> int:
    """Chromium writes the port it chose for --remote-debugging-port=0 into the profile."""
    marker = profile_dir / "DevToolsActivePort"

    def written() -> bool:
        if process.poll() is not None:
            raise CdpError(f"chromium exited with {process.returncode}; see {profile_dir}")
        return marker.is_file() and bool(marker.read_text().strip())

    waiting.wait_for(written, timeout_s, f"chromium to write its port to {marker}")
    return int(marker.read_text().split()[0])


def _page_websocket(port: int, timeout_s: float) -> str:
    pages = waiting.wait_for(
        lambda: [
            target
            for target in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            if target.get("type") == "page"
        ],
        timeout_s,
        f"a page in chromium on port {port}",
    )
    return pages[0]["webSocketDebuggerUrl"]


class Browser:
    """One page: navigate, evaluate, click, screenshot."""

    def __init__(self, websocket_url: str) -> None:
        self.socket = websocket.create_connection(websocket_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.socket.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") != ident:
                continue  # an event
            if "error" in message:
                raise CdpError(f"{method}: {message['error']}")
            return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30) -> Any:

        def value() -> Any:
            try:
                return self.evaluate(expression)
            except CdpError as exc:  # the page is navigating: its context went away
                return exc

        return waiting.wait_for(
            value,
            timeout_s,
            f"{expression} to be true in the page",
            done=lambda v: bool(v) and not isinstance(v, CdpError),
        )

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href.startsWith({json.dumps(url)})")
        self.wait_for("document.readyState === 'complete'")

    def click(self, selector: str) -> None:
        """Scroll the element into view and click its centre with the mouse."""
        box = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left" if kind != "mouseMoved" else "none",
                clickCount=1,
            )

    def text(self, selector: str) -> str:
        return self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
        )

    def screenshot(self, path: Path) -> Path:
        """The whole page, not only the viewport."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path
