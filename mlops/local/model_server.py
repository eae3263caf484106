"""The local endpoint's model server: SageMaker's real PyTorch handler service, served by waitress.

    python mlops/local/model_server.py --model-dir DIR --inference FILE --port-file FILE

In the SageMaker PyTorch inference image, TorchServe (Java) receives the HTTP request and hands
it to a Python worker, which calls ``HandlerService.handle(data, context)`` of
``sagemaker-pytorch-inference`` (2.0.25 in the PyTorch 2.6 image; it carries its own copy of
``sagemaker_inference``, whose ``Transformer`` imports the user's inference.py and runs
``model_fn`` / ``transform_fn`` or ``input_fn`` -> ``predict_fn`` -> ``output_fn``).
TorchServe needs Java and is archived, so here waitress (a pure-Python WSGI server) takes its
place and this file does what TorchServe's worker does: one ``Context`` whose request
processor is replaced for each request, the status code, reason phrase and content type the
handler set on it, and the handler's list of answers turned into the response body. Everything
between the request and those bytes is the real toolkit: an exception in inference.py becomes
what the toolkit makes of it (500, or the status of its own error type, with a body of message
plus traceback), on AWS and here alike.

    GET /ping          200 {"status": "Healthy"} once the model is loaded (as TorchServe)
    POST /invocations  the handler's answer; server-side failures as TorchServe's JSON errors

Why waitress (not werkzeug's development server, which moto brings): it is a production
server with no dependencies, decodes chunked bodies, answers a bad Content-Length with a 400,
enforces a body-size limit before buffering the body, and takes a listen backlog and a fixed
thread pool as settings. One request at a time reaches the handler (a TorchServe worker with
batch size 1 does the same); the other threads queue, and /ping never waits for them.

The port is written to ``--port-file`` only once the model is loaded and the socket bound, so
the caller never races a half-started server. Logs (the toolkit's tracebacks too) go to stderr,
which the local SageMaker ships to CloudWatch Logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import waitress

logger = logging.getLogger("model_server")

# TorchServe's default max_request_size (the image keeps it); SageMaker refuses > 6 MB before.
MAX_BODY_BYTES = 6_553_500
LISTEN_BACKLOG = 1024  # a burst of 32+ concurrent clients must not see connection resets
THREADS = 4

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="unpacked model.tar.gz")
    parser.add_argument("--inference", type=Path, required=True, help="the inference.py to use")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port")
    parser.add_argument(
        "--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="largest request body"
    )
    return parser


# --- what TorchServe's Python worker gives the handler (ts.context) ----------------------------


class RequestProcessor:
    """One request's headers in, its status, reason phrase and response headers out."""

    def __init__(self, request_header: dict[str, str]) -> None:
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}
        self._request_header = request_header

    def get_request_property(self, key: str) -> str | None:
        return self._request_header.get(key)

    def get_request_properties(self) -> dict[str, str]:
        return self._request_header

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header


