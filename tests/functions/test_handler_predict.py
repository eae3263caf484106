"""predict: POST /predict through API Gateway's proxy event, every refusal a 4xx JSON."""

from __future__ import annotations

import base64
import io
import json

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from mlops.local import emf
from tests.functions.handler_helpers import JPEG_BYTES, PNG_BYTES, b64, load_event

ANSWER = {
    "class_index": 3,
    "label": "three",
    "top_k": [{"class_index": 3, "label": "three", "probability": 0.9}],
}


@pytest.fixture
def app(load_handler):
    return load_handler("predict")


def request(
    body: bytes | str | None,
    content_type: str | None = "image/png",
    *,
    binary: bool = True,
    method="POST",
    path="/predict",
) -> dict:
    event = load_event("api_predict_png.json")
    event["headers"] = {"Content-Type": content_type} if content_type else {}
    event["multiValueHeaders"] = {"Content-Type": [content_type]} if content_type else {}
    event["httpMethod"] = method
    event["path"] = event["resource"] = path
    if body is None:
        event["body"], event["isBase64Encoded"] = None, False
    elif binary:
        event["body"], event["isBase64Encoded"] = (
            b64(body if isinstance(body, bytes) else body.encode()),
            True,
        )
    else:
        event["body"], event["isBase64Encoded"] = body, False
    return event


def answer_of(response: dict) -> tuple[int, dict]:
    return response["statusCode"], json.loads(response["body"])


def model_answer(stub, expected_type: str, expected_body: bytes) -> None:
    data = json.dumps(ANSWER).encode()
    stub.add_response(
        "invoke_endpoint",
        {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"},
        {
            "EndpointName": "mlops-classifier",
            "ContentType": expected_type,
            "Accept": "application/json",
            "Body": expected_body,
        },
    )


def test_predict_png_answers_the_models_json(app, context):
    with Stubber(app.runtime) as stub:
        model_answer(
            stub, "image/png", base64.b64decode(load_event("api_predict_png.json")["body"])
        )
        response = app.lambda_handler(load_event("api_predict_png.json"), context)

    assert answer_of(response) == (200, ANSWER)


@pytest.mark.parametrize(
    ("declared", "data", "forwarded"),
    [
        ("application/octet-stream", JPEG_BYTES, "image/jpeg"),
        ("application/x-image", PNG_BYTES, "image/png"),
        ("application/x-image", b"GIF89a" + b"\x00" * 16, "application/x-image"),
    ],
)
def test_predict_generic_types_are_forwarded_as_the_sniffed_type(
    app, context, declared, data, forwarded
):
    with Stubber(app.runtime) as stub:
        model_answer(stub, forwarded, data)
        response = app.lambda_handler(request(data, declared), context)

    assert answer_of(response) == (200, ANSWER)


def test_predict_jpeg_with_charset_parameter(app, context):
    with Stubber(app.runtime) as stub:
        model_answer(stub, "image/jpeg", JPEG_BYTES)
        response = app.lambda_handler(request(JPEG_BYTES, "image/jpeg; charset=binary"), context)

    assert response["statusCode"] == 200


def test_predict_json_body_with_base64_image(app, context):
    with Stubber(app.runtime) as stub:
        model_answer(stub, "image/png", PNG_BYTES)
        body = json.dumps({"image": b64(PNG_BYTES)})
        response = app.lambda_handler(request(body, "application/json", binary=False), context)

    assert answer_of(response) == (200, ANSWER)


@pytest.mark.parametrize(
    ("event_args", "status", "error"),
    [
        ((None, "image/png"), 400, "EmptyBody"),
        ((b"", "image/png"), 400, "EmptyBody"),
        ((b"hello, world", "image/png"), 400, "NotAnImage"),
        ((PNG_BYTES[:4], "image/png"), 400, "NotAnImage"),
        ((b"hello", "text/plain"), 415, "UnsupportedMediaType"),
        ((PNG_BYTES, None), 415, "UnsupportedMediaType"),
        (('{"image": "%%% not base64 %%%"}', "application/json"), 400, "InvalidJson"),
        (('{"picture": "abc"}', "application/json"), 400, "InvalidJson"),
        (("not json at all", "application/json"), 400, "InvalidJson"),
    ],
)
def test_predict_bad_requests_are_refused_before_the_endpoint(
    app, context, event_args, status, error
):
    body, content_type = event_args
    binary = not (isinstance(body, str) and content_type in ("application/json", "text/plain"))
    with Stubber(app.runtime):  # any call to the endpoint would fail the test
        response = app.lambda_handler(request(body, content_type, binary=binary), context)

    code, payload = answer_of(response)
    assert (code, payload["error"]) == (status, error)
    assert payload["message"]


def test_predict_oversized_image_is_413(app, context, monkeypatch):
    monkeypatch.setenv("MAX_IMAGE_BYTES", "100")

    code, payload = answer_of(app.lambda_handler(request(PNG_BYTES + b"\x00" * 200), context))

    assert (code, payload["error"]) == (413, "PayloadTooLarge")
    assert "limit is 100 bytes" in payload["message"]


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("ENDPOINT_NAME", None, "environment variable ENDPOINT_NAME is not set"),
        ("MAX_IMAGE_BYTES", "four megabytes", "MAX_IMAGE_BYTES='four megabytes' is not an integer"),
    ],
)
def test_predict_missing_setting_is_a_json_configuration_error(
    app, context, monkeypatch, caplog, variable, value, named
):
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)

    response = app.lambda_handler(request(PNG_BYTES), context)

    code, payload = answer_of(response)
    assert (code, payload["error"]) == (500, "ConfigurationError")
    assert named in payload["message"]
    assert "Traceback" not in response["body"]
    assert named in caplog.text  # the log names it too


