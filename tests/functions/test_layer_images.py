"""pipeline_common.images: the validation's verdict on messy files, the same as train.py's."""

from __future__ import annotations

import io
import sys

import pytest
from PIL import Image
from pipeline_common.images import check_image_bytes

from tests.functions.handler_helpers import EXOTIC_KINDS, ROOT, UNREADABLE_KINDS, messy_images

IMAGES = messy_images()


@pytest.mark.parametrize("kind", UNREADABLE_KINDS)
def test_images_unreadable_kinds_are_refused_with_a_reason(kind):
    check = check_image_bytes(IMAGES[kind])

    assert not check.readable
    assert check.reason


@pytest.mark.parametrize("kind", EXOTIC_KINDS)
def test_images_exotic_modes_are_readable_but_not_plain(kind):
    check = check_image_bytes(IMAGES[kind], full_decode=True)

    assert check.readable, check.reason
    assert not check.plain


@pytest.mark.parametrize("kind", ["plain_png", "plain_jpeg", "gray_png"])
def test_images_plain_images_are_smoke_test_candidates(kind):
    assert check_image_bytes(IMAGES[kind], full_decode=True).plain


def test_images_jpeg_without_full_decode_is_not_plain():
    """Draft-mode JPEGs were not decoded at full scale: readable, but not a smoke-test image."""
    check = check_image_bytes(IMAGES["plain_jpeg"])

    assert check.readable and not check.plain


def test_images_bomb_is_refused_before_decoding():
    check = check_image_bytes(IMAGES["bomb_png"])

    assert "over the limit" in (check.reason or "")


@pytest.fixture(scope="module")
def train_check():
    """training/data.py's check_image: what train.py skips."""
    sys.path.insert(0, str(ROOT))
    from training.data import check_image

    return check_image


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_images_verdict_matches_train_py(kind, train_check, tmp_path):
    path = tmp_path / f"{kind}.img"
    path.write_bytes(IMAGES[kind])

    skipped_by_training = train_check(path) is not None

    assert check_image_bytes(IMAGES[kind]).readable is not skipped_by_training


def test_images_smoke_test_candidates_are_within_the_endpoints_pixel_limit():
    """A plain image over the endpoint's limit would be refused (413): not a smoke-test image."""
    sys.path.insert(0, str(ROOT / "training"))
    from pipeline_common import images

    import inference

    assert images.SERVING_MAX_PIXELS == inference.MAX_IMAGE_PIXELS
    wide = io.BytesIO()
    Image.new("L", (4096, 2049)).save(wide, format="PNG")

    check = check_image_bytes(wide.getvalue(), full_decode=True)

    assert check.readable and not check.plain
