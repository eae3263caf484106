"""The reliability corpus: every kind of bad image the API and the endpoint must refuse.

One list for the tests at the endpoint (the real inference toolkit, tests/aws_contract), at the
API (the predict Lambda behind the local API, tests/reliability) and for the table in
docs/reliability.md (a test checks that every kind is listed there). Each body is built here
from a small drawn picture, deterministically, and is under the API's 4 MiB image limit unless
the kind is about size. ``endpoint`` and ``api`` are the statuses each must answer, always a
4xx with a JSON body ``{"error", "message"}`` and no traceback.

Also here: exotic but valid images (16-bit, float, alpha, CMYK, EXIF-rotated ...) that must be
converted and predicted (200), and the worst inputs for the memory benchmark.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageDraw

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class BadImage:
    kind: str
    description: str
    body: bytes
    content_type: str
    endpoint: int  # status at InvokeEndpoint (the real inference toolkit around inference.py)
    api: int  # status at POST /predict


@dataclass(frozen=True)
class GoodImage:
    kind: str
    body: bytes
    content_type: str


def picture(size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A small RGB drawing (a digit-like stroke on white)."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse(
        (w // 4, h // 8, 3 * w // 4, 7 * h // 8), outline=(20, 20, 20), width=max(1, w // 12)
    )
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, bit_depth: int = 8, color: int = 0) -> bytes:
    """A PNG whose header declares width x height, with a few rows of zeros after it."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (min(width, 100_000) + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def png_text_bomb(chunks: int = 80) -> bytes:
    """A valid PNG preceded by zTXt chunks that each inflate to 1 MB of text."""
    png = encode(picture(), "PNG")
    text = png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * 1_000_000, 9))
    return png[:33] + text * chunks + png[33:]


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its SOF marker rewritten to declare width x height."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = jpeg.find(marker)
        if at >= 0:
            sof = at + 5  # marker(2) length(2) precision(1)
            return jpeg[:sof] + struct.pack(">HH", height, width) + jpeg[sof + 4 :]
    raise ValueError("no SOF marker")


def gif_declaring(width: int, height: int) -> bytes:
    gif = bytearray(encode(picture((8, 8)).convert("P"), "GIF"))
    gif[6:10] = struct.pack("<HH", width, height)  # logical screen
    at = gif.find(b"\x2c")  # image descriptor
    gif[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(gif)


def bmp_declaring(width: int, height: int) -> bytes:
    bmp = bytearray(encode(picture((8, 8)), "BMP"))
    bmp[18:26] = struct.pack("<ii", width, height)
    return bytes(bmp)


def tiff_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(picture((8, 8)), "TIFF"))  # rewrite the two size tags in place
    ifd = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[ifd : ifd + 2])[0]
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag = struct.unpack("<H", data[entry : entry + 2])[0]
        if tag in (256, 257):
            value = width if tag == 256 else height
            data[entry + 2 : entry + 4] = struct.pack("<H", 4)  # LONG
            data[entry + 8 : entry + 12] = struct.pack("<I", value)
    return bytes(data)


def corrupt_crc(png: bytes, chunk: bytes = b"IHDR") -> bytes:
    at = png.find(chunk)
    length = struct.unpack(">I", png[at - 4 : at])[0]
    crc = at + 4 + length
    return png[:crc] + bytes(b ^ 0xFF for b in png[crc : crc + 4]) + png[crc + 4 :]


def corrupt_idat(png: bytes) -> bytes:
    """The compressed pixel data overwritten with noise, the chunk's CRC recomputed."""
    at = png.find(b"IDAT")
    length = struct.unpack(">I", png[at - 4 : at])[0]
    noise = bytes((i * 151 + 7) % 256 for i in range(length))
    return png[: at - 4] + png_chunk(b"IDAT", noise) + png[at + 8 + length :]


def as_json(body: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(body).decode()}).encode()


