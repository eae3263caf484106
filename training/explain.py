"""Grad-CAM explanations with captum, for the run report and for `POST /predict?explain=true`.

One implementation for both uses (captum's `LayerGradCam`, upsampled to the input with
`LayerAttribution.interpolate`; nothing of Grad-CAM is written here):

- train.py calls `record_explanations` after its test pass: the model it just saved is loaded
  again as the endpoint loads it (`inference.model_fn`), the test images are predicted, and the
  misclassified ones (up to MAX_MISCLASSIFIED) and a few correct ones (MAX_CORRECT) are written
  as small PNG overlays to `SM_OUTPUT_DATA_DIR/explanations/` with `index.json` beside them
  (the report reads both from output.tar.gz).
- inference.py calls `explain_prediction` when InvokeEndpoint's CustomAttributes ask for it
  (`explain=true`, read by inference.py from the toolkit's context): the answer gains
  `{"method", "layer", "target_class", "heatmap_png", "width", "height", "box"}`, the heatmap
  an 8-bit grayscale PNG of the model's input size.

captum is imported only when an explanation is computed, so inference.py serves predictions
without it. captum 0.8.0 declares `numpy<2.0`, which pip would force onto the training image
(numpy 2.x): like smdebug, captum's code travels with the source archive and the model's code/
(mlops/packaging.py, `copy_serving_code`); its other imports (matplotlib, tqdm) are installed
from requirements.txt. See docs/monitoring.md, "Explanations".

Which layer: Grad-CAM reads the last convolutional block whose feature map still has at least
MIN_CAM_SIDE cells on a side at the model's input size. On a 224-pixel ResNet that is layer4
(7x7, the usual choice); on 32-pixel digits layer4 is 1x1, a single number that cannot point
anywhere, so layer2 (4x4) is used; on 16 pixels, layer1.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

try:  # imported as part of the `training` package (tests, tooling)
    from . import inference
except ImportError:  # beside train.py in the source archive, or in the model's code/
    import inference

METHOD = "Grad-CAM"
FOLDER = "explanations"
INDEX_FILE = "index.json"
MAX_MISCLASSIFIED = 12
MAX_CORRECT = 4
# The overlays in the report are drawn at least this many pixels wide (digits are 32 px).
OVERLAY_SIDE = 112
MIN_CAM_SIDE = 4
# ResNet's convolutional blocks, deepest first, and the stride of their output to the input.
RESNET_BLOCKS = (("layer4", 32), ("layer3", 16), ("layer2", 8), ("layer1", 4))
# What the model's code/ needs to explain besides inference.py (train.py's save_model copies it).
SERVING_REQUIREMENTS = Path(__file__).with_name("serving-requirements.txt")
VENDORED = ("captum",)


# ---------------------------------------------------------------------------------------------
# Grad-CAM (captum)
# ---------------------------------------------------------------------------------------------


def feature_side(image_size: int, stride: int) -> int:
    """A ResNet block's output side for a square input: every stride-2 step rounds up."""
    side = image_size
    while stride > 1:
        side = -(-side // 2)
        stride //= 2
    return side


def target_layer(network: nn.Module, image_size: int) -> tuple[str, nn.Module]:
    """The deepest ResNet block whose feature map has at least MIN_CAM_SIDE cells a side."""
    for name, stride in RESNET_BLOCKS:
        if feature_side(image_size, stride) >= MIN_CAM_SIDE:
            return name, getattr(network, name)
    name = RESNET_BLOCKS[-1][0]
    return name, getattr(network, name)


def grad_cam(
    network: nn.Module, batch: torch.Tensor, targets: list[int], layer: nn.Module
) -> np.ndarray:
    """Grad-CAM of `targets` for each image of `batch`, at the input's size, in [0, 1]
    (N x H x W, float32); an image whose map is all zero stays zero."""
    from captum.attr import LayerAttribution, LayerGradCam  # lazy: only explanations need it

    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            cam = LayerGradCam(network, layer)
            attributions = cam.attribute(
                batch.clone(), target=list(targets), relu_attributions=True
            )
            upsampled = LayerAttribution.interpolate(
                attributions, tuple(batch.shape[-2:]), interpolate_mode="bilinear"
            )
    finally:
        network.train(was_training)
    maps = upsampled.detach().squeeze(1).clamp(min=0).cpu().numpy().astype(np.float32)
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peaks > 0, peaks, 1.0)[:, None, None]


