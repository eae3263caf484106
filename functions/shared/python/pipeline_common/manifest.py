"""The data set manifest (schema version 1, see docs/contracts.md) and the layout checks.

Everything here is pure: the validate_dataset handler lists the bucket and hands the keys
to :func:`summarize_objects`, then :func:`find_problems` compares the listing with the
manifest. Every problem is collected (not only the first) so one failed run tells the user
everything to fix.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline_common.naming import DATASET_NAME_PATTERN, MANIFEST_FILE

SPLITS = ("train", "valid", "test")
SCHEMA_VERSION = 1  # the one version :class:`Manifest` accepts (its Literal below)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class ManifestFile(BaseModel):
    """An optional per-file entry; ``key`` is relative to ``datasets/<name>/``."""

    model_config = ConfigDict(extra="ignore")

    key: str
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = None


class Manifest(BaseModel):
    """manifest.json, written last by the uploader; its arrival starts a run."""

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1]
    dataset: str
    classes: list[str] = Field(min_length=1)
    splits: dict[str, dict[str, int]]
    file_count: int = Field(ge=0)
    files: list[ManifestFile] | None = None


@dataclass
class ObjectListing:
    """What is actually in the bucket under ``datasets/<name>/``."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    sizes: dict[str, int] = field(default_factory=dict)
    first_image: dict[tuple[str, str], str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def image_count(self) -> int:
        return sum(self.counts.values())


def parse_manifest(raw: bytes) -> tuple[Manifest | None, list[str]]:
    """Parse manifest.json; on failure return None and one readable problem per field."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, [f"manifest.json is not valid JSON ({e})"]
    try:
        return Manifest.model_validate(document), []
    except ValidationError as e:
        problems = []
        for error in e.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(root)"
            problems.append(f"manifest.json field {where}: {error['msg']}")
        return None, problems


def summarize_objects(objects: Iterable[tuple[str, int]]) -> ObjectListing:
    """Count images per (split, class) from ``(key relative to the data set, size)`` pairs."""
    listing = ObjectListing()
    stray_folders: set[str] = set()
    for relative_key, size in objects:
        if not relative_key or relative_key.endswith("/") or relative_key == MANIFEST_FILE:
            continue
        listing.sizes[relative_key] = size
        parts = relative_key.split("/")
        if parts[0] not in SPLITS:
            if len(parts) > 1:
                stray_folders.add(parts[0])
            continue
        if len(parts) != 3:
            listing.problems.append(
                f"{relative_key} is not inside a class folder "
                f"(expected {parts[0]}/<NNN.Label>/<image>)"
            )
            continue
        split, class_name, file_name = parts
        if PurePosixPath(file_name).suffix.lower() not in IMAGE_EXTENSIONS:
            listing.problems.append(
                f"{relative_key} is not an image (allowed extensions: "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
            continue
        listing.counts[(split, class_name)] += 1
        current = listing.first_image.get((split, class_name))
        if current is None or relative_key < current:
            listing.first_image[(split, class_name)] = relative_key
    for folder in sorted(stray_folders):
        listing.problems.append(
            f"unexpected folder {folder}/ (a data set has only {', '.join(SPLITS)})"
        )
    return listing


def _check_identity(manifest: Manifest, expected_name: str) -> list[str]:
    problems = []
    if not DATASET_NAME_PATTERN.match(expected_name):
        problems.append(
            f"data set name {expected_name!r} must match [a-z0-9][a-z0-9-]{{0,39}} "
            f"(it becomes part of SageMaker job names); upload under another name"
        )
    if manifest.dataset != expected_name:
        problems.append(
            f"manifest.json names data set {manifest.dataset!r} but was uploaded under "
            f"datasets/{expected_name}/"
        )
    return problems


def _check_classes(manifest: Manifest) -> list[str]:
    problems = []
    duplicates = sorted(name for name, n in Counter(manifest.classes).items() if n > 1)
    if duplicates:
        problems.append(f"classes listed twice in manifest.json: {', '.join(duplicates)}")
    if len(set(manifest.classes)) < 2:
        problems.append("a classifier needs at least 2 classes; manifest.json lists fewer")
    if manifest.classes != sorted(manifest.classes):
        problems.append(
            "manifest.json classes must be in sorted order (the class index is the position "
            "in the sorted folder list)"
        )
    return problems


def _check_splits(manifest: Manifest) -> list[str]:
    problems = []
    classes = set(manifest.classes)
    for split in SPLITS:
        if split not in manifest.splits:
            problems.append(f"manifest.json has no {split!r} split (needs {', '.join(SPLITS)})")
    for split in sorted(set(manifest.splits) - set(SPLITS)):
        problems.append(f"manifest.json has an unknown split {split!r}")
    for split in SPLITS:
        per_class = manifest.splits.get(split)
        if per_class is None:
            continue
        missing = sorted(classes - set(per_class))
        extra = sorted(set(per_class) - classes)
        if missing:
            problems.append(f"split {split} has no entry for classes: {', '.join(missing)}")
        if extra:
            problems.append(f"split {split} lists classes not in 'classes': {', '.join(extra)}")
        for class_name, count in sorted(per_class.items()):
            if count <= 0:
                problems.append(f"class {class_name} in split {split} has no images")
    return problems


def _check_against_bucket(manifest: Manifest, listing: ObjectListing) -> list[str]:
    problems = []
    for split in SPLITS:
        expected = manifest.splits.get(split, {})
        found = {cls: n for (s, cls), n in listing.counts.items() if s == split}
        for class_name in sorted(set(found) - set(expected)):
            problems.append(
                f"folder {split}/{class_name}/ holds {found[class_name]} images but the "
                f"manifest does not list class {class_name} in {split}"
            )
        for class_name, count in sorted(expected.items()):
            actual = found.get(class_name, 0)
            if actual == 0 and count > 0:
                problems.append(f"folder {split}/{class_name}/ is missing or has no images")
            elif actual != count:
                problems.append(
                    f"{split}/{class_name}/: manifest says {count} images, bucket has {actual}"
                )
    declared = sum(sum(per_class.values()) for per_class in manifest.splits.values())
    if manifest.file_count != declared:
        problems.append(
            f"manifest.json file_count is {manifest.file_count} but its splits add up to {declared}"
        )
    if listing.image_count != manifest.file_count:
        problems.append(
            f"manifest.json file_count is {manifest.file_count} but the bucket holds "
            f"{listing.image_count} images"
        )
    return problems


def _check_file_entries(manifest: Manifest, listing: ObjectListing) -> list[str]:
    problems = []
    for entry in manifest.files or []:
        size = listing.sizes.get(entry.key)
        if size is None:
            problems.append(f"{entry.key} is listed in manifest.json but not in the bucket")
        elif entry.size is not None and entry.size != size:
            problems.append(
                f"{entry.key}: manifest.json says {entry.size} bytes, the object has {size} "
                f"(upload incomplete or changed after the manifest was written)"
            )
    return problems


def find_problems(manifest: Manifest, expected_name: str, listing: ObjectListing) -> list[str]:
    """Every reason the data set cannot be trained on; empty when it is valid."""
    return [
        *_check_identity(manifest, expected_name),
        *_check_classes(manifest),
        *_check_splits(manifest),
        *listing.problems,
        *_check_against_bucket(manifest, listing),
        *_check_file_entries(manifest, listing),
    ]


def describe_problems(problems: list[str], limit: int = 20) -> str:
    """One message listing up to ``limit`` problems (Step Functions causes are bounded)."""
    shown = "; ".join(problems[:limit])
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem(s): {shown}{more}"
