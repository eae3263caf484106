"""Data sets for the runs the tests start, written as files and uploaded as `mlops upload` does.

The manifest comes from the one manifest builder (mlops/manifest.py, through the CLI's
upload), never from a dict written by hand, so a test's data set always has the shape a
user's upload has; what makes a data set broken is its files, not a manifest that lies.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mlops.runs import upload_dataset
from mlops.sample_data import write_digits
from mlops.target import Target

BROKEN_CLASS = "000.zero"


def write_tiny_digits(root: Path) -> Path:
    """10 digits per class (6 train, 2 valid, 2 test) as 16x16 RGB PNGs: enough for a run that
    trains every layer in seconds and still passes ValidateDataset's per-class minimums."""
    write_digits(root, max_per_class=10, size=16, seed=0)
    return root


def write_broken_dataset(digits: Path, directory: Path, per_split: int = 3) -> Path:
    """Three images of one class in train and test and an empty valid split.

    The upload takes it (the CLI refuses only a missing split folder); ValidateDataset refuses
    it (one class, no valid images) before any training starts.
    """
    (directory / "valid").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        folder = directory / split / BROKEN_CLASS
        folder.mkdir(parents=True, exist_ok=True)
        for image in sorted((digits / split / BROKEN_CLASS).iterdir())[:per_split]:
            shutil.copy(image, folder / image.name)
    return directory


def upload_broken_dataset(
    target: Target, digits: Path, directory: Path, name: str = "broken"
) -> dict[str, Any]:
    """Write the broken data set under `directory`, upload it; return the execution it starts."""
    return upload_dataset(target, write_broken_dataset(digits, directory / name), name)