@functools.cache
def corpus() -> tuple[BadImage, ...]:
    """Every kind of bad image, with the status the endpoint and the API must answer."""
    png = encode(picture(), "PNG")
    jpeg = encode(picture(), "JPEG", quality=90)
    big = picture((400, 300))
    webp = encode(picture(), "WEBP")
    gif = encode(picture().convert("P"), "GIF")
    tiff = encode(picture(), "TIFF")
    progressive = encode(picture((4000, 3000)), "JPEG", quality=50, progressive=True)
    flat16 = Image.new("I;16", (6300, 6300), 1000)
    kinds = [
        ("empty", "empty body", b"", "image/png", 400, 400),
        (
            "text-as-jpeg",
            "plain text sent as image/jpeg",
            b"hello, I am text",
            "image/jpeg",
            400,
            400,
        ),
        (
            "bm-text",
            "`BM` then text, as application/octet-stream",
            b"BM this is not a bitmap at all",
            "application/octet-stream",
            400,
            400,
        ),
        (
            "png-signature-only",
            "the 8-byte PNG signature and nothing else",
            png[:8],
            "image/png",
            400,
            400,
        ),
        ("png-truncated", "PNG cut in half", png[: len(png) // 2], "image/png", 400, 400),
        ("png-no-iend", "PNG without its IDAT and IEND chunks", png[:33], "image/png", 400, 400),
        (
            "png-bad-crc",
            "PNG whose IHDR checksum is wrong",
            corrupt_crc(png),
            "image/png",
            400,
            400,
        ),
        (
            "png-corrupt-data",
            "PNG whose compressed pixels are noise",
            corrupt_idat(png),
            "image/png",
            400,
            400,
        ),
        ("jpeg-truncated", "JPEG cut in half", jpeg[: len(jpeg) // 2], "image/jpeg", 400, 400),
        ("jpeg-header-only", "JPEG SOI and first marker only", jpeg[:20], "image/jpeg", 400, 400),
        ("gif-truncated", "GIF cut after its header", gif[:20], "application/x-image", 400, 400),
        (
            "webp-truncated",
            "WebP cut in half",
            webp[: len(webp) // 2],
            "application/x-image",
            400,
            400,
        ),
        ("tiff-truncated", "TIFF cut after its header", tiff[:16], "application/x-image", 400, 400),
        (
            "pdf-as-jpeg",
            "a PDF sent as image/jpeg",
            b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
            "image/jpeg",
            400,
            400,
        ),
        (
            "svg-as-png",
            "an SVG (XML) sent as image/png",
            b'<svg xmlns="http://www.w3.org/2000/svg"/>',
            "image/png",
            400,
            400,
        ),
        (
            "zip-as-octet",
            "a ZIP archive as application/octet-stream",
            b"PK\x03\x04" + bytes(40),
            "application/octet-stream",
            400,
            400,
        ),
        (
            "eps",
            "PostScript/EPS (a decoder Pillow has but the endpoint never allows)",
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
            "application/x-image",
            400,
            400,
        ),
        (
            "ico",
            "an ICO icon (a format the endpoint does not decode)",
            encode(picture((32, 32)), "ICO"),
            "image/png",
            400,
            400,
        ),
        (
            "png-bomb",
            "PNG declaring 60000x60000 (a few kB: a decompression bomb)",
            png_declaring(60_000, 60_000),
            "image/png",
            413,
            413,
        ),
        (
            "png-16bit-6300",
            "16-bit grayscale PNG of 6300x6300 (92 kB, 40 Mpx)",
            encode(flat16, "PNG"),
            "image/png",
            413,
            413,
        ),
        (
            "png-1x10M",
            "PNG of 1x10,000,000 pixels",
            png_declaring(1, 10_000_000),
            "image/png",
            413,
            413,
        ),
        ("png-zero-size", "PNG header declaring 0x0", png_declaring(0, 0), "image/png", 400, 400),
        (
            "png-text-bomb",
            "PNG with 80 zTXt chunks inflating to 80 MB of text",
            png_text_bomb(),
            "image/png",
            400,
            400,
        ),
        (
            "jpeg-65535",
            "baseline JPEG header declaring 65535x65535",
            jpeg_with_size(jpeg, 65535, 65535),
            "image/jpeg",
            413,
            413,
        ),
        (
            "jpeg-progressive-12mp",
            "progressive JPEG of 4000x3000 (all coefficients held)",
            progressive,
            "image/jpeg",
            413,
            413,
        ),
        (
            "gif-65535",
            "GIF declaring a 65535x65535 screen",
            gif_declaring(65535, 65535),
            "application/x-image",
            413,
            413,
        ),
        (
            "bmp-30000",
            "BMP declaring 30000x30000 with 8x8 pixels of data",
            bmp_declaring(30_000, 30_000),
            "application/octet-stream",
            413,
            413,
        ),
        (
            "tiff-huge",
            "TIFF declaring 100000x100000",
            tiff_declaring(100_000, 100_000),
            "application/x-image",
            413,
            413,
        ),
        ("wrong-content-type", "a valid PNG sent as text/plain", png, "text/plain", 415, 415),
        (
            "json-nested",
            "JSON nested 10,000 deep",
            b"[" * 10_000 + b"]" * 10_000,
            JSON_TYPE,
            400,
            400,
        ),
        (
            "json-wide",
            "JSON array of 500,000 numbers",
            b'{"image": [' + b"0," * 500_000 + b"0]}",
            JSON_TYPE,
            400,
            400,
        ),
        (
            "json-many-keys",
            "JSON object of 300,000 distinct keys",
            b"{" + b",".join(b'"k%d": 0' % i for i in range(300_000)) + b"}",
            JSON_TYPE,
            400,
            400,
        ),
        ("json-not-json", "broken JSON", b'{"image": ', JSON_TYPE, 400, 400),
        (
            "json-no-image",
            "JSON without an image field",
            b'{"picture": "abc"}',
            JSON_TYPE,
            400,
            400,
        ),
        (
            "json-bad-base64",
            "JSON whose image is not base64",
            b'{"image": "***"}',
            JSON_TYPE,
            400,
            400,
        ),
        ("json-empty-image", "JSON with an empty image", b'{"image": ""}', JSON_TYPE, 400, 400),
        (
            "json-base64-text",
            "JSON whose image is base64 of text",
            as_json(b"just some text"),
            JSON_TYPE,
            400,
            400,
        ),
        (
            "json-truncated-png",
            "JSON with a truncated PNG",
            as_json(png[: len(png) // 2]),
            JSON_TYPE,
            400,
            400,
        ),
        (
            "json-bomb",
            "JSON with a PNG bomb",
            as_json(png_declaring(60_000, 60_000)),
            JSON_TYPE,
            413,
            413,
        ),
        (
            "big-truncated-jpeg",
            "400x300 JPEG cut to a third",
            encode(big, "JPEG", quality=95)[:4000],
            "image/jpeg",
            400,
            400,
        ),
    ]
    return tuple(BadImage(*kind) for kind in kinds)


@functools.cache
def exotic_images() -> tuple[GoodImage, ...]:
    """Valid images in unusual modes and formats: converted to RGB and predicted (200)."""
    base = picture()
    gray = base.convert("L")
    rgba = base.convert("RGBA")
    rgba.putalpha(gray.point(lambda v: 255 - v))
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90
    base.save(rotated, "JPEG", exif=exif.tobytes())
    palette = base.convert("P")
    palette.info["transparency"] = 0
    images = [
        ("png-16bit", encode(gray.convert("I;16"), "PNG"), "image/png"),
        ("png-16bit-large", encode(Image.new("I;16", (2000, 2000), 40000), "PNG"), "image/png"),
        ("tiff-float", encode(gray.convert("F"), "TIFF"), "application/x-image"),
        ("tiff-int32", encode(gray.convert("I"), "TIFF"), "application/x-image"),
        ("png-rgba", encode(rgba, "PNG"), "image/png"),
        ("png-la", encode(rgba.convert("LA"), "PNG"), "image/png"),
        ("png-palette-transparent", encode(palette, "PNG"), "image/png"),
        ("jpeg-cmyk", encode(base.convert("CMYK"), "JPEG"), "application/x-image"),
        ("jpeg-gray", encode(gray, "JPEG"), "image/jpeg"),
        ("bmp-1bit", encode(base.convert("1"), "BMP"), "application/octet-stream"),
        ("gif", encode(base.convert("P"), "GIF"), "application/x-image"),
        ("webp", encode(base, "WEBP"), "application/x-image"),
        ("jpeg-exif-rotated", rotated.getvalue(), "image/jpeg"),
        ("jpeg-24mp-baseline", encode(picture((6000, 4000)), "JPEG", quality=60), "image/jpeg"),
        ("png-as-jpeg", encode(base, "PNG"), "image/jpeg"),
        ("json-png", as_json(encode(base, "PNG")), JSON_TYPE),
    ]
    return tuple(GoodImage(*image) for image in images)


def worst_inputs() -> list[GoodImage]:
    """The costliest requests under the API's 4 MiB image limit, for bench/memory.py.

    Each is at (or just under) a decoding limit: the most pixels the endpoint decodes, in the
    modes that cost the most bytes per pixel or need a conversion, a progressive JPEG (its
    coefficients are all held), a baseline JPEG decoded at a reduced scale, the most PNG text.
    """
    side = 2896  # 2896 x 2896 = 8,386,816 pixels, just under MAX_IMAGE_PIXELS (2**23)
    wide = (4096, 2048)
    gradient = Image.linear_gradient("L").resize((side, side))
    rgba = Image.merge(
        "RGBA", [gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient, gradient]
    )
    exif = Image.Exif()
    exif[0x0112] = 6
    images = [
        ("rgb-png-4096x2048", encode(Image.new("RGB", wide, (200, 30, 90)), "PNG"), "image/png"),
        ("rgba-png-2896", encode(rgba, "PNG", compress_level=9), "image/png"),
        (
            "png-16bit-2896",
            encode(gradient.convert("I").point(lambda v: v * 257).convert("I;16"), "PNG"),
            "image/png",
        ),
        (
            "tiff-float-2896",
            encode(gradient.convert("F"), "TIFF", compression="tiff_adobe_deflate"),
            "application/x-image",
        ),
        (
            "tiff-int32-2896",
            encode(gradient.convert("I"), "TIFF", compression="tiff_adobe_deflate"),
            "application/x-image",
        ),
        (
            "palette-png-transparent-2896",
            encode(gradient.convert("P"), "PNG", transparency=0),
            "image/png",
        ),
        (
            "cmyk-jpeg-2896",
            encode(Image.merge("CMYK", [gradient] * 4), "JPEG", quality=30),
            "application/x-image",
        ),
        (
            "progressive-jpeg-2896",
            encode(rgba.convert("RGB"), "JPEG", quality=30, progressive=True),
            "image/jpeg",
        ),
        (
            "jpeg-exif-rotated-4096x2048",
            encode(Image.new("RGB", wide, (9, 99, 199)), "JPEG", exif=exif.tobytes()),
            "image/jpeg",
        ),
        (
            "baseline-jpeg-8192-draft",
            encode(Image.new("RGB", (8192, 8192), (120, 60, 30)), "JPEG", quality=20),
            "image/jpeg",
        ),
        ("gif-2896", encode(gradient.convert("P"), "GIF"), "application/x-image"),
        (
            "webp-2048",
            encode(rgba.convert("RGB").resize((2048, 2048)), "WEBP", quality=10),
            "application/x-image",
        ),
        ("png-text-1mb", png_text_bomb(1), "image/png"),
        ("json-png-2896", as_json(encode(gradient, "PNG")), JSON_TYPE),
    ]
    return [GoodImage(*image) for image in images if len(image[1]) <= 4 * 1024 * 1024]
