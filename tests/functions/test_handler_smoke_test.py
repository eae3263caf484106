"""smoke_test: one real test image through the new endpoint."""

from __future__ import annotations

import io
import json

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from pipeline_common.errors import SmokeTestFailed

from tests.functions.handler_helpers import GOOD_PNG, load_event, upload_dataset

EXECUTION = "digits-0123456789abcdef"
ANSWER = {
    "class_index": 0,
    "label": "zero",
    "class_name": "000.zero",
    "top_k": [{"class_index": 0, "label": "zero", "probability": 0.97}],
}


@pytest.fixture
def app(load_handler, buckets):
    upload_dataset(buckets.s3, buckets.data)
    return load_handler("smoke_test")


def body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def event() -> dict:
    return {
        "execution_name": EXECUTION,
        "endpoint_name": "mlops-classifier",
        "sample_image": load_event("validated_dataset.json")["sample_image"],
    }


def test_smoke_test_passes_on_a_well_formed_answer(app, buckets, context):
    with Stubber(app.runtime) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": body(json.dumps(ANSWER).encode()), "ContentType": "application/json"},
            {
                "EndpointName": "mlops-classifier",
                "ContentType": "image/png",
                "Accept": "application/json",
                "Body": GOOD_PNG,
            },
        )
        result = app.lambda_handler(event(), context)

    assert result["correct"] is True
    assert result["label"] == "zero"
    stored = buckets.s3.get_object(
        Bucket=buckets.artifacts, Key=f"runs/{EXECUTION}/smoke_test.json"
    )
    assert json.loads(stored["Body"].read())["answer"] == ANSWER


def test_smoke_test_wrong_label_is_recorded_not_failed(app, buckets, context):
    wrong = {**ANSWER, "class_index": 1, "label": "one"}
    with Stubber(app.runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": body(json.dumps(wrong).encode())})
        result = app.lambda_handler(event(), context)

    assert result["correct"] is False


def test_smoke_test_model_error_fails(app, buckets, context):
    with Stubber(app.runtime) as stub:
        stub.add_client_error(
            "invoke_endpoint",
            "ModelError",
            "Received server error (500) from primary",
            http_status_code=424,
            response_meta={},
        )
        with pytest.raises(SmokeTestFailed, match="ModelError: Received server error"):
            app.lambda_handler(event(), context)


def model_error(stub: Stubber, status: int) -> None:
    """SageMaker's answer when the container says `status`: 424 with the original status."""
    stub.add_client_error(
        "invoke_endpoint",
        "ModelError",
        f"Received client error ({status}) from primary",
        http_status_code=424,
        modeled_fields={
            "OriginalStatusCode": status,
            "OriginalMessage": '{"message": "image is truncated"}',
        },
    )


@pytest.mark.parametrize("status", [400, 413, 415])
def test_smoke_test_input_error_from_the_model_is_not_a_failure(app, buckets, context, status):
    with Stubber(app.runtime) as stub:
        model_error(stub, status)
        result = app.lambda_handler(event(), context)

    assert result["correct"] is None
    assert result["input_rejected"]["status"] == status
    stored = buckets.s3.get_object(
        Bucket=buckets.artifacts, Key=f"runs/{EXECUTION}/smoke_test.json"
    )
    assert json.loads(stored["Body"].read())["input_rejected"]["status"] == status


@pytest.mark.parametrize("status", [500, 502, 503])
def test_smoke_test_server_error_from_the_model_fails(app, buckets, context, status):
    with Stubber(app.runtime) as stub:
        model_error(stub, status)
        with pytest.raises(SmokeTestFailed, match=rf"\({status}\)"):
            app.lambda_handler(event(), context)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"<html>oops</html>", "non-JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            json.dumps({"class_index": "0", "label": "zero", "top_k": []}).encode(),
            "class_index is missing",
        ),
        (json.dumps({"class_index": 0, "label": "zero"}).encode(), "top_k is missing"),
    ],
)
def test_smoke_test_malformed_answer_fails(app, buckets, context, answer, problem):
    with Stubber(app.runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": body(answer)})
        with pytest.raises(SmokeTestFailed, match=problem):
            app.lambda_handler(event(), context)
