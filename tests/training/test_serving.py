"""inference.py round trip on the model train.py saved, and every bad-input path."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from training import inference
from training.inference import InputError


@pytest.fixture(scope="module")
def model(trained):
    return inference.model_fn(str(trained.model_dir))


@pytest.fixture(scope="module")
def digit(digits_dir) -> Image.Image:
    path = sorted((digits_dir / "test" / "003.three").glob("*.png"))[0]
    return Image.open(path).convert("RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgba_png(digit: Image.Image) -> bytes:
    """Ink opaque, paper fully transparent (and black underneath, as many encoders leave it)."""
    rgba = digit.convert("RGBA")
    pixels = [(0, 0, 0, 0) if p[0] > 200 else (p[0], p[1], p[2], 255) for p in rgba.getdata()]
    rgba.putdata(pixels)
    return encode(rgba, "PNG")


def variants(digit: Image.Image) -> dict[str, tuple[bytes, str]]:
    return {
        "png with alpha": (rgba_png(digit), "image/png"),
        "grayscale jpeg": (encode(digit.convert("L"), "JPEG", quality=95), "image/jpeg"),
        "cmyk jpeg": (encode(digit.convert("CMYK"), "JPEG", quality=95), "application/x-image"),
        "palette png": (encode(digit.convert("P"), "PNG"), "application/octet-stream"),
        "16-bit png": (encode(digit.convert("L").convert("I;16"), "PNG"), "image/png"),
    }


def predict(model, body, content_type="image/png", accept="application/json") -> dict:
    answer, content = inference.encode_response(
        inference.predict(inference.decode_request(body, content_type), model), accept
    )
    assert content == "application/json"
    return json.loads(answer)


def check_answer(answer: dict, classes: list[str]) -> None:
    assert 0 <= answer["class_index"] < len(classes)
    assert answer["class_name"] == classes[answer["class_index"]]
    assert answer["label"] == classes[answer["class_index"]].split(".", 1)[1]
    assert answer["top_k"][0]["class_index"] == answer["class_index"]
    probabilities = [entry["probability"] for entry in answer["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probabilities) and len(probabilities) == 3


def test_model_fn_loads_what_train_saved(model, trained):
    assert model.info["model"] == "resnet18"
    assert model.classes[3] == "003.three"
    assert not model.network.training


@pytest.mark.parametrize(
    "kind", ["png with alpha", "grayscale jpeg", "cmyk jpeg", "palette png", "16-bit png"]
)
def test_predict_any_image_mode_gives_a_valid_class(model, digit, kind):
    body, content_type = variants(digit)[kind]
    check_answer(predict(model, body, content_type), model.classes)


def test_decode_request_converts_every_mode_to_rgb_of_the_same_digit(digit):
    """All encodings of one digit decode to (nearly) the same RGB picture: alpha over white."""
    reference = inference.decode_request(encode(digit, "PNG"), "image/png")
    for kind, (body, content_type) in variants(digit).items():
        image = inference.decode_request(body, content_type)
        assert image.mode == "RGB" and image.size == digit.size, kind
        diff = max(abs(a - b) for a, b in zip(image.tobytes(), reference.tobytes(), strict=True))
        assert diff <= 80, f"{kind} differs by {diff}"


def test_predict_json_base64_body(model, digit):
    png = encode(digit, "PNG")
    body = json.dumps({"image": base64.b64encode(png).decode()})
    direct = predict(model, png)
    assert predict(model, body, "application/json") == direct
    data_url = json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()})
    assert predict(model, data_url.encode(), "application/json; charset=utf-8") == direct


def test_predict_matches_the_evaluation_transform(model, trained, digit):
    """Serving uses model_info.json's sizes with the same function evaluation used."""
    expected = inference.build_eval_transform(
        model.info["image_size"], model.info["resize_size"], model.info["mean"], model.info["std"]
    )(digit)
    assert model.transform(digit).equal(expected)
    assert expected.shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"", "image/png", 400, "empty"),
        (None, "image/jpeg", 400, "empty"),
        (b"hello, I am text", "image/jpeg", 400, "not a readable image"),
        ("plain text body", "application/octet-stream", 400, "not a readable image"),
        (b"\x89PNG", "image/png", 400, "not a readable image"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"picture": "abc"}', "application/json", 400, '"image"'),
        (b'{"image": "***"}', "application/json", 400, "not valid base64"),
        (b"GIF89a", "text/plain", 415, "unsupported content type"),
        (b"GIF89a", None, 415, "unsupported content type"),
    ],
)
def test_decode_request_rejects_bad_requests(body, content_type, status, words):
    with pytest.raises(InputError) as error:
        inference.decode_request(body, content_type)
    assert error.value.status_code == status
    assert words in error.value.message


