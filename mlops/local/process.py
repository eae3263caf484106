"""Starting and stopping the local cloud as a background process (CLI, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlops.local.cloud import CloudInfo

START_TIMEOUT_S = 180


class CloudStartError(RuntimeError):
    pass


def start_cloud_process(
    root: Path,
    template: Path | None = None,
    parameters: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
    exit_with_caller: bool = True,
) -> tuple[subprocess.Popen, CloudInfo]:
    """Start `python -m mlops.local.server` in its own process group; return once it is READY.

    With `exit_with_caller` (tests, the demo) the cloud stops by itself when this process ends,
    even if it is killed before it can stop the cloud; `mlops up` turns that off.
    """
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlops.local.server", "--root", str(root)]
    if template is not None:
        command += ["--template", str(template)]
    for key, value in (parameters or {}).items():
        command += ["--parameter", f"{key}={value}"]
    if exit_with_caller:
        command += ["--exit-with-pid", str(os.getpid())]
    with (root / "server.out").open("w") as errors:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
            env={**os.environ, **(extra_env or {})},
        )
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("READY "):
        stop_cloud_process(process)
        raise CloudStartError(
            f"The local cloud did not start: {line.strip() or f'no answer in {timeout_s:.0f} s'}; "
            f"see {root / 'cloud.log'} and {root / 'server.out'}"
        )
    return process, CloudInfo(**json.loads(line[len("READY ") :]))


def stop_cloud_process(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM (the server stops its jobs, servers and workers), then kill the group if needed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    _kill_group(process.pid)
    if process.poll() is None:
        process.wait(timeout=10)
    if process.stdout:
        process.stdout.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    time.sleep(0.05)
