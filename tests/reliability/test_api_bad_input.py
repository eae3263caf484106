"""Bad input at the HTTP API, through the real predict Lambda to a real endpoint.

Every refusal is a 4xx JSON error that names the problem; never a 5xx, never a traceback. The
endpoint is served by the real SageMaker inference toolkit (mlops/local/model_server.py), so
what it answers is what the toolkit answers on AWS. The corpus of bad images is
tests/reliability/bad_images.py (also tried in tests/aws_contract, listed in
docs/reliability.md).
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib
from typing import Any

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from .bad_images import BadImage, corpus
from .helpers import Api, assert_clean_error

pytestmark = pytest.mark.timeout(900)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid PNG header declaring width x height gray pixels, with a few rows of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def jpeg_bytes(png: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").resize((64, 64)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_api_valid_png_is_predicted(api: Api, digit_png: bytes) -> None:
    response = api.post(digit_png)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert 0 <= answer["class_index"] < 10
    assert answer["top_k"]


def test_api_empty_body_is_400(api: Api) -> None:
    document = assert_clean_error(api.post(b""), 400)
    assert document["error"] == "EmptyBody"
    assert "empty" in document["message"]


def test_api_zero_byte_image_in_json_is_400(api: Api) -> None:
    response = api.post(json.dumps({"image": ""}).encode(), content_type="application/json")

    document = assert_clean_error(response, 400)
    assert "empty" in document["message"]


def test_api_text_as_image_is_400(api: Api) -> None:
    document = assert_clean_error(api.post(b"hello, this is not a picture"), 400)
    assert document["error"] == "NotAnImage"
    assert "not a JPEG, PNG" in document["message"]


def test_api_truncated_jpeg_is_400(api: Api, digit_png: bytes) -> None:
    jpeg = jpeg_bytes(digit_png)
    response = api.post(jpeg[: len(jpeg) // 2], content_type="image/jpeg")

    document = assert_clean_error(response, 400)
    assert "truncated or corrupt" in document["message"]


def test_api_png_bomb_is_refused_before_decoding(api: Api) -> None:
    bomb = png_bomb()
    assert len(bomb) < 100_000  # a small file declaring 3.6 billion pixels

    document = assert_clean_error(api.post(bomb))
    assert document["error"] == "ModelRejectedInput"
    assert "too large" in document["message"] or "pixels" in document["message"]


def png_of_size(size: int, seed: int = 0) -> bytes:
    """A valid noise PNG of exactly `size` bytes (a private ancillary chunk fills the rest)."""
    side = int(((size - 2048) / 3) ** 0.5) - 8
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, "PNG", compress_level=0)
    image = buffer.getvalue()
    filler = size - len(image) - 12  # a chunk is length + type + data + CRC
    assert filler >= 0, (size, len(image))
    ihdr_end = 8 + 12 + 13
    return image[:ihdr_end] + png_chunk(b"prVt", b"\x00" * filler) + image[ihdr_end:]


def test_api_image_of_4_mib_is_predicted(api: Api) -> None:
    """4 MiB is predict's own limit; base64-encoded (5.6 MB) it fits Lambda's 6 MB."""
    image = png_of_size(4 * 1024 * 1024)

    response = api.post(image)

    assert response.status_code == 200, response.text[:500]
    assert 0 <= response.json()["class_index"] < 10


def test_api_image_over_predicts_limit_is_predicts_413(api: Api) -> None:
    """4.3 MiB still fits Lambda's 6 MB base64-encoded: predict itself refuses it."""
    document = assert_clean_error(api.post(png_of_size(4_500_000)), 413)
    assert document["error"] == "PayloadTooLarge"
    assert "limit" in document["message"]


def test_api_image_over_the_lambda_limit_is_api_gateways_413(api: Api) -> None:
    """5 MiB is about 7 MB base64-encoded in the event: Lambda refuses the invocation and API
    Gateway answers 413 "Request Too Long" (docs/limits.md); the function never runs."""
    document = assert_clean_error(api.post(png_of_size(5 * 1024 * 1024)), 413)
    assert document == {"message": "Request Too Long"}


