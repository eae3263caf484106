"""FastFile input mode on the local SageMaker: channels read from S3 as the script reads them.

SageMaker's FastFile mode shows a channel's S3 prefix as a POSIX file tree (a FUSE mount):
the job lists the prefix when it starts, and each object's bytes are streamed from S3 when the
script reads it, so training starts without copying the data set first. This machine has no
FUSE library, so the emulation has two halves:

- ``lay_out_channel`` lists the prefix (ListObjectsV2, the job's role) and writes one sparse
  placeholder per object: the object's relative path and size, no bytes (st_blocks is 0);
- ``ChannelServer`` (127.0.0.1, one per job) answers ``GET /<channel>/<relative path>`` with
  the object's bytes, read with the job's role. The training processes get the
  ``fastfile_hook`` folder first on PYTHONPATH: its ``sitecustomize`` fetches a placeholder
  from this server the first time Python opens it, and renames the whole object over it.

What is lazy: every object's bytes, per host (each host fetches what it opens, as each
instance streams from S3). What is not: the listing, and Python-level ``open`` is the only
trigger (docs/training-at-scale.md).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from mlops.local.sagemaker.aws import AwsClients, list_prefix

logger = logging.getLogger(__name__)

HOOK_DIR = Path(__file__).resolve().parent / "fastfile_hook"
# Read by fastfile_hook/sitecustomize.py: {"<channel folder>": "<server URL>/<channel>"}.
ROOTS_ENV = "MLOPS_LOCAL_FASTFILE_CHANNELS"
CHUNK = 1 << 20


def effective_input_mode(channel: dict[str, Any], request: dict[str, Any]) -> str:
    """The channel's InputMode, else the job's TrainingInputMode (SageMaker's order)."""
    return (
        channel.get("InputMode")
        or request.get("AlgorithmSpecification", {}).get("TrainingInputMode")
        or "File"
    )


def is_placeholder(path: Path) -> bool:
    """A FastFile file whose bytes were never fetched: a size, and no blocks on disk."""
    status = path.stat()
    return status.st_size > 0 and status.st_blocks == 0


@dataclass
class ChannelServer:
    """Serves the objects of a job's FastFile channels to its processes, on 127.0.0.1."""

    data: AwsClients
    # channel -> relative path -> (bucket, key)
    objects: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    served: int = 0
    served_bytes: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the channel server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ChannelServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("fastfile: " + format, *args)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="fastfile-channels", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def lay_out_channel(self, name: str, uri: str, target: Path) -> int:
        """Placeholders for every object under ``uri`` in ``target``; returns the count."""
        listed = list_prefix(self.data, uri, target)
        self.objects[name] = {}
        for item in listed:
            item.destination.parent.mkdir(parents=True, exist_ok=True)
            with open(item.destination, "wb") as placeholder:
                placeholder.truncate(item.size)  # sparse: the size, no bytes
            relative = item.destination.relative_to(target).as_posix()
            self.objects[name][relative] = (item.bucket, item.key)
        return len(listed)

    def environment(self, data_dir: Path) -> dict[str, str]:
        """PYTHONPATH and the channel map for one host whose channels are under data_dir."""
        roots = {str(data_dir / name): f"{self.url}/{name}" for name in self.objects}
        return {"PYTHONPATH": str(HOOK_DIR), ROOTS_ENV: json.dumps(roots)}

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        channel, _, relative = unquote(request.path.lstrip("/")).partition("/")
        found = self.objects.get(channel, {}).get(relative)
        if found is None:
            request.send_error(404, f"no object {relative!r} in FastFile channel {channel!r}")
            return
        try:
            body = self.data.client("s3").get_object(Bucket=found[0], Key=found[1])
        except (ClientError, BotoCoreError) as error:
            request.send_error(502, f"GetObject s3://{found[0]}/{found[1]}: {error}")
            return
        request.send_response(200)
        request.send_header("Content-Length", str(body["ContentLength"]))
        request.end_headers()
        shutil.copyfileobj(body["Body"], request.wfile, CHUNK)
        with self._lock:
            self.served += 1
            self.served_bytes += int(body["ContentLength"])


def fetched_files(folder: Path) -> tuple[int, int]:
    """(files fetched, placeholders left) under a FastFile channel folder."""
    fetched = left = 0
    for path in folder.rglob("*"):
        if path.is_file():
            if is_placeholder(path):
                left += 1
            else:
                fetched += 1
    return fetched, left
