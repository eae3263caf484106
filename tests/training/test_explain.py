"""Grad-CAM explanations (training/explain.py, captum): what train.py records for the report,
what transform_fn answers with explain=true, and whether the heat lies on the digit."""

from __future__ import annotations

import base64
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from training import explain, inference

# The measured criterion (docs/monitoring.md, "Explanations"): on held-back digits, a Grad-CAM
# map counts as "on the digit" when its heat per pixel inside the digit's bounding box (the
# ink: pixels darker than the paper) is above its heat per pixel outside that box.
# Measured at one thread per training (how the test workers run, and the trajectory depends on
# it) over seeds 0-3: 55, 65, 90 and 85 % of the maps "on the digit", but the same maps turned
# 180 degrees scored 45, 70, 95 and 90 %. At this size (32 px, layer2) Grad-CAM does not
# localise the digit better than its own rotation does; the 70 % bound this test held before
# passed on seed 0 at two threads by luck. What holds on every seed measured is the weaker fact
# asserted here: on the median image the heat per pixel is higher inside the box (1.08, 1.09,
# 1.77, 1.34). A criterion that tells Grad-CAM from a rotated map is open work (docs/monitoring.md).
HELD_BACK_IMAGES = 20
MIN_MEDIAN_INSIDE_OUTSIDE = 1.0
INK_LEVEL = 128  # the digits are dark ink (0) on white paper (255)


class HeaderContext:
    """The part of TorchServe's context that inference.py reads: the request's headers, and the
    status it sets on a refusal."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.status: tuple[int, str] | None = None

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.headers

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status = (code, phrase)


def decoded_heatmap(explanation: dict) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap_png"])))
    image.load()
    return image


def heat_inside_ratio(digit: Image.Image, heat: np.ndarray) -> float | None:
    """Heat per pixel inside the ink's bounding box over heat per pixel outside it."""
    ink = np.asarray(digit.convert("L")) < INK_LEVEL
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows) or not len(cols):
        return None
    box = np.zeros_like(ink)
    box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    if box.all():
        return None
    inside = heat[box].sum() / box.sum()
    outside = heat[~box].sum() / (~box).sum()
    return float(inside / outside) if outside > 0 else float("inf")


# --- what train.py records (the tiny shared run: 16 px, 2 epochs) ------------------------------


def test_train_records_explanations_of_test_images_with_an_index(trained):
    folder = trained.output_dir / explain.FOLDER
    index = json.loads((folder / explain.INDEX_FILE).read_text())
    assert "error" not in index, index.get("error")
    assert index["method"] == "Grad-CAM" and index["layer"] == "layer1"  # 16 px: 4x4 cells
    assert index["test_images"] == 20
    wrong = [e for e in index["images"] if not e["correct"]]
    right = [e for e in index["images"] if e["correct"]]
    assert len(wrong) == min(index["misclassified"], explain.MAX_MISCLASSIFIED)
    assert len(right) <= explain.MAX_CORRECT
    for entry in index["images"]:
        png = trained.output_dir / entry["file"]
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == (112, 112)
        assert png.stat().st_size < 40_000
        assert entry["image"].startswith(entry["true_class"] + "/")
        assert entry["true_label"] == inference.label_of(entry["true_class"])
        assert 0.0 <= entry["confidence"] <= 1.0
        assert entry["correct"] == (entry["true_class"] == entry["predicted_class"])
    assert "[explain] Grad-CAM on layer1" in trained.stdout


def test_saved_model_code_can_explain_on_its_own(trained):
    code = trained.model_dir / "code"
    assert (code / "explain.py").is_file() and (code / "captum" / "attr").is_dir()
    pins = [
        line for line in (code / "requirements.txt").read_text().splitlines() if line[:1].isalpha()
    ]
    # pip installs these at the endpoint's start; captum itself is the copy in code/captum
    assert sorted(pin.split("==")[0] for pin in pins) == ["matplotlib", "tqdm"]


def test_a_failed_explanation_is_recorded_and_never_raises(tmp_path):
    index = explain.record_explanations(tmp_path / "no-model", [], tmp_path)
    assert index["images"] == [] and "FileNotFoundError" in index["error"]
    assert json.loads((tmp_path / "explanations" / "index.json").read_text()) == index


# --- the endpoint: CustomAttributes explain=true ---------------------------------------------


@pytest.fixture(scope="module")
def model(trained):
    return inference.model_fn(str(trained.model_dir))


@pytest.fixture(scope="module")
def digit_png(digits_dir) -> bytes:
    return sorted((digits_dir / "test" / "003.three").glob("*.png"))[0].read_bytes()


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ("explain=true", True),
        ("trace=abc; Explain = TRUE", True),
        ("explain=1,trace=x", True),
        ("explain=false", False),
        ("explainer=true", False),
        ("", False),
    ],
)
def test_explanation_is_requested_by_custom_attributes(attributes, expected):
    context = HeaderContext({"X-Amzn-Sagemaker-Custom-Attributes": attributes})
    assert inference.explanation_requested(context) is expected


