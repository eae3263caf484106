"""SageMaker PyTorch serving entry points: model_fn, input_fn, predict_fn, output_fn.

train.py copies this file to `<model dir>/code/inference.py`, so a model archive serves itself,
and imports its image and model helpers, so that evaluation during training and predictions at
the endpoint decode, convert and normalise images in exactly one way. It therefore depends on
nothing but torch, torchvision and Pillow.

Request flow (the SageMaker inference toolkit calls these in turn):
    input_fn(body, content_type) -> an RGB PIL image, validated (size, format, mode)
    predict_fn(image, model)     -> {"class_index", "label", "class_name", "top_k", "model"}
    output_fn(prediction, accept) -> (JSON text, "application/json")
Bad requests raise InputError(status_code, message); the model server answers with that status.

    python -m training.inference <model dir> <image file>   # one prediction, printed as JSON
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision import transforms

SUPPORTED_MODELS = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# SageMaker real-time endpoints accept at most 6 MB per request; refuse more before decoding.
MAX_BODY_BYTES = 6 * 1024 * 1024
# A few-kB PNG can declare a 50000x50000 canvas (a decompression bomb). The header is read
# first and anything over this many pixels is refused before a single pixel is decoded.
MAX_IMAGE_PIXELS = 40_000_000
# Only these decoders are allowed to touch request bytes (no EPS/PDF-style plugins).
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/octet-stream")
JSON_TYPE = "application/json"
SUPPORTED_CONTENT_TYPES = (*RAW_IMAGE_TYPES, JSON_TYPE)
TOP_K = 3

_CLASS_PREFIX = re.compile(r"^\d+\.")


class InputError(Exception):
    """A request the model cannot answer; `status_code` is the HTTP status to send back."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass
class LoadedModel:
    """What model_fn returns: the network plus everything needed to preprocess and label."""

    network: nn.Module
    classes: list[str]
    info: dict[str, Any]
    transform: transforms.Compose
    device: torch.device


# ---------------------------------------------------------------------------------------------
# Helpers shared with train.py (one definition of the model and of image preprocessing)
# ---------------------------------------------------------------------------------------------


def build_model(arch: str, num_classes: int, weights: str | None = None) -> nn.Module:
    """A torchvision ResNet whose classification head is replaced by one sized to `num_classes`."""
    if arch not in SUPPORTED_MODELS:
        raise ValueError(f"unknown model {arch!r}; valid models: {', '.join(SUPPORTED_MODELS)}")
    model = torchvision.models.get_model(arch, weights=weights)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def resize_size_for(image_size: int) -> int:
    """The shorter-side resize before the centre crop, in ImageNet's 256/224 proportion."""
    return round(image_size * 256 / 224)


def build_eval_transform(
    image_size: int,
    resize_size: int,
    mean: tuple[float, ...] | list[float] = IMAGENET_MEAN,
    std: tuple[float, ...] | list[float] = IMAGENET_STD,
) -> transforms.Compose:
    """Resize, centre-crop, normalise: used for validation, test and every prediction."""
    return transforms.Compose(
        [
            transforms.Resize(resize_size, antialias=True),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(list(mean), list(std)),
        ]
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, 1, P, LA, RGBA, CMYK, I;16, F, ...) to 8-bit RGB.

    Transparent pixels are laid over white (what a viewer shows), not left as whatever colour
    the encoder stored under alpha 0; EXIF rotation is applied so phone photos stand upright.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit_gray(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale 16-bit or float grayscale to 0..255; a plain convert() would clip most of it white."""
    pixels = np.asarray(image, dtype=np.float64)
    top = float(pixels.max()) if pixels.size else 0.0
    if image.mode == "F" and top <= 1.0:
        pixels = pixels * 255.0
    elif top > 255.0:
        pixels = pixels * (255.0 / 65535.0)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes into an RGB image, refusing bombs, truncation and non-images.

    Raises InputError (400 not an image or corrupt, 413 too many pixels).
    """
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(413, f"image is too large to decode safely: {e}") from e
    except UnidentifiedImageError as e:
        raise InputError(
            400, f"body is not a readable image (supported formats: {', '.join(ALLOWED_FORMATS)})"
        ) from e
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            413,
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS} pixels",
        )
    try:
        image.load()
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(400, f"image data is truncated or corrupt: {e}") from e


def label_of(class_name: str) -> str:
    """`003.three` -> `three`: labels shown to users drop the `NNN.` index prefix."""
    return _CLASS_PREFIX.sub("", class_name, count=1)


