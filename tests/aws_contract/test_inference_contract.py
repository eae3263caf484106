"""model.tar.gz through the real SageMaker inference toolkit; the predict Lambda on its answers.

The model archive is made by train.py's own save_model (untrained weights: the contract is about
the serving path, not accuracy), packed and unpacked as SageMaker does, and served by the local
model server, which hands every request to sagemaker-pytorch-inference's HandlerService (the
image's toolkit, 2.0.25). Good images answer 200; every bad image of the reliability corpus
answers a 4xx JSON error without a traceback, which only holds because inference.py answers
through the toolkit's context (the toolkit itself appends a traceback to any error it makes).
The same endpoint checks run again under the image's Python (.venv-image: Python 3.12, torch
2.6, numpy 2, protobuf 6, `make image-venv`), with the archive written there by train.py's own
save_model from the unpacked source archive, as a training job in the image writes it.
Then the predict Lambda gets exactly those answers as InvokeEndpoint's ModelError and must give
the API client the same 4xx, as JSON, without a traceback; a 5xx from the model is a 502.

The second half checks the local endpoint's HTTP server (waitress) itself: chunked bodies, a
bad Content-Length, the body-size limit and a burst of concurrent connections.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.reliability.bad_images import BadImage, corpus, exotic_images
from tests.support import template as sam_template
from tests.support.lambda_env import LambdaContext, load_handler, set_lambda_environment
from tests.support.model_server import MODEL_SERVER, model_server

ROOT = Path(__file__).resolve().parents[2]
CLASSES = [f"{i:03d}.class{i}" for i in range(4)]

pytestmark = pytest.mark.timeout(300)


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str


@dataclass
class Server:
    port: int
    process: subprocess.Popen

    def post(
        self,
        body: bytes,
        content_type: str,
        accept: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": content_type, **(extra_headers or {})}
        if accept:
            headers["Accept"] = accept
        try:
            connection.request("POST", "/invocations", body=body, headers=headers)
            response = connection.getresponse()
            return Answer(response.status, response.read(), response.getheader("Content-Type", ""))
        finally:
            connection.close()


def model_archive(work: Path) -> Path:
    """model.tar.gz as a training job leaves it: train.py's save_model, then tar of the folder."""
    from training import inference, train

    model_dir = work / "model"
    arguments = argparse.Namespace(model="resnet18", image_size=32)
    network = inference.build_model("resnet18", len(CLASSES))
    train.save_model(model_dir, network, arguments, CLASSES)
    archive = work / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