def test_transform_fn_with_explain_adds_a_heatmap_of_the_input_size(model, digit_png):
    plain_body, _ = inference.transform_fn(model, digit_png, "image/png", None, HeaderContext({}))
    context = HeaderContext({"X-Amzn-SageMaker-Custom-Attributes": "explain=true"})
    body, content_type = inference.transform_fn(model, digit_png, "image/png", None, context)
    answer, plain = json.loads(body), json.loads(plain_body)
    assert content_type == "application/json" and context.status is None
    explanation = answer.pop("explanation")
    assert answer == plain  # the prediction is the same with or without the explanation
    assert "explanation" not in plain
    heatmap = decoded_heatmap(explanation)
    side = model.info["image_size"]
    assert heatmap.format == "PNG" and heatmap.mode == "L" and heatmap.size == (side, side)
    assert (explanation["width"], explanation["height"]) == (side, side)
    assert explanation["method"] == "Grad-CAM" and explanation["layer"] == "layer1"
    assert explanation["target_class"] == plain["class_index"]
    # 16x16 resized to 18 (the 256/224 proportion), centre 16 used: [1, 1, 15, 15] of the image
    assert explanation["box"] == [1, 1, 15, 15]
    assert np.asarray(heatmap).max() == 255  # normalised: the hottest pixel is white


def test_transform_fn_without_captum_answers_501_and_still_predicts(model, digit_png, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # `from captum.attr import` fails
    context = HeaderContext({"x-amzn-sagemaker-custom-attributes": "explain=true"})
    body, _ = inference.transform_fn(model, digit_png, "image/png", None, context)
    assert context.status == (501, "Not Implemented")
    assert json.loads(body)["error"] == "ExplanationUnavailable"
    plain, _ = inference.transform_fn(model, digit_png, "image/png", None, HeaderContext({}))
    assert "class_index" in json.loads(plain)


# --- the measured criterion: the heat lies on the digit --------------------------------------


@pytest.mark.slow
def test_grad_cam_heat_falls_inside_the_digits_bounding_box(tmp_path, train_runner):
    """A 32-px resnet18 trained to high accuracy on the digits; on 20 held-back test digits
    (two per class), most Grad-CAM maps put more heat per pixel inside the digit's bounding
    box than outside it. Prints the measured share."""
    from mlops.sample_data import write_digits

    write_digits(tmp_path / "digits", size=32, max_per_class=80, seed=0)
    run = train_runner(
        tmp_path / "run",
        tmp_path / "digits",
        args={"epochs": "8", "batch-size": "32", "image-size": "32", "lr": "0.02"},
        debug=False,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    model = inference.model_fn(str(run.model_dir))
    test_dir = tmp_path / "digits" / "test"
    images = [
        path
        for folder in sorted(test_dir.iterdir())
        for path in sorted(folder.glob("*.png"))[: HELD_BACK_IMAGES // 10]
    ]
    assert len(images) == HELD_BACK_IMAGES
    ratios, rotated, centred, correct = [], [], [], 0
    side = model.info["image_size"]
    yy, xx = np.mgrid[0:side, 0:side] - (side - 1) / 2
    blob = np.exp(-(yy**2 + xx**2) / (2 * (side / 4) ** 2))  # heat that ignores the image
    for path in images:
        image = inference.open_image(path.read_bytes())
        prediction = inference.predict(image, model)
        correct += prediction["class_name"] == path.parent.name
        heatmap = decoded_heatmap(
            explain.explain_prediction(image, model, prediction["class_index"])
        )
        heat = np.asarray(heatmap, dtype=np.float64)
        crop = explain.input_crop(image, model)
        ratios.append(heat_inside_ratio(crop, heat))
        rotated.append(heat_inside_ratio(crop, heat[::-1, ::-1]))
        centred.append(heat_inside_ratio(crop, blob))
    measured = [r for r in ratios if r is not None]
    share = sum(r > 1 for r in measured) / len(measured)

    def baseline(values: list[float | None]) -> float:
        kept = [v for v in values if v is not None]
        return sum(v > 1 for v in kept) / len(kept)

    print(
        f"\n[explain] heat inside the digit's box on {sum(r > 1 for r in measured)} of "
        f"{len(measured)} held-back digits ({share:.0%}); median inside/outside heat per pixel "
        f"{np.median(measured):.2f}; the model got {correct}/{len(images)} right; "
        f"{side} px -> {explain.target_layer(model.network, side)[0]}. Baselines under the "
        f"same criterion: the map turned 180 degrees {baseline(rotated):.0%}, a fixed centred "
        f"blob {baseline(centred):.0%} (the digits are centred: the criterion is weak)"
    )
    assert len(measured) >= HELD_BACK_IMAGES - 2
    assert np.median(measured) > MIN_MEDIAN_INSIDE_OUTSIDE
