"""SageMaker PyTorch serving entry points: model_fn and transform_fn.

train.py copies this file to `<model dir>/code/inference.py`, so a model archive serves itself,
and imports its image and model helpers, so that evaluation during training and predictions at
the endpoint decode, convert and normalise images in exactly one way. It therefore depends on
nothing but torch, torchvision, numpy and Pillow (the SageMaker toolkit is used when present).

Request flow (the SageMaker inference toolkit, sagemaker-pytorch-inference 2.0.25 in the PyTorch
2.6 image, calls model_fn once and transform_fn per request):
    decode_request(body, content_type) -> an RGB PIL image, validated (size, format, mode)
    predict(image, model)               -> {"class_index", "label", "class_name", "top_k", "model"}
    encode_response(prediction, accept) -> (JSON text, "application/json")

Errors speak the toolkit's language. The toolkit answers any exception with its message plus
the Python traceback (500 unless it is one of its own error types), so a bad request never
raises out of transform_fn: it sets the status on the toolkit's context (passed to handler
functions that take one, sagemaker-inference >= 1.7.0) and returns a JSON body
`{"error": <name>, "message": <what to change>}`. Only a bug in this file is a 500.

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
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from torch import nn
from torchvision import transforms

SUPPORTED_MODELS = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# SageMaker real-time endpoints accept at most 6 MB per request; refuse more before decoding.
MAX_BODY_BYTES = 6 * 1024 * 1024
# Decoding cost is bounded before a pixel is decoded: the header's size is checked first.
# At most this many pixels are ever decoded (3840x2160 fits): with the mode conversion done in
# strips, one request then holds at most about 60 MB of pixels (see docs/reliability.md).
MAX_IMAGE_PIXELS = 1 << 23
# libwebp decodes through an RGBA canvas and a second frame buffer: fewer pixels for WebP.
FORMAT_PIXEL_LIMITS = {"WEBP": 1 << 22}
# A baseline JPEG larger than that is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself
# (draft mode), so phone and camera photos are served; up to this many pixels in its header.
MAX_JPEG_PIXELS = 1 << 26
# A progressive JPEG keeps every DCT coefficient of the full image in memory (2 bytes per
# sample) whatever the scale, so it gets the plain pixel limit.
# PNG text chunks (zTXt/iTXt) are decompressed at open; Pillow allows 64 MB of them in all.
MAX_PNG_TEXT_BYTES = 1 << 20
# A JSON body is {"image": "<base64>"}: one object, no arrays, hardly a comma (base64 has
# none). More brackets and commas than this is not such a body; counting them first keeps a
# 10,000-deep nest (RecursionError) and 500,000 distinct keys (100 MB of dict) from json.loads.
MAX_JSON_STRUCTURE = 64
# Only these decoders are allowed to touch request bytes (no EPS/PDF-style plugins).
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/octet-stream")
JSON_TYPE = "application/json"
SUPPORTED_CONTENT_TYPES = (*RAW_IMAGE_TYPES, JSON_TYPE)
TOP_K = 3
# Rows per strip when a mode is converted piecewise (a few MB per strip at any width).
STRIP_PIXELS = 1 << 20

_CLASS_PREFIX = re.compile(r"^\d+\.")
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

PngImagePlugin.MAX_TEXT_MEMORY = MAX_PNG_TEXT_BYTES
PngImagePlugin.MAX_TEXT_CHUNK = MAX_PNG_TEXT_BYTES


class InputError(Exception):
    """A request the model cannot answer.

    `status_code` is the HTTP status to send back, `error` a short name for the kind of
    problem (the API passes it on) and `message` says what to change.
    """

    def __init__(self, status_code: int, message: str, error: str = "BadRequest") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error = error

    def body(self) -> str:
        """The JSON answer: the same shape the API uses for its own refusals."""
        return json.dumps({"error": self.error, "message": self.message})


@dataclass
class LoadedModel:
    """What model_fn returns: the network plus everything needed to preprocess and label."""

    network: nn.Module
    classes: list[str]
    info: dict[str, Any]
    transform: transforms.Compose
    device: torch.device
    # the monitoring baseline's projection, when the model has one (see `project`)
    projection: dict[str, torch.Tensor] | None = None


# The monitoring baseline train.py writes beside the model (pipeline_common.baseline; this file
# runs in the inference container alone, so the name is repeated here and a test keeps it equal).
BASELINE_FILE = "baseline.json"


def forward_with_features(
    network: nn.Module, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and the penultimate-layer features (the input of the ``fc`` head)."""
    captured: list[torch.Tensor] = []
    handle = network.fc.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    try:
        logits = network(batch)
    finally:
        handle.remove()
    return logits, captured[0].flatten(1)


PROJECTION_KEYS = ("mean", "components", "scale", "residual_scale")


def load_projection(model_dir: Path) -> dict[str, torch.Tensor] | None:
    path = model_dir / BASELINE_FILE
    if not path.is_file():
        return None
    embedding = json.loads(path.read_text())["embedding"]
    return {key: torch.tensor(embedding[key]) for key in PROJECTION_KEYS}