def test_decode_request_rejects_truncated_jpeg(digit):
    jpeg = encode(digit.resize((64, 64)), "JPEG", quality=95)
    with pytest.raises(InputError) as error:
        inference.decode_request(jpeg[: len(jpeg) // 2], "image/jpeg")
    assert error.value.status_code == 400
    assert "truncated or corrupt" in error.value.message


def test_decode_request_rejects_body_over_the_size_limit():
    body = b"\xff\xd8" + bytes(inference.MAX_BODY_BYTES)
    with pytest.raises(InputError) as error:
        inference.decode_request(body, "image/jpeg")
    assert error.value.status_code == 413
    assert str(inference.MAX_BODY_BYTES) in error.value.message


def test_decode_request_refuses_decompression_bomb_before_decoding():
    """A few-kB PNG that declares 64 million pixels is refused from its header."""
    bomb = encode(Image.new("1", (8000, 8000)), "PNG", optimize=True)
    assert len(bomb) < 100_000
    with pytest.raises(InputError) as error:
        inference.decode_request(bomb, "image/png")
    assert error.value.status_code == 413
    assert "8000x8000" in error.value.message


def test_encode_response_refuses_an_accept_it_cannot_produce(model, digit):
    prediction = inference.predict(
        inference.decode_request(encode(digit, "PNG"), "image/png"), model
    )
    for accept in (None, "*/*", "application/json", "text/html, application/json;q=0.9"):
        assert inference.encode_response(prediction, accept)[1] == "application/json"
    with pytest.raises(InputError) as error:
        inference.encode_response(prediction, "text/csv")
    assert error.value.status_code == 406


def test_label_drops_the_index_prefix():
    assert inference.label_of("003.three") == "three"
    assert inference.label_of("117.Norwegian_buhund") == "Norwegian_buhund"
    assert inference.label_of("plain") == "plain"


def test_saved_code_serves_the_model_on_its_own(trained, digits_dir, tmp_path):
    """model dir/code/inference.py needs nothing from the training folder (the archive serves
    itself): run it from a folder where `training` cannot be imported."""
    image = sorted((digits_dir / "test" / "005.five").glob("*.png"))[0]
    script = trained.model_dir / "code" / "inference.py"
    done = subprocess.run(
        [sys.executable, str(script), str(trained.model_dir), str(image)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (
        answer["class_name"]
        == json.loads((trained.model_dir / "classes.json").read_text())[answer["class_index"]]
    )


class RecordingContext:
    """The one method of TorchServe's context that inference.py calls."""

    def __init__(self) -> None:
        self.status: tuple[int, str] | None = None

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status = (code, phrase)


def test_transform_fn_answers_bad_input_through_the_context(model):
    """No exception (the toolkit would append a traceback): status on the context, JSON body."""
    context = RecordingContext()
    body, content_type = inference.transform_fn(model, b"not an image", "image/png", None, context)
    assert context.status == (400, "Bad Request")
    assert content_type == "application/json"
    assert json.loads(body) == {
        "error": "NotAnImage",
        "message": "body is not a readable image (supported formats: JPEG, PNG, GIF, BMP, "
        "WEBP, TIFF)",
    }


def test_transform_fn_without_a_context_raises_the_toolkits_error(model):
    """An older toolkit passes no context: its own error type carries the status."""
    from sagemaker_inference.errors import GenericInferenceToolkitError

    with pytest.raises(GenericInferenceToolkitError) as raised:
        inference.transform_fn(model, b"", "image/png", None)
    assert raised.value.status_code == 400
    assert json.loads(raised.value.message)["error"] == "EmptyBody"


def test_transform_fn_predicts_a_good_image(model, digit):
    context = RecordingContext()
    body, content_type = inference.transform_fn(
        model, encode(digit, "PNG"), "image/png", "application/json", context
    )
    assert context.status is None and content_type == "application/json"
    check_answer(json.loads(body), model.classes)


def test_wide_modes_are_converted_in_strips_exactly():
    """A 16-bit image taller than one strip converts as one whole-image scaling would."""
    import numpy as np

    width, height = 300, 2 * inference.STRIP_PIXELS // 300 + 7
    values = (np.arange(width * height, dtype=np.uint32) * 7919 % 65536).astype(np.uint16)
    image = Image.frombytes("I;16", (width, height), values.astype("<u2").tobytes())
    assert len(inference._strips(image)) == 3
    expected = np.clip(values.astype(np.float32) * (255.0 / 65535.0), 0, 255).astype(np.uint8)
    converted = np.asarray(inference.to_rgb(image))
    assert converted.shape == (height, width, 3)
    assert np.array_equal(converted[:, :, 0].ravel(), expected)


def test_a_large_baseline_jpeg_is_decoded_at_a_reduced_scale():
    jpeg = encode(Image.new("RGB", (6000, 4000), (10, 120, 200)), "JPEG", quality=50)
    image = inference.decode_request(jpeg, "image/jpeg")
    assert image.size == (3000, 2000)  # 24 Mpx at 1/2: 6 Mpx, under MAX_IMAGE_PIXELS


def test_deep_or_wide_json_is_refused_before_parsing():
    for body in (b"[" * 10_000 + b"]" * 10_000, b"{" + b",".join([b'"k": 0'] * 1000) + b"}"):
        with pytest.raises(InputError) as error:
            inference.decode_request(body, "application/json")
        assert (error.value.status_code, error.value.error) == (400, "InvalidJson")


def test_serving_content_types_are_the_ones_the_registry_declares():
    """A registered model package version lists what this model server accepts."""
    from pipeline_common import registry

    assert registry.SUPPORTED_CONTENT_TYPES == inference.SUPPORTED_CONTENT_TYPES


def test_model_writes_a_monitoring_baseline_the_server_projects_with(model, trained, digits_dir):
    """baseline.json (model dir and output data) holds the validation split as the model sees
    it; the model server answers each request with the same projected embedding the baseline
    recorded for that image, so production and baseline are comparable number for number."""
    from pipeline_common.baseline import BASELINE_FILE, PROJECTION_DIM

    record = json.loads((trained.model_dir / BASELINE_FILE).read_text())
    valid = sorted(
        (p for p in (digits_dir / "valid").rglob("*") if p.is_file()),
        key=lambda p: (p.parent.name, p.name),
    )

    assert (trained.output_dir / BASELINE_FILE).read_text() == (
        trained.model_dir / BASELINE_FILE
    ).read_text()
    assert inference.BASELINE_FILE == BASELINE_FILE
    assert record["count"] == len(valid) == sum(record["prediction_counts"])
    components = record["embedding"]["components"]
    assert len(components) == min(PROJECTION_DIM, len(valid) - 1)
    assert {len(row) for row in components} == {512}  # resnet18's penultimate features
    assert len(record["embedding"]["sample"]) == len(record["confidence"]) == len(valid)
    assert all(0 < c <= 1 for c in record["confidence"])
    assert all(0 <= b <= 1 for b in record["images"]["brightness"])
    answer = inference.predict(Image.open(valid[0]).convert("RGB"), model)
    assert answer["embedding"] == pytest.approx(record["embedding"]["sample"][0], abs=1e-3)
    assert len(answer["embedding"]) == len(components) + 1  # the coordinates and the residual
