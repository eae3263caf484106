"""Start the local model server (mlops/local/model_server.py) on a model directory.

The inference contract tests and the memory and serving benchmarks each serve a trained model
the way the local SageMaker's endpoints do; one starter so they start it the same way: on
127.0.0.1 and a free port (the server writes the port once the model is loaded), in its own
process group, stopped with everything it started when the block ends, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from mlops.local.process import stop_cloud_process
from tests.support.waiting import wait_for

MODEL_SERVER = Path(__file__).resolve().parents[2] / "mlops" / "local" / "model_server.py"


class ModelServerFailed(RuntimeError):
    """The server exited or never wrote its port; the message ends with its log's tail."""


def model_server_command(model_dir: Path, port_file: Path, python: str) -> list[str]:
    """The command line: the model directory and its code/inference.py, as the endpoint runs."""
    return [
        python,
        str(MODEL_SERVER),
        "--model-dir",
        str(model_dir),
        "--inference",
        str(model_dir / "code" / "inference.py"),
        "--port-file",
        str(port_file),
    ]


@contextlib.contextmanager
def model_server(
    model_dir: Path,
    work: Path,
    *,
    name: str = "server",
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 120,
) -> Iterator[tuple[subprocess.Popen, int]]:
    """Yield (process, port) once the model is loaded; logs go to `work/<name>.log`.

    `env` replaces the environment (default: this process's); `cwd` defaults to `work`.
    """
    port_file = work / f"{name}.port"
    log_path = work / f"{name}.log"
    port_file.unlink(missing_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            model_server_command(model_dir, port_file, python),
            cwd=cwd or work,
            env=dict(os.environ if env is None else env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        started = wait_for(
            lambda: port_file.exists() or process.poll() is not None,
            timeout_s,
            f"{name} to load {model_dir} and write {port_file}",
            interval=0.05,
        )
        if not (started and port_file.exists()):
            tail = "\n".join(log_path.read_text().splitlines()[-30:])
            raise ModelServerFailed(f"model server {name} exited with {process.poll()}:\n{tail}")
        yield process, int(port_file.read_text())
    finally:
        stop_cloud_process(process, timeout_s=5)  # SIGTERM, then SIGKILL to its group
