"""POST /predict: raw image bytes in, the model's JSON answer out.

API Gateway (REST API with binary media types) hands image bodies over base64-encoded with
``isBase64Encoded: true``; ``application/json`` bodies carry ``{"image": "<base64>"}``. The
function checks the request before spending an endpoint call (empty, too large, wrong
content type, not an image), forwards it with InvokeEndpoint and answers the model's JSON
(``class_index``, ``label``, ``top_k``). Every refusal is a JSON ``{"error", "message"}``
with a 4xx status; a missing or not yet InService endpoint is a 503. Image bytes are never
logged.

``?explain=true`` asks the model for a Grad-CAM heatmap beside the prediction: the wish
travels to the model server in InvokeEndpoint's ``CustomAttributes`` (``explain=true``), which
SageMaker forwards verbatim to the container, and the answer gains ``"explanation"``
(training/explain.py). Any other value than true/false (1/0, yes/no) is a 400.

Every answer is also a model-quality signal (pipeline_common.quality): metrics ``Answers``
(1) and ``LowConfidenceAnswers`` (1 when the top probability is below
LOW_CONFIDENCE_THRESHOLD, else 0), once with the function's default dimension
(service=predict, for dashboards) and once more with ``Model`` = the model that answered:
an endpoint update arms an alarm on the new model's share, relative to the old model's.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from botocore.config import Config
from botocore.exceptions import ClientError
from pipeline_common.aws import (
    CLIENT_CONFIG,
    THROTTLING_CODES,
    client,
    error_code,
    error_message,
)
from pipeline_common.config import env_float, env_int, env_str
from pipeline_common.errors import ConfigurationError
from pipeline_common.quality import (
    ANSWERS_METRIC,
    LOW_CONFIDENCE_METRIC,
    MODEL_DIMENSION,
    model_value,
)
from pipeline_common.tracing import traced

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()
app = APIGatewayRestResolver()
# InvokeEndpoint waits at most INVOKE_ATTEMPTS x (connect + read) plus botocore's standard
# backoff (under 1 s after the first attempt): 2 x (1 + 10) + 1 = 23 s, under the function's
# 25 s Timeout (template.yaml), so the call ends, and predict can answer, before Lambda stops
# it and before API Gateway's 29 s. botocore's defaults (60 s read timeout; 4 attempts with
# CLIENT_CONFIG) would outlive both.
INVOKE_CONNECT_TIMEOUT_S = 1
INVOKE_READ_TIMEOUT_S = 10
INVOKE_ATTEMPTS = 2
RUNTIME_CONFIG = CLIENT_CONFIG.merge(
    Config(
        connect_timeout=INVOKE_CONNECT_TIMEOUT_S,
        read_timeout=INVOKE_READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": INVOKE_ATTEMPTS},
    )
)
runtime = client("sagemaker-runtime", RUNTIME_CONFIG)  # built at the first InvokeEndpoint

IMAGE_CONTENT_TYPES = frozenset(
    {"image/jpeg", "image/png", "application/x-image", "application/octet-stream"}
)
JSON_CONTENT_TYPE = "application/json"
DEFAULT_MAX_IMAGE_BYTES = 4 * 1024 * 1024
DEFAULT_LOW_CONFIDENCE_THRESHOLD = 0.5
EMBEDDING_FIELD = "embedding"  # training/inference.py adds it when the model has a baseline
EXPLAIN_PARAMETER = "explain"
# InvokeEndpoint's CustomAttributes: SageMaker hands them to the container as a request header;
# training/inference.py reads explain=true there.
EXPLAIN_ATTRIBUTES = "explain=true"
TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no", ""})
UNAVAILABLE_CODES = frozenset({"ServiceUnavailable", "ModelNotReadyException", "InternalFailure"})
# The SageMaker inference toolkit appends the Python traceback to every error body it makes.
TRACEBACK_MARK = "Traceback (most recent call last):"
# {"image": "<base64>"} has one pair of braces and hardly a comma (base64 has none); far more
# is not such a body. Counting first keeps a nest 10,000 deep (RecursionError) and 500,000
# distinct keys (about 100 MB of dict) away from json.loads.
MAX_JSON_STRUCTURE = 64
IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "application/x-image"),
    (b"GIF89a", "application/x-image"),
    (b"BM", "application/x-image"),
    (b"II*\x00", "application/x-image"),
    (b"MM\x00*", "application/x-image"),
)


class RequestRejected(Exception):
    """A request the API answers with a JSON error instead of a prediction."""

    status = 400
    error = "BadRequest"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class EmptyBody(RequestRejected):
    error = "EmptyBody"


class NotAnImage(RequestRejected):
    error = "NotAnImage"


class InvalidJson(RequestRejected):
    error = "InvalidJson"


class InvalidParameter(RequestRejected):
    error = "InvalidParameter"


class PayloadTooLarge(RequestRejected):
    status = 413
    error = "PayloadTooLarge"


class UnsupportedMediaType(RequestRejected):
    status = 415
    error = "UnsupportedMediaType"


class ModelRejectedInput(RequestRejected):
    error = "ModelRejectedInput"


class TooManyRequests(RequestRejected):
    status = 429
    error = "TooManyRequests"


class ModelFailed(RequestRejected):
    status = 502
    error = "ModelFailed"


class EndpointUnavailable(RequestRejected):
    status = 503
    error = "EndpointUnavailable"


def endpoint_name() -> str:
    """ENDPOINT_NAME (template.yaml Globals); missing, a ConfigurationError naming it."""
    return env_str("ENDPOINT_NAME")


def max_image_bytes() -> int:
    return env_int("MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES, minimum=1)


def low_confidence_threshold() -> float:
    """LOW_CONFIDENCE_THRESHOLD (template parameter LowConfidenceThreshold)."""
    return env_float(
        "LOW_CONFIDENCE_THRESHOLD", DEFAULT_LOW_CONFIDENCE_THRESHOLD, minimum=0.0, maximum=1.0
    )


def top_probability(answer: Any) -> float | None:
    """The best class's probability from the model's ``top_k``; None if the answer has none."""
    with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
        return float(answer["top_k"][0]["probability"])
    return None


def record_answer_quality(answer: Any) -> None:
    """Answers and LowConfidenceAnswers, for the service and per answering model."""
    probability = top_probability(answer)
    if probability is None:
        return
    low = 1.0 if probability < low_confidence_threshold() else 0.0
    metrics.add_metric(name=ANSWERS_METRIC, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=LOW_CONFIDENCE_METRIC, unit=MetricUnit.Count, value=low)
    model = answer.get("model") if isinstance(answer, dict) else None
    if not model:
        return
    for name, value in ((ANSWERS_METRIC, 1.0), (LOW_CONFIDENCE_METRIC, low)):
        with single_metric(
            name=name,
            unit=MetricUnit.Count,
            value=value,
            namespace=metrics.namespace,
            default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name=MODEL_DIMENSION, value=model_value(str(model)))


def explain_wanted(value: str | None) -> bool:
    """The ``explain`` query parameter: absent or false -> no explanation; true -> one."""
    word = (value or "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InvalidParameter(f"explain must be true or false, not {value[:40]!r}")


def media_type(header: str | None) -> str:
    """``image/png; charset=x`` -> ``image/png``."""
    return (header or "").split(";", 1)[0].strip().lower()


def body_bytes(body: str | None, is_base64: bool) -> bytes:
    if not body:
        return b""
    return base64.b64decode(body) if is_base64 else body.encode("utf-8")


def image_from_json(raw: bytes) -> bytes:
    """``{"image": "<base64>"}`` -> the image bytes."""
    try:
        if sum(raw.count(token) for token in (b"[", b"{", b",")) > MAX_JSON_STRUCTURE:
            raise ValueError("too deeply nested or too many members")
        document = json.loads(raw)
        encoded = document["image"]
        return base64.b64decode(encoded, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as e:
        raise InvalidJson(
            'a JSON body must be {"image": "<base64-encoded JPEG or PNG>"} with valid base64'
        ) from e


def sniff_image(data: bytes) -> str:
    """The content type to forward, from the file signature; refuses non-images."""
    for signature, kind in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "application/x-image"
    raise NotAnImage("the body is not a JPEG, PNG, GIF, BMP, TIFF or WebP image")


def read_image(content_type: str, raw: bytes) -> tuple[bytes, str]:
    """Check the request and return (image bytes, content type to forward)."""
    if not raw:
        raise EmptyBody("the request body is empty; POST the image bytes")
    if content_type not in IMAGE_CONTENT_TYPES and content_type != JSON_CONTENT_TYPE:
        raise UnsupportedMediaType(
            f"content type {content_type or '(none)'!r} is not supported; use one of "
            f"{', '.join(sorted(IMAGE_CONTENT_TYPES | {JSON_CONTENT_TYPE}))}"
        )
    data = image_from_json(raw) if content_type == JSON_CONTENT_TYPE else raw
    if not data:
        raise EmptyBody("the image is empty (0 bytes)")
    limit = max_image_bytes()
    if len(data) > limit:
        raise PayloadTooLarge(f"the image has {len(data)} bytes; the limit is {limit} bytes")
    forward_type = sniff_image(data)
    return data, content_type if content_type in ("image/jpeg", "image/png") else forward_type


def container_message(original: str) -> str:
    """What the model container said, without the traceback the inference toolkit appends.

    inference.py answers a bad input with ``{"error", "message"}``; any other answer of the
    toolkit is ``message\nTraceback ...``, whose message may itself be such a JSON body.
    """
    text = original.split(TRACEBACK_MARK, 1)[0].strip()
    with contextlib.suppress(ValueError, RecursionError):
        document = json.loads(text)
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            return document["message"]
    return text.splitlines()[0] if text else ""


def model_error(error: ClientError) -> RequestRejected:
    """The model container refused or failed: pass its 4xx through, map 5xx to 502."""
    status = int(error.response.get("OriginalStatusCode", 0) or 0)
    message = container_message(str(error.response.get("OriginalMessage", "") or ""))
    if 400 <= status < 500:
        return ModelRejectedInput(
            message[:500] or f"the model refused this input ({status})", status=status
        )
    return ModelFailed(f"the model failed on this input ({status or 'no status'}): {message[:200]}")


def invocation_error(error: ClientError, endpoint: str) -> RequestRejected:
    code = error_code(error)
    if code == "ModelError":
        return model_error(error)
    if code in THROTTLING_CODES:
        return TooManyRequests("the endpoint is throttling requests; retry with backoff")
    if code in UNAVAILABLE_CODES or code.startswith("Validation"):
        return EndpointUnavailable(
            f"endpoint {endpoint} is not available ({error_message(error)}); it exists once a "
            f"pipeline run has deployed a model and answers when it is InService"
        )
    return ModelFailed(f"InvokeEndpoint failed with {code}")


def invoke(endpoint: str, data: bytes, content_type: str, explain: bool = False) -> Any:
    extra = {"CustomAttributes": EXPLAIN_ATTRIBUTES} if explain else {}
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint,
            ContentType=content_type,
            Accept=JSON_CONTENT_TYPE,
            Body=data,
            **extra,
        )
        answer = response["Body"].read()
    except ClientError as e:
        logger.warning({"operation": "InvokeEndpoint", "error_code": error_code(e)})
        raise invocation_error(e, endpoint) from e
    try:
        return json.loads(answer)
    except ValueError as e:
        raise ModelFailed("the model answered something that is not JSON") from e


def error_response(status: int, error: str, message: str) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": error, "message": message}),
    )


@app.post("/predict")
def predict() -> dict[str, Any]:
    event = app.current_event
    content_type = media_type(event.headers.get("content-type"))
    explain = explain_wanted(event.get_query_string_value(EXPLAIN_PARAMETER))
    data, forward_type = read_image(content_type, body_bytes(event.body, event.is_base64_encoded))
    answer = invoke(endpoint_name(), data, forward_type, explain)
    logger.info(
        {
            "operation": "predict",
            "bytes": len(data),
            "content_type": forward_type,
            "explain": explain,
        }
    )
    metrics.add_metric(name="Predictions", unit=MetricUnit.Count, value=1)
    record_answer_quality(answer)
    if isinstance(answer, dict):
        # The model's embedding is for monitoring (data capture keeps it with the answer);
        # the API's answer stays the prediction.
        answer.pop(EMBEDDING_FIELD, None)
    return answer


@app.exception_handler(RequestRejected)
def handle_rejected(error: RequestRejected) -> Response:
    logger.info({"operation": "predict", "status": error.status, "error": error.error})
    metrics.add_metric(name=f"Rejected{error.status}", unit=MetricUnit.Count, value=1)
    return error_response(error.status, error.error, error.message)


@app.exception_handler(ConfigurationError)
def handle_misconfigured(error: ConfigurationError) -> Response:
    """A deployment that lacks a setting: say which, without a traceback (logged in full)."""
    logger.error({"operation": "predict", "configuration_error": str(error)})
    return error_response(500, "ConfigurationError", str(error))


@app.not_found
def handle_not_found(error: NotFoundError) -> Response:
    path = app.current_event.path or ""
    if path.rstrip("/").endswith("/predict"):
        return error_response(
            405, "MethodNotAllowed", "use POST /predict with the image as the body"
        )
    return error_response(404, "NotFound", f"no route {path!r}; the API has POST /predict only")


@app.exception_handler(Exception)
def handle_unexpected(error: Exception) -> Response:
    logger.exception("unexpected error while predicting")
    return error_response(
        500, "InternalError", "the request failed unexpectedly; see the function's logs"
    )


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)


# The Tracer only where tracing is on: its SDK costs cold start (pipeline_common.tracing)
lambda_handler = logger.inject_lambda_context(
    traced(lambda_handler, logger.service), correlation_id_path=correlation_paths.API_GATEWAY_REST
)