@contextlib.contextmanager
def start_server(model_dir: Path, work: Path, python: str = sys.executable) -> Iterator[Server]:
    """model_server.py under `python`, once the model is loaded and the port bound."""
    env = {**os.environ, "PYTHONPATH": ""}  # the archive must serve itself, as in the image
    with model_server(model_dir, work, python=python, env=env) as (process, port):
        yield Server(port, process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("inference-contract")
    model_dir = work / "opt-ml-model"  # the image unpacks model.tar.gz into /opt/ml/model
    with tarfile.open(model_archive(work)) as tar:
        tar.extractall(model_dir, filter="data")
    with start_server(model_dir, work) as running:
        yield running


def assert_clean_error(answer: Answer | dict[str, Any], status: int) -> dict[str, Any]:
    """A 4xx with a JSON {"error", "message"} body and nothing of a traceback."""
    if isinstance(answer, Answer):
        code, text, content_type = answer.status, answer.body.decode(), answer.content_type
    else:
        code, text = answer["statusCode"], answer["body"]
        headers = answer.get("multiValueHeaders") or {}
        content_type = (headers.get("Content-Type") or [""])[0]
    assert code == status, f"{code} (expected {status}): {text[:600]}"
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    assert content_type.startswith("application/json"), content_type
    document = json.loads(text)
    assert isinstance(document.get("error"), str) and document.get("message"), document
    return document


# --- the endpoint: the real toolkit around inference.py --------------------------------------


@pytest.mark.parametrize("image", exotic_images(), ids=lambda image: image.kind)
def test_endpoint_predicts_every_valid_image(server: Server, image: Any) -> None:
    answer = server.post(image.body, image.content_type)
    assert answer.status == 200, answer.body[:1000]
    prediction = json.loads(answer.body)
    assert prediction["class_name"] == CLASSES[prediction["class_index"]]
    assert prediction["top_k"][0]["class_index"] == prediction["class_index"]


@pytest.mark.parametrize("image", corpus(), ids=lambda image: image.kind)
def test_endpoint_refuses_every_bad_image_with_a_clean_4xx(server: Server, image: BadImage) -> None:
    assert_clean_error(server.post(image.body, image.content_type), image.endpoint)


def test_endpoint_refuses_an_accept_it_cannot_produce(server: Server) -> None:
    good = exotic_images()[0]
    assert_clean_error(server.post(good.body, good.content_type, accept="text/csv"), 406)
    assert server.post(good.body, good.content_type, accept="*/*").status == 200


def test_corpus_has_at_least_25_kinds_and_docs_list_each() -> None:
    kinds = [image.kind for image in corpus()]
    assert len(set(kinds)) == len(kinds) >= 25
    table = (ROOT / "docs" / "reliability.md").read_text()
    missing = [kind for kind in kinds if f"`{kind}`" not in table]
    assert not missing, f"docs/reliability.md lacks rows for {missing}"


# --- the same under the image's Python: 3.12, torch 2.6, numpy 2, protobuf 6 ------------------

IMAGE_PYTHON = ROOT / ".venv-image" / "bin" / "python"

# Run by the image environment's Python inside the unpacked source archive (train.py at its
# root, smdebug vendored next to it), as in the training container: train.py's own save_model
# writes the model directory with the image's torch.
SAVE_IN_IMAGE = """
import argparse, json, sys
from pathlib import Path
import inference, train
model_dir, classes = Path(sys.argv[1]), json.loads(sys.argv[2])
network = inference.build_model("resnet18", len(classes))
train.save_model(model_dir, network, argparse.Namespace(model="resnet18", image_size=32), classes)
"""

IMAGE_PROBE = (
    "import sys, importlib.metadata as m, torch, numpy, google.protobuf as p, waitress, "
    "sagemaker_pytorch_serving_container.handler_service; "
    "print(sys.version_info[:2], torch.__version__, numpy.__version__, p.__version__, "
    "m.version('sagemaker-pytorch-inference'))"
)


def image_model_archive(work: Path) -> Path:
    """model.tar.gz as a training job in the image leaves it: save_model under Python 3.12."""
    from mlops.packaging import pack_training_source

    code = work / "code"
    with tarfile.open(fileobj=io.BytesIO(pack_training_source()), mode="r:gz") as tar:
        tar.extractall(code, filter="data")
    model_dir = work / "model"
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(IMAGE_PYTHON), "-c", SAVE_IN_IMAGE, str(model_dir), json.dumps(CLASSES)],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    archive = work / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """model_server.py and the real toolkit under .venv-image's Python (`make image-venv`)."""
    if not IMAGE_PYTHON.exists():
        pytest.fail(
            f"{IMAGE_PYTHON} is missing: build the image environment with `make image-venv`"
        )
    work = tmp_path_factory.mktemp("inference-contract-py312")
    model_dir = work / "opt-ml-model"
    with tarfile.open(image_model_archive(work)) as tar:
        tar.extractall(model_dir, filter="data")
    with start_server(model_dir, work, python=str(IMAGE_PYTHON)) as running:
        yield running


