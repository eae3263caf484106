"""The local SageMaker HTTP service: one threaded server for the control plane and the runtime.

It runs on werkzeug's threaded WSGI server (mlops/local/wsgi_server.py: chunked bodies, a bad
Content-Length answered 400, a deep listen backlog, JSON errors, a body-size guard).

    service = LocalSageMakerService(SageMakerConfig(state_dir=".mlops/sagemaker")).start()
    boto3.client("sagemaker", endpoint_url=service.url)           # control plane
    boto3.client("sagemaker-runtime", endpoint_url=service.url)   # InvokeEndpoint
    service.shutdown()   # stops the HTTP server and everything the service started

Point unmodified code at it with AWS_ENDPOINT_URL_SAGEMAKER and
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME (both = service.url).
"""

from __future__ import annotations

import atexit
import http
import json
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.models import SageMakerBackend
from mlops.local.sagemaker.processes import kill_all_processes
from mlops.local.sagemaker.responses import SageMakerResponses, WireResponse
from mlops.local.wsgi_server import (
    BadRequestBody,
    BodyTooLarge,
    LocalWsgiServer,
    declared_length,
    discard_body,
    read_body,
    start_wsgi_server,
    stop_wsgi_server,
)

logger = logging.getLogger(__name__)

INVOCATIONS_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")


MAX_BODY_BYTES = 12 * 1024 * 1024  # a memory guard above InvokeEndpoint's 6 MB (the model's)


def _make_app(responses: SageMakerResponses) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: InvokeEndpoint by path, the control plane by X-Amz-Target."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            response = _answer(responses, environ)
        except Exception as error:  # never a traceback to the client; the log has it
            logger.exception("local SageMaker failed on %s", environ.get("PATH_INFO"))
            response = _error(500, "InternalFailure", f"{type(error).__name__}: {error}")
        headers = [*response.headers.items(), ("Content-Length", str(len(response.body)))]
        start_response(f"{response.status} {_phrase(response.status)}", headers)
        return [response.body]

    return app


def _answer(responses: SageMakerResponses, environ: dict[str, Any]) -> WireResponse:
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO") or "/"
    if method == "GET" and path in {"/", "/health"}:
        return WireResponse(200, b'{"status": "ok"}', {"Content-Type": "application/json"})
    try:
        length = declared_length(environ)
        if length is not None and length > MAX_BODY_BYTES:
            discard_body(environ, length)
            raise BodyTooLarge(f"the body has {length} bytes")
        body = read_body(environ, length, MAX_BODY_BYTES) if method == "POST" else b""
    except BodyTooLarge:
        discard_body(environ, None)
        return _error(413, "ValidationError", f"The request body is over {MAX_BODY_BYTES} bytes")
    except BadRequestBody as error:
        return _error(400, "ValidationError", str(error))
    raw_path = (environ.get("REQUEST_URI") or path).split("?")[0]
    invocation = INVOCATIONS_PATH.match(raw_path) if method == "POST" else None
    headers = {k.lower(): v for k, v in environ.get("mlops.raw_headers") or []}
    if invocation:
        return responses.invoke_endpoint(unquote(invocation.group(1)), body, headers)
    return responses.control_plane(environ.get("HTTP_X_AMZ_TARGET"), body, headers)


def _error(status: int, code: str, message: str) -> WireResponse:
    body = json.dumps({"__type": code, "message": message}).encode()
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": code}
    return WireResponse(status, body, headers)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class LocalSageMakerService:
    """The HTTP front of one SageMakerBackend, bound to 127.0.0.1 (port 0: a free port)."""

    def __init__(self, config: SageMakerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.backend = SageMakerBackend(config)
        self.responses = SageMakerResponses(self.backend)
        self._host, self._port = host, port
        self._server: LocalWsgiServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        atexit.register(_shutdown_if_alive, weakref.ref(self))

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the service first"
        return f"http://{self._host}:{self._server.port}"

    def start(self) -> LocalSageMakerService:
        self._server, self._thread = start_wsgi_server(
            _make_app(self.responses), self._host, self._port, name="local-sagemaker"
        )
        logger.info(
            "local SageMaker listening on %s (state in %s)", self.url, self.config.state_dir
        )
        return self

    def shutdown(self) -> None:
        """Stop serving, then stop every job, tuning worker and model server started."""
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            stop_wsgi_server(self._server, self._thread)
        self.backend.shutdown()

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
