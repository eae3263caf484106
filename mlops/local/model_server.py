"""A model server speaking SageMaker's inference contract around an ``inference.py``.

    python mlops/local/model_server.py --model-dir DIR --inference FILE --port-file FILE

It loads the model once (``model_fn``), then serves ``GET /ping`` (200 once the model is
loaded) and ``POST /invocations`` (``input_fn`` -> ``predict_fn`` -> ``output_fn``), the
contract of SageMaker's PyTorch serving containers. It binds 127.0.0.1 on a free port and
writes that port to ``--port-file`` only when it is ready, so the caller never races a
half-started server.

Errors: ``inference.InputError(status_code, message)`` becomes that status with a JSON body
``{"error": message}``; any other exception becomes 500 with a short message. A traceback is
logged (to stderr, which the local SageMaker ships to CloudWatch Logs) and never sent back.

This file uses the standard library only (plus whatever inference.py imports), because it runs
as its own process, started by path, in the training environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger("model_server")

DEFAULT_ACCEPT = "application/json"
MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker real-time endpoints accept at most 6 MB


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="unpacked model.tar.gz")
    parser.add_argument("--inference", type=Path, required=True, help="the inference.py to use")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port")
    return parser


def load_inference_module(path: Path) -> ModuleType:
    """Import inference.py by path, with its folder on sys.path (for its own helper modules)."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("inference", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["inference"] = module
    spec.loader.exec_module(module)
    return module


class InferenceHandler:
    """The four SageMaker hooks of one inference module around one loaded model."""

    def __init__(self, module: ModuleType, model_dir: Path) -> None:
        self.module = module
        self.input_error = getattr(module, "InputError", None)
        if not hasattr(module, "model_fn"):
            raise AttributeError(f"{module.__file__} defines no model_fn(model_dir)")
        self.model = module.model_fn(str(model_dir))

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        data = self._call("input_fn", body, content_type)
        prediction = self._call("predict_fn", data, self.model)
        result = self._call("output_fn", prediction, accept)
        if isinstance(result, tuple):  # output_fn may answer (body, content_type)
            result, accept = result
        if isinstance(result, str):
            result = result.encode("utf-8")
        return bytes(result), accept

    def _call(self, name: str, *args: Any) -> Any:
        function = getattr(self.module, name, None)
        if function is None:
            return _DEFAULTS[name](*args)
        return function(*args)

    def client_error(self, error: Exception) -> tuple[int, str] | None:
        """(status, message) when ``error`` is the module's InputError (or looks like one)."""
        is_input_error = self.input_error is not None and isinstance(error, self.input_error)
        status = getattr(error, "status_code", None)
        if (is_input_error or type(error).__name__ == "InputError") and isinstance(status, int):
            message = getattr(error, "message", None) or str(error)
            return status, str(message)
        return None


def _default_input(body: bytes, content_type: str) -> Any:
    if content_type.split(";")[0].strip() == "application/json":
        return json.loads(body)
    return body


def _default_predict(data: Any, model: Any) -> Any:
    return model(data)


def _default_output(prediction: Any, accept: str) -> tuple[bytes, str]:
    return json.dumps(prediction).encode(), "application/json"


_DEFAULTS = {
    "input_fn": _default_input,
    "predict_fn": _default_predict,
    "output_fn": _default_output,
}


def make_request_handler(handler: InferenceHandler) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mlops-model-server/1"
        # Headers and body leave in two writes: without TCP_NODELAY a kept-alive
        # connection waits ~40 ms for the delayed ACK (bench/serving.py measured it).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/ping":
                self._send(HTTPStatus.OK, b"", "text/plain")
            else:
                self._send_error(HTTPStatus.NOT_FOUND, f"no route GET {self.path}")

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            if path != "/invocations":
                self._drain_body()
                self._send_error(HTTPStatus.NOT_FOUND, f"no route POST {self.path}")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._drain_body()
                self._send_error(413, f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
                return
            body = self.rfile.read(length)
            content_type = self.headers.get("Content-Type") or "application/octet-stream"
            accept = self.headers.get("Accept") or DEFAULT_ACCEPT
            if accept in {"*/*", ""}:
                accept = DEFAULT_ACCEPT
            self._invoke(body, content_type, accept)

        def _invoke(self, body: bytes, content_type: str, accept: str) -> None:
            started = time.perf_counter()
            try:
                answer, answer_type = handler.invoke(body, content_type, accept)
            except Exception as error:
                client_error = handler.client_error(error)
                if client_error is not None:
                    self._send_error(*client_error)
                    return
                logger.error("invocation failed:\n%s", traceback.format_exc())
                self._send_error(
                    500, f"internal error in the model server ({type(error).__name__})"
                )
                return
            self._send(HTTPStatus.OK, answer, answer_type)
            logger.debug("invocation took %.1f ms", (time.perf_counter() - started) * 1000)

        def _drain_body(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 16))
                if not chunk:
                    break
                length -= len(chunk)

        def _send_error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s - %s", self.address_string(), format % args)

    return Handler


def write_port_file(path: Path, port: int) -> None:
    """Atomically, so a reader never sees a half-written number."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(str(port))
    os.replace(temporary, path)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=os.environ.get("MODEL_SERVER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logger.info("loading %s with model dir %s", args.inference, args.model_dir)
    handler = InferenceHandler(load_inference_module(args.inference), args.model_dir)
    server = ThreadingHTTPServer((args.host, args.port), make_request_handler(handler))
    server.daemon_threads = True

    def shut_down(signum: int, frame: Any) -> None:
        logger.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    port = server.server_address[1]
    write_port_file(args.port_file, port)
    logger.info("serving on http://%s:%d (GET /ping, POST /invocations)", args.host, port)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