# ---------------------------------------------------------------------------------------------
# SageMaker entry points
# ---------------------------------------------------------------------------------------------


def model_fn(model_dir: str) -> LoadedModel:
    """Load the state_dict that train.py saved, rebuilt on the architecture named beside it."""
    root = Path(model_dir)
    info = json.loads((root / "model_info.json").read_text())
    classes = json.loads((root / "classes.json").read_text())
    if len(classes) != info["num_classes"]:
        raise ValueError(
            f"classes.json lists {len(classes)} classes but model_info.json says "
            f"{info['num_classes']}"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = build_model(info["model"], info["num_classes"])
    state = torch.load(root / "model.pth", map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    network.to(device).eval()
    transform = build_eval_transform(
        info["image_size"], info["resize_size"], info["mean"], info["std"]
    )
    return LoadedModel(network, classes, info, transform, device)


def input_fn(request_body: bytes | bytearray | str, content_type: str | None) -> Image.Image:
    """Validate the request and decode it to an RGB image (see the module docstring)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in SUPPORTED_CONTENT_TYPES:
        raise InputError(
            415,
            f"unsupported content type {content_type!r}; "
            f"send one of: {', '.join(SUPPORTED_CONTENT_TYPES)}",
        )
    data = _body_bytes(request_body)
    if not data:
        raise InputError(400, "request body is empty; send the image bytes")
    if len(data) > MAX_BODY_BYTES:
        raise InputError(
            413, f"request body is {len(data)} bytes, over the limit of {MAX_BODY_BYTES} bytes"
        )
    if media_type == JSON_TYPE:
        data = _image_from_json(data)
    return open_image(data)


def predict_fn(input_data: Image.Image, model: LoadedModel) -> dict[str, Any]:
    """Run one image through the network; answer with the top class and the top-k."""
    batch = model.transform(input_data).unsqueeze(0).to(model.device)
    with torch.inference_mode():
        probabilities = torch.softmax(model.network(batch), dim=1)[0].cpu()
    k = min(TOP_K, len(model.classes))
    top = torch.topk(probabilities, k)
    top_k = [
        {
            "class_index": int(index),
            "label": label_of(model.classes[int(index)]),
            "probability": round(float(p), 6),
        }
        for p, index in zip(top.values, top.indices, strict=True)
    ]
    best = top_k[0]["class_index"]
    return {
        "class_index": best,
        "label": label_of(model.classes[best]),
        "class_name": model.classes[best],
        "top_k": top_k,
        "model": str(model.info.get("training_job", "")),  # which model answered
    }


def output_fn(prediction: dict[str, Any], accept: str | None) -> tuple[str, str]:
    """Serialise the prediction as JSON; returns (body, content type) as the toolkit accepts."""
    media_types = [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")]
    if not any(m in ("", "*/*", "application/*", JSON_TYPE) for m in media_types):
        raise InputError(406, f"cannot answer in {accept!r}; the answer is {JSON_TYPE}")
    return json.dumps(prediction), JSON_TYPE


def _body_bytes(body: bytes | bytearray | memoryview | str | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _image_from_json(data: bytes) -> bytes:
    """Read {"image": "<base64>"} (a data: URL prefix is accepted too)."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(400, f"body is not valid JSON: {e}") from e
    encoded = document.get("image") if isinstance(document, dict) else None
    if not isinstance(encoded, str) or not encoded:
        raise InputError(400, 'JSON body must be an object with a base64 string in "image"')
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(400, f'"image" is not valid base64: {e}') from e
    if not decoded:
        raise InputError(400, '"image" decodes to an empty body')
    return decoded


# ---------------------------------------------------------------------------------------------
# Command line: one prediction through the same four functions the endpoint calls
# ---------------------------------------------------------------------------------------------

_SUFFIX_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Predict one image with a model folder written by train.py."
    )
    parser.add_argument("model_dir", type=str, help="folder with model.pth and model_info.json")
    parser.add_argument("image", type=str, help="image file to classify")
    parser.add_argument(
        "--content-type",
        default=None,
        type=str,
        help="request content type (default: from the file suffix, else application/x-image)",
    )
    return parser


def main(args: argparse.Namespace) -> None:
    path = Path(args.image)
    content_type = args.content_type or _SUFFIX_TYPES.get(path.suffix.lower(), RAW_IMAGE_TYPES[2])
    model = model_fn(args.model_dir)
    try:
        body, _ = output_fn(predict_fn(input_fn(path.read_bytes(), content_type), model), None)
    except InputError as e:
        raise SystemExit(f"error {e.status_code}: {e.message}") from e
    print(body)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
