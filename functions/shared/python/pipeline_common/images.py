"""Is this file an image the pipeline can train on and serve? Decided once, at validation.

The checks mirror training/data.py's ``check_image`` (what train.py skips) and
training/inference.py's ``open_image`` (what the endpoint refuses): the same formats and the
same pixel limit, so a file validation calls readable is one the retrain uses. The Lambda
layer cannot import training/, hence this small copy; tests compare the two verdicts.

Cost is bounded: the header is read first and a file with too many pixels is refused before
anything is decoded; JPEGs are decoded in draft mode (a fraction of the pixels, the whole
stream, so truncation is still caught); other formats above ``FULL_DECODE_PIXELS`` are only
verified (checksums and structure), not decoded.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Same as training/inference.py: what the endpoint and train.py open.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
# What train.py still opens; larger files are unreadable for the pipeline.
MAX_IMAGE_PIXELS = 40_000_000
# The endpoint decodes at most this many pixels (training/inference.py MAX_IMAGE_PIXELS; a test
# keeps the two equal): a smoke-test image must be within it, or the endpoint refuses it.
SERVING_MAX_PIXELS = 1 << 23
# Non-JPEG images up to this size are decoded completely (at most ~48 MB as RGB).
FULL_DECODE_PIXELS = 16_000_000
# Modes the endpoint and train.py take without any conversion beyond L -> RGB: a smoke-test
# image should test the model, not the converter.
PLAIN_MODES = ("RGB", "L")
PLAIN_FORMATS = ("JPEG", "PNG")


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one file: readable or not (with the reason), and whether it is plain."""

    readable: bool
    reason: str | None = None
    format: str | None = None
    mode: str | None = None
    size: tuple[int, int] | None = None
    fully_decoded: bool = False

    @property
    def plain(self) -> bool:
        """An 8-bit RGB or grayscale JPEG/PNG that decoded completely: safe for a smoke test."""
        return (
            self.readable
            and self.fully_decoded
            and self.format in PLAIN_FORMATS
            and self.mode in PLAIN_MODES
            and self.size is not None
            and self.size[0] * self.size[1] <= SERVING_MAX_PIXELS
        )


def unreadable(reason: str) -> ImageCheck:
    return ImageCheck(readable=False, reason=reason)


def check_image_bytes(
    data: bytes, *, full_decode: bool = False, max_pixels: int = MAX_IMAGE_PIXELS
) -> ImageCheck:
    """Decide whether ``data`` is an image the pipeline can use; never raises for bad data.

    ``full_decode`` decodes JPEGs at full scale too (for images a smoke test may send);
    otherwise they are decoded in draft mode, which reads the whole stream at 1/8 the pixels.
    """
    if not data:
        return unreadable("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _check(data, full_decode, max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return unreadable(f"too many pixels to decode safely ({e})")
    except UnidentifiedImageError:
        return unreadable(f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)})")
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:
        # Pillow's decoders raise all of these for damaged files.
        return unreadable(f"corrupt image: {type(e).__name__}: {e}")


def _check(data: bytes, full_decode: bool, max_pixels: int) -> ImageCheck:
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as header:
        fmt, mode, size = header.format, header.mode, header.size
    width, height = size
    if width < 1 or height < 1:
        return unreadable(f"image is {width}x{height} pixels")
    if width * height > max_pixels:
        return unreadable(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; resize it"
        )
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
        image.verify()  # structure and checksums, no pixels (catches most truncated PNGs)
    small = width * height <= FULL_DECODE_PIXELS
    fully = small and (full_decode or fmt != "JPEG")
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
        if fmt == "JPEG" and not fully:
            # Draft mode decodes at 1/8 scale but reads the whole stream: truncation shows.
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
        elif fully:
            image.load()
    return ImageCheck(readable=True, format=fmt, mode=mode, size=size, fully_decoded=fully)