def heatmap_png(cam: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of one map in [0, 1] (white: most heat)."""
    buffer = io.BytesIO()
    pixels = np.clip(np.rint(cam * 255), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# A perceptual dark-to-bright colour scale (blue, cyan, yellow, red) for the overlays.
_COLOUR_STOPS = np.array([0.0, 0.35, 0.65, 1.0])
_COLOURS = np.array([[0, 0, 160], [0, 200, 220], [250, 220, 0], [220, 20, 20]], dtype=np.float32)


def colour_map(cam: np.ndarray) -> np.ndarray:
    """H x W in [0, 1] -> H x W x 3 float RGB."""
    return np.stack(
        [np.interp(cam, _COLOUR_STOPS, _COLOURS[:, channel]) for channel in range(3)], axis=-1
    )


def overlay_png(image: Image.Image, cam: np.ndarray, side: int = OVERLAY_SIDE) -> bytes:
    """The model's input crop in gray with the heat laid over it in colour, as a PNG."""
    size = max(side, image.width)
    gray = np.asarray(image.convert("L").resize((size, size), Image.Resampling.BILINEAR))
    heat = np.asarray(
        Image.fromarray(np.clip(cam * 255, 0, 255).astype(np.uint8), mode="L").resize(
            (size, size), Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    weight = (0.15 + 0.55 * heat / 255.0)[..., None]
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    mixed = (1 - weight) * base + weight * colour_map(heat / 255.0)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), mode="RGB").save(
        buffer, format="PNG", optimize=True
    )
    return buffer.getvalue()


def input_crop(image: Image.Image, model: inference.LoadedModel) -> Image.Image:
    """What the network saw, before ToTensor/Normalize: the resize and the centre crop."""
    info = model.info
    size = _resized_size(image.size, info["resize_size"])
    resized = image.resize(size, Image.Resampling.BILINEAR)
    side = info["image_size"]
    left, top = (resized.width - side) // 2, (resized.height - side) // 2
    return resized.crop((left, top, left + side, top + side))


def _resized_size(size: tuple[int, int], resize: int) -> tuple[int, int]:
    width, height = size
    if width <= height:
        return resize, max(1, round(height * resize / width))
    return max(1, round(width * resize / height)), resize


def crop_box(size: tuple[int, int], info: dict[str, Any]) -> list[int]:
    """Where the heatmap lies on the original image: [left, top, right, bottom] in its pixels
    (the shorter side is resized to resize_size, then the centre image_size square is used)."""
    width, height = size
    scale = info["resize_size"] / min(width, height)
    half = info["image_size"] / scale / 2
    cx, cy = width / 2, height / 2
    return [round(cx - half), round(cy - half), round(cx + half), round(cy + half)]


# ---------------------------------------------------------------------------------------------
# The API: ?explain=true
# ---------------------------------------------------------------------------------------------


def explain_prediction(
    image: Image.Image, model: inference.LoadedModel, class_index: int
) -> dict[str, Any]:
    """Grad-CAM of `class_index` for one decoded request image (see the module docstring)."""
    name, layer = target_layer(model.network, model.info["image_size"])
    batch = model.transform(image).unsqueeze(0).to(model.device)
    cam = grad_cam(model.network, batch, [class_index], layer)[0]
    return {
        "method": METHOD,
        "layer": name,
        "target_class": class_index,
        "width": int(cam.shape[1]),
        "height": int(cam.shape[0]),
        "box": crop_box(image.size, model.info),
        "heatmap_png": base64.b64encode(heatmap_png(cam)).decode("ascii"),
    }


# ---------------------------------------------------------------------------------------------
# The report: the test split's misclassified images (and a few correct ones)
# ---------------------------------------------------------------------------------------------


def record_explanations(
    model_dir: Path,
    samples: list[tuple[Path, int]],
    out_dir: Path,
    root: Path | None = None,
    max_misclassified: int = MAX_MISCLASSIFIED,
    max_correct: int = MAX_CORRECT,
) -> dict[str, Any]:
    """Write `out_dir/explanations/` for the saved model over the test `samples`; never raise.

    A failure (captum missing, an unreadable image) is written into index.json as "error" and
    printed, so the report says why there are no explanations and the job still succeeds.
    """
    folder = out_dir / FOLDER
    try:
        index = _explain_samples(model_dir, samples, folder, root, max_misclassified, max_correct)
    except Exception as error:  # an explanation must never fail a finished training
        index = {"method": METHOD, "images": [], "error": f"{type(error).__name__}: {error}"}
        print(f"[explain] no explanations: {index['error']}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return index


def _explain_samples(
    model_dir: Path,
    samples: list[tuple[Path, int]],
    folder: Path,
    root: Path | None,
    max_misclassified: int,
    max_correct: int,
) -> dict[str, Any]:
    model = inference.model_fn(str(model_dir))
    images = [inference.open_image(Path(path).read_bytes()) for path, _ in samples]
    probabilities = _probabilities(model, images)
    predicted = probabilities.argmax(dim=1).tolist()
    wrong = [i for i, (_, t) in enumerate(samples) if predicted[i] != t][:max_misclassified]
    right = [i for i, (_, t) in enumerate(samples) if predicted[i] == t][:max_correct]
    chosen = wrong + right
    name, layer = target_layer(model.network, model.info["image_size"])
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    if chosen:
        batch = torch.stack([model.transform(images[i]) for i in chosen]).to(model.device)
        cams = grad_cam(model.network, batch, [predicted[i] for i in chosen], layer)
        for number, (i, cam) in enumerate(zip(chosen, cams, strict=True)):
            path, target = samples[i]
            file = f"{FOLDER}/{number:03d}.png"
            (folder / f"{number:03d}.png").write_bytes(
                overlay_png(input_crop(images[i], model), cam)
            )
            entries.append(
                {
                    "file": file,
                    "image": _relative(Path(path), root),
                    "true_class": model.classes[target],
                    "true_label": inference.label_of(model.classes[target]),
                    "predicted_class": model.classes[predicted[i]],
                    "predicted_label": inference.label_of(model.classes[predicted[i]]),
                    "confidence": round(float(probabilities[i, predicted[i]]), 4),
                    "correct": predicted[i] == target,
                }
            )
    misclassified = sum(1 for i, (_, t) in enumerate(samples) if predicted[i] != t)
    print(
        f"[explain] {METHOD} on {name}: {len(wrong)} of {misclassified} misclassified and "
        f"{len(right)} correct test images ({FOLDER}/{INDEX_FILE})",
        flush=True,
    )
    return {
        "method": METHOD,
        "layer": name,
        "model": str(model.info.get("training_job", "")),
        "test_images": len(samples),
        "misclassified": misclassified,
        "images": entries,
    }


def _probabilities(model: inference.LoadedModel, images: list[Image.Image]) -> torch.Tensor:
    rows = []
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            batch = torch.stack([model.transform(im) for im in images[start : start + 64]])
            rows.append(torch.softmax(model.network(batch.to(model.device)), dim=1).cpu())
    return torch.cat(rows) if rows else torch.zeros(0, len(model.classes))


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return "/".join(path.parts[-2:])


# ---------------------------------------------------------------------------------------------
# The model archive's code/
# ---------------------------------------------------------------------------------------------


def copy_serving_code(code_dir: Path) -> None:
    """explain.py, the vendored captum and requirements.txt into the model's code/ (beside
    inference.py), so that the archive explains on its own; without captum here, the archive
    still serves predictions and answers ?explain=true with an error that says so."""
    import importlib.util

    code_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(__file__), code_dir / "explain.py")
    shutil.copy2(SERVING_REQUIREMENTS, code_dir / "requirements.txt")
    for name in VENDORED:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            print(f"[explain] {name} not found: the model cannot explain", flush=True)
            continue
        source = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(
            source,
            code_dir / name,
            dirs_exist_ok=True,
            # captum/insights is its web UI (2.9 of its 4.8 MB), never imported by captum.attr
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "insights"),
        )