def project(features: torch.Tensor, projection: dict[str, torch.Tensor]) -> torch.Tensor:
    """Features -> the principal components in units of their validation spread, plus the
    norm of what lies outside them (in units of its validation mean): an input unlike the
    validation data shows either as unusual coordinates or as a large residual."""
    centered = features.cpu() - projection["mean"]
    coordinates = centered @ projection["components"].T
    residual = (centered - coordinates @ projection["components"]).norm(dim=1, keepdim=True)
    return torch.cat(
        [coordinates / projection["scale"], residual / projection["residual_scale"]], dim=1
    )


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
    High-bit and transparent images are converted in strips of rows into one output image, so
    the conversion never holds a second full-size copy in a wider mode (a 16-bit PNG used to
    cost 8 bytes a pixel in float64).
    """
    ImageOps.exif_transpose(image, in_place=True)  # without in_place: a full copy, always
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_BIT_MODES:
        image = _to_8bit_gray(image)
    has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        return _over_white(image)
    return image.convert("RGB")


def _strips(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """Boxes of whole rows, each about STRIP_PIXELS pixels, covering the image."""
    width, height = image.size
    rows = max(1, STRIP_PIXELS // max(1, width))
    return [(0, top, width, min(height, top + rows)) for top in range(0, height, rows)]


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale 16-bit or float grayscale to 0..255; a plain convert() would clip most of it white.

    The scale comes from the extrema (no copy); each strip is scaled in float32 on its own.
    """
    _low, high = image.getextrema()
    scale = 1.0
    if image.mode == "F" and float(high) <= 1.0:
        scale = 255.0
    elif float(high) > 255.0:
        scale = 255.0 / 65535.0
    gray = Image.new("L", image.size)
    for box in _strips(image):
        pixels = np.asarray(image.crop(box), dtype=np.float32)
        pixels = np.clip(np.nan_to_num(pixels * scale), 0, 255).astype(np.uint8)
        gray.paste(Image.fromarray(pixels), box[:2])
    return gray


def _over_white(image: Image.Image) -> Image.Image:
    """Lay a transparent image over white, one strip of rows at a time."""
    rgb = Image.new("RGB", image.size, (255, 255, 255))
    for box in _strips(image):
        strip = image.crop(box).convert("RGBA")
        rgb.paste(strip.convert("RGB"), box[:2], strip.getchannel("A"))
    return rgb


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes into an RGB image, refusing bombs, truncation and non-images.

    The header is read first and the size checked before any pixel is decoded (a few-kB PNG
    can declare 50000x50000). Raises InputError: 400 not an image or corrupt, 413 too large.
    """
    image = _identify(data)
    _limit_size(image)
    try:
        image.load()
        return to_rgb(image)
    except MemoryError:
        raise
    except Exception as e:  # any decoder error on untrusted bytes is the input's fault
        raise InputError(
            400,
            f"{image.format} image data is truncated or corrupt ({type(e).__name__}: {e}); "
            "send the complete file",
            "CorruptImage",
        ) from e


def _identify(data: bytes) -> Image.Image:
    """Open (header only) with the allowed decoders; anything unreadable is a 400."""
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(
            413,
            f"image is too large to decode safely ({e}); the limit is {MAX_IMAGE_PIXELS} "
            "pixels (e.g. 3840x2160): send a smaller image",
            "ImageTooLarge",
        ) from e
    except UnidentifiedImageError as e:
        raise InputError(
            400,
            f"body is not a readable image (supported formats: {', '.join(ALLOWED_FORMATS)})",
            "NotAnImage",
        ) from e
    except MemoryError:
        raise
    except Exception as e:  # a header that starts like an image but breaks the parser
        raise InputError(
            400,
            f"body is not a readable image: its header is corrupt ({type(e).__name__}: {e})",
            "NotAnImage",
        ) from e


def _limit_size(image: Image.Image) -> None:
    """Refuse an image whose decoding would cost too much; shrink a large baseline JPEG."""
    width, height = image.size
    pixels = width * height
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    draftable = image.format == "JPEG" and not progressive
    limit = (
        MAX_JPEG_PIXELS if draftable else FORMAT_PIXEL_LIMITS.get(image.format, MAX_IMAGE_PIXELS)
    )
    if pixels == 0:
        raise InputError(400, f"image header declares a {width}x{height} image", "CorruptImage")
    if pixels > limit:
        kind = f"{'progressive ' if progressive else ''}{image.format}"
        raise InputError(
            413,
            f"image is {width}x{height} = {pixels} pixels, over the limit of {limit} pixels "
            f"for a {kind} image; send a smaller image (e.g. at most 3840x2160)",
            "ImageTooLarge",
        )
    if draftable and pixels > MAX_IMAGE_PIXELS:
        scale = 2
        while (width // scale) * (height // scale) > MAX_IMAGE_PIXELS:
            scale *= 2
        image.draft(image.mode, (-(-width // scale), -(-height // scale)))
        if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:
            raise InputError(
                413,
                f"JPEG is {width}x{height} and cannot be decoded at a reduced scale; send a "
                "smaller image (e.g. at most 3840x2160)",
                "ImageTooLarge",
            )


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
    return LoadedModel(network, classes, info, transform, device, load_projection(root))


def transform_fn(
    model: LoadedModel,
    request_body: bytes | bytearray | str,
    content_type: str | None,
    accept: str | None,
    context: Any = None,
) -> tuple[str, str]:
    """One request, as the SageMaker inference toolkit calls it: (body, content type) back.

    A bad request is answered here, not raised: the toolkit would turn an exception into a
    body of message + traceback. With the toolkit's context (TorchServe's, or the local model
    server's) the status is set on it; without one (a toolkit older than 1.7.0) the toolkit's
    own error type carries the status, and only then does a traceback follow the message.
    """
    try:
        image = decode_request(request_body, content_type)
        return encode_response(predict(image, model), accept)
    except InputError as error:
        return refuse(error, context)


def refuse(error: InputError, context: Any) -> tuple[str, str]:
    """Set the error's status on the toolkit's context and answer its JSON body."""
    if context is None or not hasattr(context, "set_response_status"):
        raise _toolkit_error(error) from error
    context.set_response_status(code=error.status_code, phrase=_phrase(error.status_code))
    return error.body(), JSON_TYPE


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _toolkit_error(error: InputError) -> Exception:
    """The toolkit's own exception for this status, when the toolkit is installed."""
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:
        return error
    return GenericInferenceToolkitError(error.status_code, error.body(), _phrase(error.status_code))