def model_error(stub, status: int, message: str) -> None:
    stub.add_client_error(
        "invoke_endpoint",
        "ModelError",
        "Received client error",
        http_status_code=424,
        response_meta={},
        modeled_fields={"OriginalStatusCode": status, "OriginalMessage": message},
    )


def test_predict_model_4xx_is_passed_through(app, context):
    with Stubber(app.runtime) as stub:
        model_error(stub, 400, json.dumps({"error": "InputError", "message": "image is truncated"}))
        code, payload = answer_of(app.lambda_handler(request(PNG_BYTES), context))

    assert (code, payload["error"], payload["message"]) == (
        400,
        "ModelRejectedInput",
        "image is truncated",
    )


def test_predict_model_5xx_is_a_502(app, context):
    """The toolkit's answer to an exception: 500, message + traceback; the client sees 502
    and the message, never the traceback."""
    trace = 'Traceback (most recent call last):\n  File "inference.py", line 9\nRuntimeError: x'
    with Stubber(app.runtime) as stub:
        model_error(stub, 500, "CUDA error: out of memory\n" + trace)
        code, payload = answer_of(app.lambda_handler(request(PNG_BYTES), context))

    assert (code, payload["error"]) == (502, "ModelFailed")
    assert "CUDA error: out of memory" in payload["message"]
    assert "Traceback" not in payload["message"] and "File " not in payload["message"]


def test_predict_model_4xx_from_the_toolkits_own_error_drops_the_traceback(app, context):
    """A toolkit error type (e.g. from an older toolkit without a context) carries the status
    and a traceback after the message; the message may be inference.py's JSON body."""
    body = json.dumps({"error": "ImageTooLarge", "message": "image is 9000x9000"})
    with Stubber(app.runtime) as stub:
        model_error(stub, 413, body + "\nTraceback (most recent call last):\n  File ...")
        code, payload = answer_of(app.lambda_handler(request(PNG_BYTES), context))

    assert (code, payload["error"], payload["message"]) == (
        413,
        "ModelRejectedInput",
        "image is 9000x9000",
    )


