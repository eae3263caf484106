"""Bad data sets: what tests/functions/test_handler_validate_dataset.py leaves out.

The handler tests (moto) already cover a missing split in the manifest, class folders that
differ between splits, an empty class, a non-image file, a manifest that is not JSON or has the
wrong schema, a file entry with another size, a vanished manifest and every problem at once.
These add the remaining mismatches between manifest and objects, at the layer's level (pure
functions, no AWS). Image content is checked by the handler after these layout checks
(pipeline_common/images.py; tests/functions/test_handler_validate_dataset.py and
test_layer_images.py), so the pure layout functions here pass a corrupt image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

LAYER = Path(__file__).resolve().parents[2] / "functions" / "shared" / "python"
if str(LAYER) not in sys.path:
    sys.path.insert(0, str(LAYER))

from pipeline_common.manifest import (  # noqa: E402
    Manifest,
    find_problems,
    parse_manifest,
    summarize_objects,
)

CLASSES = ("000.zero", "001.one")
COUNTS = {"train": 3, "valid": 2, "test": 2}


def objects(skip_split: str | None = None, extra: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    keys = [
        f"{split}/{class_name}/{i:04d}.png"
        for split, count in COUNTS.items()
        if split != skip_split
        for class_name in CLASSES
        for i in range(count)
    ]
    return [(key, 100) for key in [*keys, *extra]]


def manifest(**changes: Any) -> Manifest:
    document = {
        "schema_version": 1,
        "dataset": "digits",
        "classes": list(CLASSES),
        "splits": {split: dict.fromkeys(CLASSES, count) for split, count in COUNTS.items()},
        "file_count": len(CLASSES) * sum(COUNTS.values()),
        **changes,
    }
    parsed, problems = parse_manifest(json.dumps(document).encode())
    assert parsed is not None, problems
    return parsed


def problems_of(listing: list[tuple[str, int]], document: Manifest | None = None) -> list[str]:
    return find_problems(document or manifest(), "digits", summarize_objects(listing))


def test_validation_accepts_the_reference_data_set() -> None:
    assert problems_of(objects()) == []


def test_validation_split_declared_but_not_uploaded_names_each_folder() -> None:
    problems = problems_of(objects(skip_split="valid"))

    assert "folder valid/000.zero/ is missing or has no images" in problems
    assert "folder valid/001.one/ is missing or has no images" in problems
    assert any("file_count is 14 but the bucket holds 10" in p for p in problems)


def test_validation_file_listed_in_manifest_but_not_uploaded_is_named() -> None:
    files = [{"key": "train/000.zero/9999.png", "size": 100}]

    problems = problems_of(objects(), manifest(files=files))

    assert problems == ["train/000.zero/9999.png is listed in manifest.json but not in the bucket"]


def test_validation_uploaded_class_the_manifest_does_not_list_is_named() -> None:
    problems = problems_of(objects(extra=("train/002.two/0000.png",)))

    assert any("folder train/002.two/ holds 1 images" in p for p in problems), problems


def test_validation_image_outside_a_class_folder_is_named() -> None:
    problems = problems_of(objects(extra=("train/stray.png",)))

    assert any(p.startswith("train/stray.png is not inside a class folder") for p in problems)


def test_validation_unknown_top_level_folder_is_named() -> None:
    problems = problems_of(objects(extra=("holdout/000.zero/0000.png",)))

    assert any(p.startswith("unexpected folder holdout/") for p in problems), problems


@pytest.mark.parametrize("name", ["notes.txt", "image.png.zip", "archive.tar.gz", "README"])
def test_validation_non_image_file_names_the_file(name: str) -> None:
    problems = problems_of(objects(extra=(f"test/001.one/{name}",)))

    assert any(p.startswith(f"test/001.one/{name} is not an image") for p in problems), problems


def test_validation_does_not_read_image_content_corrupt_images_reach_training() -> None:
    """A corrupt .png has the right name and size: validation cannot tell; train.py skips it."""
    listing = objects()
    listing[0] = (listing[0][0], 7)  # e.g. a truncated upload whose manifest has no sizes

    assert problems_of(listing) == []