def test_api_chunked_upload_is_predicted(api: Api, digit_png: bytes) -> None:
    pieces = (digit_png[i : i + 64] for i in range(0, len(digit_png), 64))

    response = api.post(pieces)  # a generator: requests sends Transfer-Encoding: chunked

    assert response.status_code == 200, response.text
    assert 0 <= response.json()["class_index"] < 10


def test_api_body_over_the_gateway_limit_is_413(api: Api, digit_png: bytes) -> None:
    document = assert_clean_error(api.post(digit_png + b"\x00" * (11 * 1024 * 1024)), 413)
    assert "Too Long" in document["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "image/gif+fake", None])
def test_api_wrong_content_type_is_415(
    api: Api, digit_png: bytes, content_type: str | None
) -> None:
    document = assert_clean_error(api.post(digit_png, content_type=content_type), 415)
    assert document["error"] == "UnsupportedMediaType"
    assert "not supported" in document["message"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_api_wrong_method_is_403_like_api_gateway(api: Api, method: str) -> None:
    """REST APIs answer an undeclared method as "Missing Authentication Token" (403)."""
    document = assert_clean_error(api.post(b"", method=method), 403)
    assert document["message"] == "Missing Authentication Token"


def test_api_unknown_path_is_403_like_api_gateway(api: Api, digit_png: bytes) -> None:
    document = assert_clean_error(api.post(digit_png, path="/predictions"), 403)
    assert document["message"] == "Missing Authentication Token"


@pytest.mark.parametrize(
    "body",
    [
        b'{"image": "!!!not base64!!!"}',
        b'{"image": "abc"}',
        b'{"picture": "aGVsbG8="}',
        b'["image"]',
        b"{not json",
        b"\xff\xfe\x00garbage",
    ],
)
def test_api_bad_json_body_is_400(api: Api, body: bytes) -> None:
    document = assert_clean_error(api.post(body, content_type="application/json"), 400)
    assert document["error"] == "InvalidJson"
    assert "base64" in document["message"]


def test_api_json_with_base64_of_text_is_400(api: Api) -> None:
    body = json.dumps({"image": base64.b64encode(b"plain text").decode()}).encode()

    document = assert_clean_error(api.post(body, content_type="application/json"), 400)
    assert document["error"] == "NotAnImage"


def test_api_json_with_base64_png_is_predicted(api: Api, digit_png: bytes) -> None:
    body = json.dumps({"image": base64.b64encode(digit_png).decode()}).encode()

    response = api.post(body, content_type="application/json")

    assert response.status_code == 200, response.text


def test_api_image_signature_with_garbage_behind_is_400(api: Api) -> None:
    document = assert_clean_error(api.post(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64))
    assert document["error"] == "ModelRejectedInput"


def test_api_without_api_key_is_403(api: Api, digit_png: bytes) -> None:
    document = assert_clean_error(api.post(digit_png, key=None), 403)
    assert document["message"] == "Forbidden"


def test_api_with_wrong_api_key_is_403(api: Api, digit_png: bytes) -> None:
    document = assert_clean_error(api.post(digit_png, key="not-the-key"), 403)
    assert document["message"] == "Forbidden"


@pytest.mark.parametrize("image", corpus(), ids=lambda image: image.kind)
def test_api_refuses_every_bad_image_of_the_corpus(api: Api, image: BadImage) -> None:
    assert_clean_error(api.post(image.body, content_type=image.content_type), image.api)


@pytest.mark.parametrize("image", corpus(), ids=lambda image: image.kind)
def test_endpoint_refuses_every_bad_image_of_the_corpus(
    serving_cloud: Any, image: BadImage
) -> None:
    """InvokeEndpoint straight to the model: ModelError with the 4xx and the JSON body."""
    runtime = serving_cloud.target.client("sagemaker-runtime")
    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint(
            EndpointName=serving_cloud.endpoint, ContentType=image.content_type, Body=image.body
        )
    error = raised.value.response
    assert error["Error"]["Code"] == "ModelError", error["Error"]
    assert error["OriginalStatusCode"] == image.endpoint, error["OriginalMessage"][:500]
    assert "Traceback" not in error["OriginalMessage"]
    document = json.loads(error["OriginalMessage"])
    assert document["error"] and document["message"]
