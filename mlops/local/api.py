"""A local API Gateway (REST API, Lambda proxy integration) in front of the local Lambdas.

`sam local start-api` does this with Docker; this one needs none. Each HTTP request becomes the
proxy event that API Gateway would send (binary media types base64-encoded, isBase64Encoded set),
the function is invoked through the local Lambda API (so the same runtime seam runs it, with
Lambda's 6 MB payload limit), and the function's proxy response becomes the HTTP response.

API Gateway's own answers are copied, in API Gateway's order and JSON shape (docs/limits.md has
the sources): 403 "Missing Authentication Token" for an unknown route or method, 403 "Forbidden"
without a valid API key (decided from the headers, before any of the body is read), 429 "Too
Many Requests" when the key's usage plan throttle (a token bucket: RateLimit per second, up to
BurstLimit) is empty, also before the body is read, 413 "Request Too Long" for a body over
10 MB or an event Lambda refuses as over 6 MB, 502 "Internal server error" when the function
fails or answers no proxy response, 500 when Lambda refuses the invocation (throttled), 504
"Endpoint request timed out" after the 29 s integration timeout.

The HTTP side runs on werkzeug (mlops/local/wsgi_server.py says why): chunked bodies are
de-chunked, a bad Content-Length is a 400, and a refused body is read and thrown away in small
pieces so the client sees the answer and the server's memory does not grow with the body.
"""

from __future__ import annotations

import base64
import http
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mlops.local.deploy import ApiRoute
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

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway REST: request payload limit, not adjustable
INTEGRATION_TIMEOUT_S = 29.0  # API Gateway REST: default (and, for most accounts, maximum)

# API Gateway's default gateway responses: (status, message, x-amzn-ErrorType).
MISSING_TOKEN = (403, "Missing Authentication Token", "MissingAuthenticationTokenException")
FORBIDDEN = (403, "Forbidden", "ForbiddenException")
TOO_LONG = (413, "Request Too Long", "BadRequestException")
THROTTLED = (429, "Too Many Requests", "TooManyRequestsException")  # usage plan throttle
INTERNAL = (500, "Internal server error", "InternalServerErrorException")
BAD_GATEWAY = (502, "Internal server error", "InternalServerErrorException")
TIMED_OUT = (504, "Endpoint request timed out", "InternalServerErrorException")

# Lambda Invoke errors (the API's own refusals) -> what API Gateway answers the client.
INVOKE_ERRORS = {"RequestEntityTooLargeException": TOO_LONG}

Answer = tuple[int, list[tuple[str, str]], bytes]


class LambdaInvokeError(Exception):
    """Lambda's Invoke API refused the invocation (an error code such as TooManyRequestsException),
    as opposed to a function that ran and failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class ApiConfig:
    """What the deployed Api defines; `rate_limit`/`burst_limit` are its usage plan's Throttle
    (None: no throttle, as for an API without a usage plan)."""

    routes: list[ApiRoute]
    api_key: str
    binary_media_types: list[str]
    api_id: str = "local"
    stage: str = "Prod"
    rate_limit: float | None = None
    burst_limit: int | None = None


class TokenBucket:
    """API Gateway's throttle: a bucket of `burst` tokens, full at the start and refilled at
    `rate` tokens per second; a request takes one token or is throttled.

    `clock` is injectable (seconds, monotonic) so a test can move time instead of sleeping.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"throttle needs rate > 0 and burst >= 1, got {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """One token if there is one (True), else False: the request is throttled."""
        with self._lock:
            now = self.clock()
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


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


def header(headers: dict[str, str], name: str) -> str | None:
    """A header's value by case-insensitive name (HTTP header names are case-insensitive)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def proxy_event(
    route: ApiRoute,
    path: str,
    path_params: dict[str, str],
    method: str,
    headers: list[tuple[str, str]],
    query: str,
    body: bytes,
    config: ApiConfig,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The event API Gateway's Lambda proxy integration sends (payload format 1.0)."""
    single = dict(headers)
    multi: dict[str, list[str]] = {}
    for key, value in headers:
        multi.setdefault(key, []).append(value)
    multi_query = parse_qs(query, keep_blank_values=True)
    binary = is_binary(header(single, "Content-Type") or "", config.binary_media_types)
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
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.path,
            "httpMethod": method,
            "path": f"/{config.stage}{path}",
            "stage": config.stage,
            "requestId": request_id or str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "apiId": config.api_id,
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "127.0.0.1", "apiKey": header(single, "x-api-key")},
        },
        "body": event_body,
        "isBase64Encoded": encoded,
    }


