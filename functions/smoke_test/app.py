"""Send one real test image to the freshly deployed endpoint and check the answer's shape.

The image was chosen by validate_dataset among the test images that decoded completely as
plain 8-bit RGB or grayscale JPEG/PNG, so the request goes through the same decoding,
resizing and normalization as user traffic. A wrong label on one image is recorded but does
not fail the run (accuracy was judged by the gate); neither does a 4xx from the model
container, which says the input was refused, not that the model is broken (recorded as
``input_rejected``). A 5xx or any other error, a non-JSON answer or an answer without
class_index / label / top_k fails the run.
"""

from __future__ import annotations

import json
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pipeline_common.aws import aws_call, client, error_code, error_message
from pipeline_common.config import CommonSettings
from pipeline_common.errors import SmokeTestFailed
from pipeline_common.kit import count, logger, step
from pipeline_common.models import InputRejection, SampleImage, SmokeTestResult, StepModel
from pipeline_common.records import SMOKE_TEST, record_key
from pipeline_common.s3io import s3_uri, write_json

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
runtime = client("sagemaker-runtime")

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


class SmokeTestInput(StepModel):
    execution_name: str
    endpoint_name: str
    sample_image: SampleImage


def content_type_for(key: str) -> str:
    return CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), "application/x-image")


class InputRejected(Exception):
    """The model container answered 4xx: the input was refused, the model did not fail."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def rejected_input(error: ClientError) -> InputRejected | None:
    """A ModelError carrying the container's 4xx status, else None."""
    if error_code(error) != "ModelError":
        return None
    status = int(error.response.get("OriginalStatusCode", 0) or 0)
    if not 400 <= status < 500:
        return None
    message = str(error.response.get("OriginalMessage", "") or error_message(error))
    return InputRejected(status, message[:500])


def invoke(endpoint: str, body: bytes, content_type: str) -> tuple[dict[str, Any], float]:
    """One InvokeEndpoint; returns the parsed answer and the latency in milliseconds."""
    started = time.perf_counter()
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint, ContentType=content_type, Accept="application/json", Body=body
        )
        raw = response["Body"].read()
    except ClientError as e:
        rejected = rejected_input(e)
        if rejected is not None:
            raise rejected from e
        raise SmokeTestFailed(
            f"endpoint {endpoint} failed the smoke test: {error_code(e)}: {error_message(e)}. "
            f"See /aws/sagemaker/Endpoints/{endpoint} in CloudWatch Logs"
        ) from e
    latency = (time.perf_counter() - started) * 1000
    try:
        return json.loads(raw), latency
    except ValueError as e:
        raise SmokeTestFailed(f"endpoint {endpoint} answered non-JSON: {raw[:200]!r}") from e


def check_answer(endpoint: str, answer: Any) -> None:
    """The answer must carry class_index (int), label (str) and a non-empty top_k list."""
    problems = []
    if not isinstance(answer, dict):
        problems.append("the answer is not a JSON object")
    else:
        if not isinstance(answer.get("class_index"), int):
            problems.append("class_index is missing or not an integer")
        if not isinstance(answer.get("label"), str):
            problems.append("label is missing or not a string")
        top_k = answer.get("top_k")
        if not isinstance(top_k, list) or not top_k:
            problems.append("top_k is missing or empty")
    if problems:
        raise SmokeTestFailed(
            f"endpoint {endpoint} answered {json.dumps(answer)[:300]}: {'; '.join(problems)} "
            f"(docs/contracts.md, Inference)"
        )


def input_rejected_result(
    event: SmokeTestInput, image: SampleImage, rejected: InputRejected
) -> SmokeTestResult:
    """The record of a smoke test whose image the container refused (4xx): not a failure."""
    logger.warning(
        {
            "operation": "smoke-test",
            "endpoint": event.endpoint_name,
            "image": image.key,
            "input_rejected": rejected.status,
            "message": rejected.message,
        }
    )
    count("SmokeTestsInputRejected")
    return SmokeTestResult(
        endpoint_name=event.endpoint_name,
        image_key=image.key,
        expected_class_index=image.class_index,
        predicted_class_index=None,
        label=None,
        correct=None,
        input_rejected=InputRejection(status=rejected.status, message=rejected.message),
        latency_ms=None,
    )


@step(SmokeTestInput)
def lambda_handler(event: SmokeTestInput, context: LambdaContext) -> SmokeTestResult:
    common = CommonSettings.from_env()
    image = event.sample_image
    with aws_call("GetObject", s3_uri(common.data_bucket, image.key)):
        body = s3.get_object(Bucket=common.data_bucket, Key=image.key)["Body"].read()
    key = record_key(event.execution_name, SMOKE_TEST)
    try:
        answer, latency = invoke(event.endpoint_name, body, content_type_for(image.key))
    except InputRejected as rejected:
        result = input_rejected_result(event, image, rejected)
        with aws_call("PutObject", s3_uri(common.artifacts_bucket, key)):
            write_json(s3, common.artifacts_bucket, key, result.model_dump(mode="json"))
        return result
    check_answer(event.endpoint_name, answer)
    result = SmokeTestResult(
        endpoint_name=event.endpoint_name,
        image_key=image.key,
        expected_class_index=image.class_index,
        predicted_class_index=answer["class_index"],
        label=answer["label"],
        correct=answer["class_index"] == image.class_index,
        latency_ms=round(latency, 1),
    )
    # The record keeps the whole answer, in the shape it had before the output model.
    record = {**result.model_dump(mode="json", exclude={"input_rejected"}), "answer": answer}
    with aws_call("PutObject", s3_uri(common.artifacts_bucket, key)):
        write_json(s3, common.artifacts_bucket, key, record)
    logger.info({"operation": "smoke-test", **result.model_dump(exclude={"input_rejected"})})
    count("SmokeTestsPassed")
    return result
