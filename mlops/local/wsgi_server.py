"""The local cloud's HTTP front ends on werkzeug's threaded WSGI server (which moto also runs on).

Why werkzeug and not the standard library's http.server, and not waitress:

- http.server hands the handler a raw socket: every handler parsed Content-Length itself (a
  chunked upload became an empty body followed by a "second request" made of the chunks; a bad
  value was a traceback and a dropped connection), and its listen backlog is 5.
- waitress is a sturdier server, but it reads (spools) the whole request body before it calls the
  application, so an API key cannot be checked before a large body has been received. With WSGI
  on werkzeug the application sees the headers first and reads ``wsgi.input`` only when it wants
  to; werkzeug de-chunks ``Transfer-Encoding: chunked`` bodies and is already installed (moto's
  server needs it), so nothing new is pinned.

What this module adds to werkzeug: a listen backlog of 1024, an idle timeout per socket so a
silent client cannot hold a thread for ever, JSON instead of HTML for the errors the HTTP parser
answers itself (malformed request line, oversized headers), and logging through `logging`.
"""

from __future__ import annotations

import http
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

log = logging.getLogger(__name__)

BACKLOG = 1024  # pending connections the kernel queues before refusing (http.server: 5)
SOCKET_TIMEOUT_S = 60.0  # a client silent this long mid-request is dropped
READ_CHUNK_BYTES = 64 * 1024
DISCARD_DEADLINE_S = 30.0  # reading a refused body gives up after this long (then a reset)
DISCARD_IDLE_S = 2.0  # ... or after this long without a byte


class BadRequestBody(Exception):
    """A Content-Length or chunked framing that cannot be read."""


class BodyTooLarge(Exception):
    """The body grew past the limit while it was read."""


# -- request bodies ------------------------------------------------------------------------
def declared_length(environ: dict[str, Any]) -> int | None:
    """Content-Length as a number; None for a chunked body; BadRequestBody when unusable."""
    if environ.get("wsgi.input_terminated"):  # werkzeug de-chunks Transfer-Encoding: chunked
        return None
    if environ.get("HTTP_TRANSFER_ENCODING"):
        coding = environ["HTTP_TRANSFER_ENCODING"]
        raise BadRequestBody(f"Transfer-Encoding {coding[:40]!r} without chunked framing")
    raw = (environ.get("CONTENT_LENGTH") or "").strip()
    if not raw:
        return 0
    values = {value.strip() for value in raw.split(",")}  # repeated headers arrive joined
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise BadRequestBody(f"Content-Length {raw[:40]!r} is not one non-negative integer")
    return int(values.pop())


def read_body(environ: dict[str, Any], length: int | None, limit: int) -> bytes:
    """The whole body, never more than `limit` bytes in memory (BodyTooLarge beyond)."""
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    received = 0
    while length is None or received < length:
        want = READ_CHUNK_BYTES if length is None else min(READ_CHUNK_BYTES, length - received)
        try:
            chunk = stream.read(want)
        except OSError as error:  # a broken chunk header or terminator
            raise BadRequestBody(f"unreadable chunked body: {error}") from error
        if not chunk:
            if length is not None:
                raise BadRequestBody(f"the body ended after {received} of {length} bytes")
            break
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def discard_body(environ: dict[str, Any], remaining: int | None) -> None:
    """Read a refused body into one small buffer and drop it, so the client sees the answer.

    Closing a socket with unread data makes the kernel send a reset, and a client still
    uploading then gets "connection reset" instead of the 403 or 413. Memory stays at one
    buffer whatever the body's size; a client that keeps sending past the deadline, or stalls,
    is cut off.
    """
    stream = environ["wsgi.input"]
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        sock.settimeout(DISCARD_IDLE_S)
    buffer = bytearray(READ_CHUNK_BYTES)
    deadline = time.monotonic() + DISCARD_DEADLINE_S
    try:
        while (remaining is None or remaining > 0) and time.monotonic() < deadline:
            size = len(buffer) if remaining is None else min(len(buffer), remaining)
            count = stream.readinto(memoryview(buffer)[:size])
            if not count:
                return
            if remaining is not None:
                remaining -= count
    except OSError:  # timed out or reset: the connection is closed after the answer anyway
        return


# -- the server ----------------------------------------------------------------------------------
class JsonErrorRequestHandler(WSGIRequestHandler):
    """werkzeug's handler; parser-level errors answered as JSON, access log at DEBUG."""

    timeout = SOCKET_TIMEOUT_S
    # http.server writes no status line or headers for a request it took for HTTP/0.9, which is
    # what it assumes of a request line it cannot parse; answer those as HTTP/1.0 instead.
    default_request_version = "HTTP/1.0"
    # Headers and body leave in separate writes: without TCP_NODELAY a client waits ~40 ms for
    # the delayed ACK (bench/serving.py measured it on the old servers).
    disable_nagle_algorithm = True

    def handle_expect_100(self) -> bool:
        """http.server would send "100 Continue" here and werkzeug again in run_wsgi: once."""
        return True

    def make_environ(self) -> dict[str, Any]:
        """The WSGI environ plus the request headers as sent (names in their own case)."""
        environ = super().make_environ()
        environ["mlops.raw_headers"] = list(self.headers.items())
        return environ

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What http.server answers before WSGI runs (bad request line, headers too long)."""
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        body = json.dumps({"message": message or phrase}).encode()
        self.log_error("code %d, message %s", code, message)
        self.send_response(code, message or phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)
        self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, getattr(self, "path", "?"), code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    def log_error(self, format: str, *args: Any) -> None:
        log.info("%s - " + format, self.address_string(), *args)


class LocalWsgiServer(ThreadedWSGIServer):
    """One thread per connection, a deep backlog, and a stop that never waits on a client."""

    request_queue_size = BACKLOG
    daemon_threads = True
    block_on_close = False


def start_wsgi_server(
    app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0, name: str = "wsgi"
) -> tuple[LocalWsgiServer, threading.Thread]:
    """Bind `host:port` (port 0: a free one), serve `app` in a daemon thread."""
    server = LocalWsgiServer(host, port, app, handler=JsonErrorRequestHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name=name
    )
    thread.start()
    return server, thread


def stop_wsgi_server(server: LocalWsgiServer, thread: threading.Thread | None) -> None:
    server.shutdown()
    server.server_close()
    if thread is not None and thread.is_alive():
        thread.join(5)