# -- the server --------------------------------------------------------------------------------
class LocalApiServer:
    """The API on 127.0.0.1; `invoke(function_name, event) -> (payload, failed)`, raising
    LambdaInvokeError when Lambda refuses the invocation itself."""

    def __init__(
        self,
        config: ApiConfig,
        invoke: Callable[[str, dict[str, Any]], tuple[Any, bool]],
        port: int = 0,
        max_body_bytes: int = MAX_PAYLOAD_BYTES,
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.invoke = invoke
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.integration_timeout_s = integration_timeout_s
        self._routes = [(route, _route_pattern(route.path)) for route in config.routes]
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}  # per API key, as a usage plan throttles
        self._buckets_lock = threading.Lock()
        self._server: LocalWsgiServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the API first"
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.config.stage}"

    def start(self) -> None:
        self._server, self._thread = start_wsgi_server(self.wsgi_app, port=self.port, name="api")

    def stop(self) -> None:
        if self._server is not None:
            stop_wsgi_server(self._server, self._thread)
            self._server = self._thread = None

    def match(self, method: str, path: str) -> tuple[ApiRoute, dict[str, str]] | None:
        for route, pattern in self._routes:
            found = pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, found.groupdict()
        return None

    # -- WSGI ----------------------------------------------------------------------------------
    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable:
        request_id = str(uuid.uuid4())
        try:
            status, headers, body = self.handle(environ, request_id)
        except Exception:  # never a traceback to the client; the log has it
            log.exception("local API failed on %s", environ.get("REQUEST_URI"))
            status, headers, body = gateway_error(INTERNAL)
        headers = [
            *headers,
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request_id),
        ]
        start_response(f"{status} {_phrase(status)}", headers)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]  # werkzeug would send it

    def handle(self, environ: dict[str, Any], request_id: str) -> Answer:
        """API Gateway's checks in its order: route, API key, throttle, size; then the
        integration."""
        method = environ["REQUEST_METHOD"]
        parts = urlsplit(environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/")
        path = self._strip_stage(parts.path)
        raw_headers = environ.get("mlops.raw_headers") or []
        headers = dict(raw_headers)
        try:
            length = declared_length(environ)
        except BadRequestBody as error:
            return json_error(400, str(error))
        refusal = self._refusal(method, path, headers, length)
        if refusal is not None:
            discard_body(environ, length)
            return refusal
        try:
            body = read_body(environ, length, self.max_body_bytes)
        except BodyTooLarge:  # only a chunked body can grow past a Content-Length check
            discard_body(environ, None)
            return gateway_error(TOO_LONG)
        except BadRequestBody as error:
            return json_error(400, str(error))
        route, path_params = self.match(method, path) or (None, {})
        assert route is not None  # _refusal checked the route
        query = parts.query
        event = proxy_event(
            route, path, path_params, method, raw_headers, query, body, self.config, request_id
        )
        return self._integrate(route.function_name, event, f"{method} {path}")

    def _strip_stage(self, path: str) -> str:
        stage = self.config.stage
        if path == f"/{stage}" or path.startswith(f"/{stage}/"):
            return path[len(stage) + 1 :] or "/"
        return path

    def _refusal(
        self, method: str, path: str, headers: dict[str, str], length: int | None
    ) -> Answer | None:
        """What API Gateway answers from the request line and headers alone, if anything."""
        matched = self.match(method, path)
        if matched is None:
            return gateway_error(MISSING_TOKEN)
        if matched[0].api_key_required:
            key = header(headers, "x-api-key")
            if key != self.config.api_key:
                return gateway_error(FORBIDDEN)
            if not self._admit(key):
                return gateway_error(THROTTLED)
        if length is not None and length > self.max_body_bytes:
            return gateway_error(TOO_LONG)
        return None

    def _admit(self, api_key: str) -> bool:
        """Take a token from the key's bucket; True without a usage plan throttle.

        A usage plan throttles requests that carry its key, so routes without a key requirement
        are not throttled here (AWS's stage and account throttles are far above local loads).
        """
        rate, burst = self.config.rate_limit, self.config.burst_limit
        if rate is None or burst is None:
            return True
        with self._buckets_lock:
            bucket = self._buckets.get(api_key)
            if bucket is None:
                bucket = self._buckets[api_key] = TokenBucket(rate, burst, self._clock)
        return bucket.take()

    def _integrate(self, function_name: str, event: dict[str, Any], what: str) -> Answer:
        """The Lambda proxy integration under API Gateway's integration timeout."""
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["result"] = self.invoke(function_name, event)
            except Exception as error:
                outcome["error"] = error

        worker = threading.Thread(target=call, daemon=True, name="api-integration")
        worker.start()
        worker.join(self.integration_timeout_s)
        if worker.is_alive():  # the function keeps running, as on AWS; the client is answered
            log.warning("%s: integration timed out after %.0f s", what, self.integration_timeout_s)
            return gateway_error(TIMED_OUT)
        error = outcome.get("error")
        if isinstance(error, LambdaInvokeError):
            log.warning("%s: Lambda refused the invocation: %s", what, error)
            return gateway_error(INVOKE_ERRORS.get(error.code, INTERNAL))
        if error is not None:
            log.warning("%s: integration failed: %s", what, error)
            return gateway_error(INTERNAL)
        payload, failed = outcome["result"]
        if failed or not isinstance(payload, dict) or "statusCode" not in payload:
            log.warning("%s: integration failure: %s", what, str(payload)[:300])
            return gateway_error(BAD_GATEWAY)
        return proxy_response(payload)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def gateway_error(kind: tuple[int, str, str]) -> Answer:
    """One of API Gateway's default gateway responses."""
    status, message, error_type = kind
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)]
    return status, headers, json.dumps({"message": message}).encode()


def json_error(status: int, message: str) -> Answer:
    """A refusal of a malformed request (API Gateway's edge answers these before the API)."""
    headers = [("Content-Type", "application/json")]
    return status, headers, json.dumps({"message": f"Bad Request: {message}"}).encode()


def proxy_response(payload: dict[str, Any]) -> Answer:
    """The function's proxy answer as HTTP; multiValueHeaders become repeated headers."""
    headers = [(str(k), str(v)) for k, v in (payload.get("headers") or {}).items()]
    for key, values in (payload.get("multiValueHeaders") or {}).items():
        headers = [(k, v) for k, v in headers if k.lower() != str(key).lower()]
        headers.extend((str(key), str(value)) for value in values)
    headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "connection")]
    body = payload.get("body") or ""
    raw = base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
    return int(payload["statusCode"]), headers, raw