@pytest.mark.parametrize(
    "body",
    [b"[" * 10_000 + b"]" * 10_000, b"{" + b",".join([b'"k": 0'] * 100_000) + b"}"],
    ids=["nested-10000-deep", "100000-keys"],
)
def test_predict_deep_or_wide_json_is_400(app, context, body):
    code, payload = answer_of(
        app.lambda_handler(request(body.decode(), "application/json", binary=False), context)
    )

    assert (code, payload["error"]) == (400, "InvalidJson")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ValidationError", "Endpoint mlops-classifier of account 123456789012 not found."),
        ("ServiceUnavailable", "Service is unavailable"),
        ("ModelNotReadyException", "Model is not ready"),
    ],
)
def test_predict_missing_or_unready_endpoint_is_503(app, context, code, message):
    with Stubber(app.runtime) as stub:
        stub.add_client_error("invoke_endpoint", code, message)
        status, payload = answer_of(app.lambda_handler(request(PNG_BYTES), context))

    assert (status, payload["error"]) == (503, "EndpointUnavailable")
    assert "mlops-classifier" in payload["message"]


def test_predict_throttled_endpoint_is_429(app, context):
    with Stubber(app.runtime) as stub:
        stub.add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded")
        status, payload = answer_of(app.lambda_handler(request(PNG_BYTES), context))

    assert (status, payload["error"]) == (429, "TooManyRequests")


def test_predict_wrong_method_is_405(app, context):
    status, payload = answer_of(app.lambda_handler(request(PNG_BYTES, method="GET"), context))

    assert (status, payload["error"]) == (405, "MethodNotAllowed")


def test_predict_unknown_path_is_404(app, context):
    status, payload = answer_of(app.lambda_handler(request(PNG_BYTES, path="/admin"), context))

    assert (status, payload["error"]) == (404, "NotFound")


def test_predict_never_logs_image_bytes(app, context, capsys):
    secret_image = PNG_BYTES + b"SECRET-PIXELS" * 10
    with Stubber(app.runtime) as stub:
        model_answer(stub, "image/png", secret_image)
        app.lambda_handler(request(secret_image), context)

    logged = capsys.readouterr()
    assert b64(secret_image)[:40] not in logged.out + logged.err
    assert "SECRET-PIXELS" not in logged.out + logged.err


def emf_metrics(output: str) -> list[tuple[str, list[dict]]]:
    """Every metric Powertools printed, as CloudWatch extracts them from EMF lines."""
    found = []
    for line in output.splitlines():
        found += emf.metric_data(line)
    return found


def metric_values(found, name: str, dimensions: dict[str, str]) -> list[float]:
    return [
        datum["Value"]
        for _, data in found
        for datum in data
        if datum["MetricName"] == name
        and {d["Name"]: d["Value"] for d in datum["Dimensions"]} == dimensions
    ]


@pytest.mark.parametrize(("probability", "low"), [(0.31, 1.0), (0.9, 0.0)])
def test_predict_counts_low_confidence_answers_per_model(app, context, capsys, probability, low):
    answer = {**ANSWER, "model": "mlops-digits-train-7", "top_k": [{"probability": probability}]}
    data = json.dumps(answer).encode()
    with Stubber(app.runtime) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"},
        )
        status, _ = answer_of(app.lambda_handler(request(PNG_BYTES), context))

    found = emf_metrics(capsys.readouterr().out)
    assert status == 200
    assert {namespace for namespace, _ in found} == {"mlops"}
    per_model = {"service": "predict", "Model": "mlops-digits-train-7"}
    assert metric_values(found, "LowConfidenceAnswers", per_model) == [low]
    assert metric_values(found, "Answers", per_model) == [1.0]
    # The service-wide series, for dashboards.
    assert metric_values(found, "LowConfidenceAnswers", {"service": "predict"}) == [low]


def test_predict_keeps_the_models_monitoring_embedding_out_of_the_api_answer(app, context):
    answer = {**ANSWER, "embedding": [0.5] * 16}
    data = json.dumps(answer).encode()
    with Stubber(app.runtime) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"},
        )
        status, body = answer_of(app.lambda_handler(request(PNG_BYTES), context))

    assert status == 200
    assert "embedding" not in body
    assert body["label"] == ANSWER["label"]
