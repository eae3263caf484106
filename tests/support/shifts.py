"""Images that do not look like the digits a model was validated on: the drift monitor's
shifted batches (tests/e2e/test_monitoring_local.py, bench/drift.py)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageOps


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noisy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian noise of sigma 80 (of 255) on the grey levels."""
    pixels = np.asarray(image.convert("L"), dtype=float)
    noise = rng.normal(0, 80, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype("uint8"))


def shapes(size: int, rng: np.random.Generator) -> Image.Image:
    """Not a digit: filled rectangles and ellipses of random grey on a random ground."""
    image = Image.new("L", (size, size), int(rng.integers(0, 256)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = (int(v) for v in rng.integers(size // 2, size, 2))
        fill = int(rng.integers(0, 256))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x1, y1), fill=fill)
    return image


Shift = Callable[[Image.Image, np.random.Generator], Image.Image]
SHIFTS: dict[str, Shift] = {
    "inverted": lambda image, rng: ImageOps.invert(image.convert("L")),
    "rotated 90": lambda image, rng: image.rotate(90),
    "noisy (sigma 80)": noisy,
    "other images (shapes)": lambda image, rng: shapes(image.width, rng),
}