def decode_request(request_body: bytes | bytearray | str, content_type: str | None) -> Image.Image:
    """Validate the request and decode it to an RGB image (see the module docstring)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in SUPPORTED_CONTENT_TYPES:
        raise InputError(
            415,
            f"unsupported content type {content_type!r}; "
            f"send one of: {', '.join(SUPPORTED_CONTENT_TYPES)}",
            "UnsupportedMediaType",
        )
    data = _body_bytes(request_body)
    if not data:
        raise InputError(400, "request body is empty; send the image bytes", "EmptyBody")
    if len(data) > MAX_BODY_BYTES:
        raise InputError(
            413,
            f"request body is {len(data)} bytes, over the limit of {MAX_BODY_BYTES} bytes",
            "PayloadTooLarge",
        )
    if media_type == JSON_TYPE:
        data = _image_from_json(data)
    return open_image(data)


def predict(image: Image.Image, model: LoadedModel) -> dict[str, Any]:
    """Run one image through the network; answer with the top class and the top-k."""
    batch = model.transform(image).unsqueeze(0).to(model.device)
    with torch.inference_mode():
        logits, features = forward_with_features(model.network, batch)
        probabilities = torch.softmax(logits, dim=1)[0].cpu()
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
    answer = {
        "class_index": best,
        "label": label_of(model.classes[best]),
        "class_name": model.classes[best],
        "top_k": top_k,
        "model": str(model.info.get("training_job", "")),  # which model answered
    }
    if model.projection is not None:  # for monitoring: data capture keeps it with the answer
        answer["embedding"] = [round(float(v), 5) for v in project(features, model.projection)[0]]
    return answer


def encode_response(prediction: dict[str, Any], accept: str | None) -> tuple[str, str]:
    """Serialise the prediction as JSON; returns (body, content type) as the toolkit accepts."""
    media_types = [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")]
    if not any(m in ("", "*/*", "application/*", JSON_TYPE) for m in media_types):
        raise InputError(
            406, f"cannot answer in {accept!r}; the answer is {JSON_TYPE}", "NotAcceptable"
        )
    return json.dumps(prediction), JSON_TYPE


def _body_bytes(body: bytes | bytearray | memoryview | str | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _image_from_json(data: bytes) -> bytes:
    """Read {"image": "<base64>"} (a data: URL prefix is accepted too)."""
    if sum(data.count(token) for token in (b"[", b"{", b",")) > MAX_JSON_STRUCTURE:
        raise InputError(
            400,
            'JSON body is nested or structured far beyond {"image": "<base64>"}; send that '
            "object only",
            "InvalidJson",
        )
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(400, f"body is not valid JSON: {e}", "InvalidJson") from e
    encoded = document.get("image") if isinstance(document, dict) else None
    if not isinstance(encoded, str) or not encoded:
        raise InputError(
            400, 'JSON body must be an object with a base64 string in "image"', "InvalidJson"
        )
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(400, f'"image" is not valid base64: {e}', "InvalidJson") from e
    if not decoded:
        raise InputError(400, '"image" decodes to an empty body', "EmptyBody")
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
        image = decode_request(path.read_bytes(), content_type)
        body, _ = encode_response(predict(image, model), None)
    except InputError as e:
        raise SystemExit(f"error {e.status_code}: {e.message}") from e
    print(body)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