def test_image_environment_serves_with_the_images_majors(image_server: Server) -> None:
    """The server runs the image's Python and packages: 3.12, torch 2.6, numpy 2, protobuf 6,
    sagemaker-pytorch-inference 2.0.25 (the PyTorch 2.6 inference image's toolkit)."""
    assert image_server.process.args[0] == str(IMAGE_PYTHON)
    out = subprocess.run(
        [str(IMAGE_PYTHON), "-c", IMAGE_PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("(3, 12) 2.6."), out
    *_, numpy_version, protobuf_version, toolkit = out.split()
    assert numpy_version.startswith("2.") and protobuf_version.startswith("6."), out
    assert toolkit == "2.0.25", out


@pytest.mark.parametrize("image", exotic_images(), ids=lambda image: image.kind)
def test_image_environment_predicts_every_valid_image(image_server: Server, image: Any) -> None:
    answer = image_server.post(image.body, image.content_type)
    assert answer.status == 200, answer.body[:1000]
    prediction = json.loads(answer.body)
    assert prediction["class_name"] == CLASSES[prediction["class_index"]]


@pytest.mark.parametrize("image", corpus(), ids=lambda image: image.kind)
def test_image_environment_refuses_every_bad_image_with_a_clean_4xx(
    image_server: Server, image: BadImage
) -> None:
    assert_clean_error(image_server.post(image.body, image.content_type), image.endpoint)


# --- the predict Lambda fed the toolkit's real answers ---------------------------------------


@pytest.fixture
def predict_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """functions/predict/app.py with its template environment, inside moto's mock."""
    from moto import mock_aws

    set_lambda_environment(monkeypatch)
    monkeypatch.syspath_prepend(str(sam_template.layer_path()))
    with mock_aws():
        resolver = sam_template.template_resolver(
            {"TrainingImage": "training-image", "InferenceImage": "inference-image"}
        )
        yield load_handler("predict", resolver, monkeypatch)


def predict_context() -> LambdaContext:
    return LambdaContext(function_name="predict", memory_limit_in_mb=512, remaining_ms=25_000)


def api_event(body: bytes, content_type: str) -> dict[str, Any]:
    """API Gateway's proxy event for a binary POST /predict (the body base64-encoded)."""
    event = json.loads((ROOT / "tests" / "events" / "api_predict_png.json").read_text())
    event["headers"] = {"Content-Type": content_type}
    event["multiValueHeaders"] = {"Content-Type": [content_type]}
    event["body"] = base64.b64encode(body).decode()
    event["isBase64Encoded"] = True
    return event


def container_answer(stub: Any, answer: Answer, endpoint: str) -> None:
    """What InvokeEndpoint gives the Lambda for the container's answer."""
    from botocore.response import StreamingBody

    if answer.status == 200:
        stub.add_response(
            "invoke_endpoint",
            {
                "Body": StreamingBody(io.BytesIO(answer.body), len(answer.body)),
                "ContentType": answer.content_type,
            },
        )
        return
    kind = "client" if answer.status < 500 else "server"
    text = answer.body.decode()
    group = f"/aws/sagemaker/Endpoints/{endpoint}"
    stub.add_client_error(
        "invoke_endpoint",
        "ModelError",
        f'Received {kind} error ({answer.status}) from primary with message "{text}"',
        http_status_code=424,
        modeled_fields={
            "OriginalStatusCode": answer.status,
            "OriginalMessage": answer.body.decode(),
            "LogStreamArn": f"arn:aws:logs:us-east-1:123456789012:log-group:{group}",
        },
    )


@pytest.mark.parametrize("image", corpus(), ids=lambda image: image.kind)
def test_predict_lambda_answers_every_bad_image_with_the_same_4xx(
    server: Server, predict_app: ModuleType, image: BadImage
) -> None:
    from botocore.stub import Stubber

    app = predict_app
    try:
        data, forward_type = app.read_image(app.media_type(image.content_type), image.body)
    except app.RequestRejected as refused:  # the Lambda refuses it before the endpoint
        assert refused.status == image.api
        forwarded = None
    else:
        forwarded = server.post(data, forward_type)
        assert forwarded.status == image.api, forwarded.body[:500]
    with Stubber(app.runtime) as stub:
        if forwarded is not None:
            container_answer(stub, forwarded, os.environ["ENDPOINT_NAME"])
        response = app.lambda_handler(api_event(image.body, image.content_type), predict_context())
    document = assert_clean_error(response, image.api)
    if forwarded is not None:
        assert document["message"] == json.loads(forwarded.body)["message"]


def toolkit_error_body(status: int, message: str) -> Answer:
    """The body the real toolkit makes of an exception: message, newline, traceback."""
    from sagemaker_inference.errors import GenericInferenceToolkitError
    from sagemaker_inference.transformer import Transformer

    sys.path.insert(0, str(MODEL_SERVER.parent))
    try:
        from model_server import Context, RequestProcessor
    finally:
        sys.path.pop(0)
    context = Context("model", "/opt/ml/model")
    context.request_processor = [RequestProcessor({})]
    try:
        raise RuntimeError(message)
    except RuntimeError:
        trace = traceback.format_exc()
    body = Transformer.handle_error(context, GenericInferenceToolkitError(status, message), trace)
    assert context.get_response_status(0)[0] == status
    assert "Traceback (most recent call last)" in body[0]
    return Answer(status, body[0].encode(), "")


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (400, '{"error": "NotAnImage", "message": "body is not a readable image"}', 400),
        (413, "image is too large", 413),
        (500, "CUDA error: an illegal memory access was encountered", 502),
        (503, "Prediction failed", 502),
    ],
)
def test_predict_lambda_strips_the_toolkits_traceback(
    predict_app: ModuleType, status: int, message: str, expected: int
) -> None:
    """Errors the toolkit makes itself (its own error types, any exception: 500) carry a
    traceback; the API client gets the status (5xx as 502) and the message, never the trace."""
    from botocore.stub import Stubber

    png = exotic_images()[4].body
    with Stubber(predict_app.runtime) as stub:
        container_answer(stub, toolkit_error_body(status, message), os.environ["ENDPOINT_NAME"])
        response = predict_app.lambda_handler(api_event(png, "image/png"), predict_context())
    document = assert_clean_error(response, expected)
    if expected < 500:
        assert document["error"] == "ModelRejectedInput"
        assert document["message"] in message
    else:
        assert document["error"] == "ModelFailed"
        assert message in document["message"]


# --- the local endpoint's HTTP server ---------------------------------------------------------


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_model_server_answers_ping_and_unknown_routes_as_json(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/ping")
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"status": "Healthy"})
    connection.request("GET", "/nope")
    response = connection.getresponse()
    assert response.status == 404 and json.loads(response.read())["code"] == 404
    connection.close()


