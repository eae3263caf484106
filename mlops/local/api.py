"""A local API Gateway (REST API, Lambda proxy integration) in front of the local Lambdas.

`sam local start-api` does this with Docker; this one needs none. Each HTTP request becomes the
proxy event that API Gateway would send (binary media types base64-encoded, isBase64Encoded set),
the function is invoked through the local Lambda API (so the same runtime seam runs it), and the
function's proxy response becomes the HTTP response. API Gateway's own answers are copied too:
403 "Missing Authentication Token" for an unknown route, 403 "Forbidden" without a valid API key,
413 for a payload over 10 MB, 502 "Internal server error" when the function fails.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mlops.local.deploy import ApiRoute

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload limit


@dataclass
class ApiConfig:
    routes: list[ApiRoute]
    api_key: str
    binary_media_types: list[str]
    api_id: str = "local"
    stage: str = "Prod"


def _route_pattern(path: str) -> re.Pattern[str]:
    """`/items/{id}` -> a regex with named groups; `{proxy+}` matches the rest of the path."""
    pattern = re.sub(r"\{(\w+)\+\}", r"(?P<\1>.+)", path)
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return re.compile(f"^{pattern}/?$")


def is_binary(content_type: str, binary_media_types: list[str]) -> bool:
    mime = content_type.split(";")[0].strip().lower()
    for media_type in binary_media_types:
        wanted = media_type.replace("~1", "/").lower()
        if wanted in ("*/*", mime) or (wanted.endswith("/*") and mime.startswith(wanted[:-1])):
            return True
    return False


def proxy_event(
    route: ApiRoute,
    path: str,
    path_params: dict[str, str],
    method: str,
    headers: dict[str, str],
    query: str,
    body: bytes,
    config: ApiConfig,
) -> dict[str, Any]:
    """The event API Gateway's Lambda proxy integration sends (payload format 1.0)."""
    multi_query = parse_qs(query, keep_blank_values=True)
    binary = is_binary(headers.get("Content-Type", ""), config.binary_media_types)
    if not body:
        event_body, encoded = None, False
    elif binary:
        event_body, encoded = base64.b64encode(body).decode(), True
    else:
        event_body, encoded = body.decode("utf-8", "replace"), False
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.path,
            "httpMethod": method,
            "path": f"/{config.stage}{path}",
            "stage": config.stage,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "apiId": config.api_id,
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "127.0.0.1", "apiKey": headers.get("x-api-key")},
        },
        "body": event_body,
        "isBase64Encoded": encoded,
    }


class LocalApiServer:
    """Threaded HTTP server on 127.0.0.1; `invoke(function_name, event) -> (payload, failed)`."""

    def __init__(
        self,
        config: ApiConfig,
        invoke: Callable[[str, dict[str, Any]], tuple[dict[str, Any], bool]],
        port: int = 0,
    ) -> None:
        self.config = config
        self.invoke = invoke
        self._routes = [(route, _route_pattern(route.path)) for route in config.routes]
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{self.config.stage}"

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="api")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def match(self, method: str, path: str) -> tuple[ApiRoute, dict[str, str]] | None:
        for route, pattern in self._routes:
            found = pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, found.groupdict()
        return None

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One request through API Gateway's checks and the proxy integration."""
        parts = urlsplit(raw_path)
        path = parts.path
        stage = self.config.stage
        if path == f"/{stage}" or path.startswith(f"/{stage}/"):
            path = path[len(stage) + 1 :] or "/"
        matched = self.match(method, path)
        if matched is None:
            return _gateway_error(403, "Missing Authentication Token")
        route, path_params = matched
        if route.api_key_required and headers.get("x-api-key") != self.config.api_key:
            return _gateway_error(403, "Forbidden")
        if len(body) > MAX_PAYLOAD_BYTES:
            return _gateway_error(413, "Request Too Long")
        event = proxy_event(
            route, path, path_params, method, headers, parts.query, body, self.config
        )
        payload, failed = self.invoke(route.function_name, event)
        if failed or not isinstance(payload, dict) or "statusCode" not in payload:
            log.warning("integration failure on %s %s: %s", method, path, str(payload)[:300])
            return _gateway_error(502, "Internal server error")
        return _proxy_response(payload)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: without TCP_NODELAY a kept-alive
            # connection waits ~40 ms for the delayed ACK (bench/serving.py measured it).
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                headers.setdefault("x-api-key", self.headers.get("x-api-key") or "")
                if not headers["x-api-key"]:
                    del headers["x-api-key"]
                status, out_headers, out_body = server.handle(
                    self.command, self.path, headers, body
                )
                self.send_response(status)
                for key, value in out_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(out_body)))
                self.end_headers()
                self.wfile.write(out_body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("api: " + format, *args)

        return Handler


def _gateway_error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": "ApiGatewayError"}
    return status, headers, json.dumps({"message": message}).encode()


def _proxy_response(payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    headers = {k: str(v) for k, v in (payload.get("headers") or {}).items()}
    for key, values in (payload.get("multiValueHeaders") or {}).items():
        headers[key] = ",".join(str(v) for v in values)
    body = payload.get("body") or ""
    raw = base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
    return int(payload["statusCode"]), headers, raw