class Context:
    """TorchServe's worker context: one per model, its request processors set per request.

    The toolkit keeps the context it saw at initialisation and passes that one to handler
    functions that take a context, so (as in TorchServe) it must be the same object for every
    request, with ``request_processor`` replaced each time.
    """

    def __init__(self, model_name: str, model_dir: str) -> None:
        self.model_name = model_name
        self.manifest = None
        self._system_properties = {
            "model_dir": model_dir,
            "gpu_id": None,
            "batch_size": 1,
            "server_name": "MMS",
            "server_version": "local",
            "limit_max_image_pixels": True,
        }
        self.request_ids: dict[int, str] | None = None
        self.request_processor: list[RequestProcessor] | None = None
        self.metrics = None

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self.request_processor[idx]
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        if self.request_processor is not None and self.request_processor[idx] is not None:
            self.request_processor[idx].report_status(code, reason_phrase=phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_response_headers()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.request_processor[idx].add_response_property(key, value)


# --- the worker: the real handler service around one model ------------------------------------


class Answer:
    """Status, headers and body of one HTTP response."""

    def __init__(self, status: int, body: bytes, content_type: str, phrase: str | None = None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.phrase = phrase

    @classmethod
    def error(cls, status: int, kind: str, message: str) -> Answer:
        """TorchServe's own error body (ErrorResponse: code, type, message)."""
        body = json.dumps({"code": status, "type": kind, "message": message}).encode()
        return cls(status, body, "application/json")


class Worker:
    """``HandlerService.initialize`` once, then ``handle`` per request, one at a time."""

    def __init__(self, model_dir: Path, inference: Path) -> None:
        # The image puts the model's code/ folder on PYTHONPATH and names the module with
        # SAGEMAKER_PROGRAM; the toolkit imports it by that name.
        sys.path.insert(0, str(inference.parent))
        os.environ["SAGEMAKER_PROGRAM"] = inference.name
        from sagemaker_pytorch_serving_container.handler_service import HandlerService

        self.context = Context("model", str(model_dir))
        self.service = HandlerService()
        self.service.initialize(self.context)
        self._lock = threading.Lock()
        self._next_id = 0

    def invoke(self, body: bytes, headers: dict[str, str]) -> Answer:
        with self._lock:
            self._next_id += 1
            self.context.request_ids = {0: f"request-{self._next_id}"}
            self.context.request_processor = [RequestProcessor(headers)]
            try:
                answers = self.service.handle([{"body": bytearray(body)}], self.context)
            except MemoryError:
                logger.exception("out of memory while predicting")
                return Answer.error(507, "InternalServerException", "Out of resources")
            except Exception:
                logger.exception("invoking the handler service failed")
                return Answer.error(503, "ServiceUnavailableException", "Prediction failed")
            return self._answer(answers)

    def _answer(self, answers: Any) -> Answer:
        """What TorchServe makes of the handler's return value (create_predict_response)."""
        if not isinstance(answers, list) or len(answers) != 1:
            logger.warning("handler returned %s, not a list of one answer", type(answers))
            return Answer.error(503, "ServiceUnavailableException", "Invalid model predict output")
        status, phrase = self.context.get_response_status(0)
        content_type = self.context.get_response_content_type(0) or ""
        value = answers[0]
        if isinstance(value, (bytes, bytearray)):
            body = bytes(value)
        elif isinstance(value, str):
            body = value.encode("utf-8")
        else:
            try:
                body = json.dumps(value, indent=2).encode("utf-8")
            except TypeError:
                logger.warning("unable to serialize model output", exc_info=True)
                return Answer.error(
                    503, "ServiceUnavailableException", "Unsupported model output data type."
                )
        return Answer(status or 200, body, content_type, phrase)


# --- HTTP -------------------------------------------------------------------------------------


def request_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers by their usual names, as TorchServe hands them to the worker."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").title()] = value
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    return headers


def make_app(worker: Worker, max_body_bytes: int) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/ping" and method == "GET":
            answer = Answer(200, b'{"status": "Healthy"}', "application/json")
        elif path == "/invocations" and method == "POST":
            answer = invocation(worker, environ, max_body_bytes)
        elif path in ("/ping", "/invocations"):
            answer = Answer.error(405, "MethodNotAllowedException", f"{method} {path}")
        else:
            answer = Answer.error(404, "ResourceNotFoundException", f"no route {method} {path}")
        phrase = answer.phrase or _phrase(answer.status)
        headers = [("Content-Length", str(len(answer.body)))]
        if answer.content_type:
            headers.append(("Content-Type", answer.content_type))
        start_response(f"{answer.status} {phrase}", headers)
        return [answer.body]

    return app


def invocation(worker: Worker, environ: dict[str, Any], max_body_bytes: int) -> Answer:
    """Read the body (refusing one over the limit unread) and hand it to the worker."""
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > max_body_bytes:
        return too_large(int(declared), max_body_bytes)
    # waitress has already de-chunked and buffered the body, up to its own limit
    body = environ["wsgi.input"].read(max_body_bytes + 1)
    if len(body) > max_body_bytes:
        return too_large(len(body), max_body_bytes)
    return worker.invoke(body, request_headers(environ))


def too_large(size: int, limit: int) -> Answer:
    return Answer.error(
        413, "RequestEntityTooLarge", f"request body of {size} bytes exceeds {limit} bytes"
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def write_port_file(path: Path, port: int) -> None:
    """Atomically, so a reader never sees a half-written number."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(str(port))
    os.replace(temporary, path)


def make_server(app: Callable[..., Iterable[bytes]], host: str, port: int, max_body: int) -> Any:
    return waitress.create_server(
        app,
        host=host,
        port=port,
        threads=THREADS,
        backlog=LISTEN_BACKLOG,
        # one byte over ours, so the app answers an oversized body with a JSON 413 itself
        max_request_body_size=max_body + 1,
        channel_timeout=120,
        ident="mlops-model-server",
        clear_untrusted_proxy_headers=True,
    )


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=os.environ.get("MODEL_SERVER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" noise
    logger.info("loading %s with model dir %s", args.inference, args.model_dir)
    worker = Worker(args.model_dir.resolve(), args.inference.resolve())
    server = make_server(
        make_app(worker, args.max_body_bytes), args.host, args.port, args.max_body_bytes
    )

    def shut_down(signum: int, frame: Any) -> None:
        logger.info("signal %d: shutting down", signum)
        raise SystemExit(0)  # waitress's run() closes its sockets on SystemExit

    signal.signal(signal.SIGTERM, shut_down)
    port = int(server.effective_port)
    write_port_file(args.port_file, port)
    logger.info("serving on http://%s:%d (GET /ping, POST /invocations)", args.host, port)
    server.run()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
