"""predict's InvokeEndpoint client gives up before the function's Timeout (template.yaml).

botocore's defaults (60 s read timeout, retried) would keep predict waiting on a stuck endpoint
until Lambda stops it at 25 s, and the client would get API Gateway's 502 instead of predict's
own answer. The fast test reads the real botocore client's resolved settings against the
template; the slow one lets that client wait on a server that never answers.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError

from tests.support import template as sam_template

BACKOFF_BOUND_S = 1.0  # botocore standard mode: random(0, 1) x 2^(attempt - 1) before retry 1


def predict_timeout_s() -> float:
    properties = sam_template.functions()[sam_template.function_for_folder("predict")]
    return float(properties["Timeout"])


def worst_case_wait_s(config) -> float:
    attempts = config.retries["total_max_attempts"]
    backoff = sum(min(20.0, BACKOFF_BOUND_S * 2**i) for i in range(attempts - 1))
    return attempts * (config.connect_timeout + config.read_timeout) + backoff


def test_invoke_endpoint_read_timeout_is_below_the_functions_timeout(app_module) -> None:
    config = app_module.runtime.meta.config

    assert config.read_timeout < predict_timeout_s()
    assert worst_case_wait_s(config) < predict_timeout_s() < 29  # API Gateway's integration limit


def test_invoke_endpoint_client_keeps_the_layers_retry_mode(app_module) -> None:
    config = app_module.runtime.meta.config

    assert config.retries["mode"] == "standard"
    assert config.retries["total_max_attempts"] == app_module.INVOKE_ATTEMPTS >= 2


@pytest.fixture
def app_module(load_handler):
    return load_handler("predict")


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """127.0.0.1: accepts connections, reads, never answers; (url, accepted connections)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stopping = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stopping.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.mark.slow
def test_invoke_endpoint_on_a_stuck_endpoint_gives_up_before_the_functions_timeout(
    app_module, silent_server
) -> None:
    url, accepted = silent_server
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    client = session.client("sagemaker-runtime", endpoint_url=url, config=app_module.RUNTIME_CONFIG)

    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.invoke_endpoint(EndpointName="stuck", Body=b"{}", ContentType="application/json")
    elapsed = time.monotonic() - started

    assert len(accepted) == app_module.INVOKE_ATTEMPTS  # one retry, then it gives up
    assert elapsed < predict_timeout_s(), elapsed