def test_model_server_reads_a_chunked_body(server: Server) -> None:
    png = exotic_images()[4].body
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    pieces = iter([png[:100], png[100:1000], png[1000:]])
    connection.request(
        "POST",
        "/invocations",
        body=pieces,
        headers={"Content-Type": "image/png", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 200, response.read()[:500]
    assert json.loads(response.read())["class_name"] in CLASSES
    connection.close()


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3", b"10, 20"])
def test_model_server_refuses_a_bad_content_length_with_400(server: Server, length: bytes) -> None:
    answer = raw_request(
        server.port,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: " + length + b"\r\n\r\nabc",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]


def test_model_server_refuses_an_oversized_body_before_reading_it(server: Server) -> None:
    """Content-Length over the limit: a JSON 413 at once, without the body being sent."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]


def test_model_server_refuses_an_oversized_chunked_body(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    block = b"\0" * (1 << 20)
    connection.request(
        "POST",
        "/invocations",
        body=iter([block] * 8),
        headers={"Content-Type": "image/png", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 413
    connection.close()


def test_model_server_holds_a_burst_of_concurrent_connections(server: Server) -> None:
    """64 clients connect at once: none is reset (the backlog is 1024, not Python's 5)."""

    def ping(_: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            connection.request("GET", "/ping")
            return connection.getresponse().status
        finally:
            connection.close()

    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(ping, range(256)))
    assert statuses == [200] * 256


# --- explanations: CustomAttributes explain=true through the real toolkit ---------------------

# What SageMaker sends the container for InvokeEndpoint(CustomAttributes="explain=true").
EXPLAIN_HEADER = {"X-Amzn-SageMaker-Custom-Attributes": "explain=true"}


def check_explained(server: Server, png: bytes) -> tuple[Answer, Answer]:
    """The same image with and without explain=true: the same prediction, plus a heatmap PNG
    of the model's input size (32 px here) with it."""
    plain = server.post(png, "image/png")
    explained = server.post(png, "image/png", extra_headers=EXPLAIN_HEADER)
    assert plain.status == 200 and explained.status == 200, explained.body[:2000]
    answer = json.loads(explained.body)
    explanation = answer.pop("explanation")
    assert answer == json.loads(plain.body)
    assert explanation["method"] == "Grad-CAM" and explanation["layer"] == "layer2"
    from PIL import Image

    heatmap = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap_png"])))
    assert heatmap.format == "PNG" and heatmap.mode == "L" and heatmap.size == (32, 32)
    return plain, explained


def test_endpoint_explains_when_custom_attributes_ask(server: Server) -> None:
    import time

    png = exotic_images()[4].body
    plain, explained = check_explained(server, png)
    timings: dict[str, list[float]] = {"plain": [], "explain": []}
    for _ in range(5):
        for kind, headers in (("plain", None), ("explain", EXPLAIN_HEADER)):
            started = time.perf_counter()
            assert server.post(png, "image/png", extra_headers=headers).status == 200
            timings[kind].append(time.perf_counter() - started)
    median = {kind: sorted(values)[2] * 1000 for kind, values in timings.items()}
    print(
        f"\n[explain] answer {len(plain.body)} bytes plain, {len(explained.body)} with "
        f"explain=true; median latency {median['plain']:.0f} ms plain, "
        f"{median['explain']:.0f} ms with explain=true (32-px resnet18, 5 requests each)"
    )
    assert len(explained.body) < 64 * 1024


def test_image_environment_explains_with_the_archived_captum(image_server: Server) -> None:
    """Python 3.12, torch 2.6, numpy 2: the captum copy that train.py put into code/."""
    check_explained(image_server, exotic_images()[4].body)


def test_predict_lambda_forwards_explain_and_answers_the_heatmap(
    server: Server, predict_app: ModuleType
) -> None:
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    png = exotic_images()[4].body
    forwarded = server.post(png, "image/png", extra_headers=EXPLAIN_HEADER)
    event = api_event(png, "image/png")
    event["queryStringParameters"] = {"explain": "true"}
    event["multiValueQueryStringParameters"] = {"explain": ["true"]}
    with Stubber(predict_app.runtime) as stub:
        stub.add_response(
            "invoke_endpoint",
            {
                "Body": StreamingBody(io.BytesIO(forwarded.body), len(forwarded.body)),
                "ContentType": forwarded.content_type,
            },
            {
                "EndpointName": os.environ["ENDPOINT_NAME"],
                "ContentType": "image/png",
                "Accept": "application/json",
                "Body": png,
                "CustomAttributes": "explain=true",
            },
        )
        response = predict_app.lambda_handler(event, predict_context())
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == json.loads(forwarded.body)
    assert len(response["body"]) < 6 * 1024 * 1024  # Lambda's synchronous response limit
