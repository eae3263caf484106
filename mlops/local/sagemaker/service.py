"""The local SageMaker HTTP service: one threaded server for the control plane and the runtime.

    service = LocalSageMakerService(SageMakerConfig(state_dir=".mlops/sagemaker")).start()
    boto3.client("sagemaker", endpoint_url=service.url)           # control plane
    boto3.client("sagemaker-runtime", endpoint_url=service.url)   # InvokeEndpoint
    service.shutdown()   # stops the HTTP server and everything the service started

Point unmodified code at it with AWS_ENDPOINT_URL_SAGEMAKER and
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME (both = service.url).
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.models import SageMakerBackend
from mlops.local.sagemaker.processes import kill_all_processes
from mlops.local.sagemaker.responses import SageMakerResponses, WireResponse

logger = logging.getLogger(__name__)

INVOCATIONS_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")


def _make_handler(responses: SageMakerResponses) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mlops-local-sagemaker/1"
        # Headers and body leave in two writes: without TCP_NODELAY a kept-alive
        # connection waits ~40 ms for the delayed ACK (bench/serving.py measured it).
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self._read_body()
            path = self.path.split("?")[0]
            invocation = INVOCATIONS_PATH.match(path)
            if invocation:
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._send(responses.invoke_endpoint(unquote(invocation.group(1)), body, headers))
            else:
                headers = dict(self.headers.items())
                self._send(responses.control_plane(headers.get("X-Amz-Target"), body, headers))

        def do_GET(self) -> None:
            if self.path.split("?")[0] in {"/", "/health"}:
                self._send(
                    WireResponse(200, b'{"status": "ok"}', {"Content-Type": "application/json"})
                )
            else:
                self._send(responses.control_plane(None, b""))

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, response: WireResponse) -> None:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s - %s", self.address_string(), format % args)

    return Handler


class LocalSageMakerService:
    """The HTTP front of one SageMakerBackend, bound to 127.0.0.1 (port 0: a free port)."""

    def __init__(self, config: SageMakerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.backend = SageMakerBackend(config)
        self.responses = SageMakerResponses(self.backend)
        self._server = ThreadingHTTPServer((host, port), _make_handler(self.responses))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._stopped = False
        atexit.register(_shutdown_if_alive, weakref.ref(self))

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalSageMakerService:
        self._thread.start()
        logger.info(
            "local SageMaker listening on %s (state in %s)", self.url, self.config.state_dir
        )
        return self

    def shutdown(self) -> None:
        """Stop serving, then stop every job, tuning worker and model server started."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self.backend.shutdown()
        if self._thread.is_alive():
            self._thread.join(5)

    stop = shutdown

    def __enter__(self) -> LocalSageMakerService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _shutdown_if_alive(reference: weakref.ref[LocalSageMakerService]) -> None:
    service = reference()
    if service is not None:
        try:
            service.shutdown()
        finally:
            kill_all_processes()
