"""Build the demo data set: scikit-learn's bundled handwritten digits in the dog-breed layout.

Real images from a well-kept package, no download: `load_digits()` ships 1797 8x8 grayscale
digits. They are written as RGB PNGs under `train|valid|test/NNN.digit_name/NNNN.png` (the same
layout as the dog-breed data, so the pipeline cannot tell them apart), split per class so every
split has every class (stratified), with a seeded shuffle so the same seed gives the same files.

    python -m mlops.sample_data data/digits [--max-per-class 12] [--size 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pipeline_common.manifest import MANIFEST_FILE, SPLITS

from mlops.manifest import build_manifest, list_dataset_files

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# load_digits pixel values run 0 (paper) .. 16 (ink).
_MAX_INK = 16.0


def class_folder(digit: int) -> str:
    """`3` -> `003.three`: sorted folder order is the class index, as in the dog-breed data."""
    return f"{digit:03d}.{DIGIT_NAMES[digit]}"


def split_indices(
    indices: list[int], valid_fraction: float, test_fraction: float, rng: random.Random
) -> dict[str, list[int]]:
    """Shuffle one class's samples and cut them into train/valid/test.

    valid and test get at least one sample each when the class has three or more, so a tiny
    capped data set still has every class in every split.
    """
    shuffled = list(indices)
    rng.shuffle(shuffled)
    n = len(shuffled)
    n_valid = max(1, round(n * valid_fraction)) if n >= 3 else 0
    n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
    return {
        "valid": shuffled[:n_valid],
        "test": shuffled[n_valid : n_valid + n_test],
        "train": shuffled[n_valid + n_test :],
    }


def digit_image(pixels: np.ndarray, size: int) -> Image.Image:
    """An 8x8 digit as dark ink on white paper, scaled to size x size, in RGB."""
    gray = (255.0 - pixels.reshape(8, 8) * (255.0 / _MAX_INK)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(gray, mode="L")
    if size != 8:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image.convert("RGB")


def write_digits(
    out_dir: str | Path,
    *,
    seed: int = 0,
    valid_fraction: float = 0.15,
    test_fraction: float = 0.15,
    max_per_class: int | None = None,
    size: int = 32,
    overwrite: bool = False,
    manifest: bool = False,
) -> dict[str, Any]:
    """Write the digits under `out_dir`; return their data set manifest (what `upload` builds).

    `max_per_class` caps the images per class before splitting (for tiny test data sets).
    Existing split folders are an error unless `overwrite` (stale files would leak into a run).
    With `manifest`, the summary is also written as `out_dir/manifest.json` (schema version 1).
    """
    from sklearn.datasets import load_digits  # heavy import, only needed when writing

    _check_fractions(valid_fraction, test_fraction)
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be at least 1, got {max_per_class}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    root = Path(out_dir)
    _prepare_out_dir(root, overwrite)

    digits = load_digits()
    rng = random.Random(seed)
    for digit in range(len(DIGIT_NAMES)):
        indices = [int(i) for i in np.flatnonzero(digits.target == digit)]
        if max_per_class is not None:
            indices = rng.sample(indices, min(max_per_class, len(indices)))
        for split, chosen in split_indices(indices, valid_fraction, test_fraction, rng).items():
            folder = root / split / class_folder(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for index in sorted(chosen):
                path = folder / f"{index:04d}.png"
                digit_image(digits.images[index], size).save(path, format="PNG")

    summary = build_manifest(root.name, list_dataset_files(root))
    if manifest:
        (root / MANIFEST_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError("valid_fraction + test_fraction must leave something to train on")


def _prepare_out_dir(root: Path, overwrite: bool) -> None:
    existing = [root / s for s in SPLITS if (root / s).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(str(p) for p in existing)} already exist; "
            "pass overwrite=True (--overwrite) to replace them"
        )
    for path in existing:
        shutil.rmtree(path)
    (root / MANIFEST_FILE).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write scikit-learn's digits as RGB PNGs in the "
        "train|valid|test/NNN.label layout."
    )
    parser.add_argument("out_dir", type=str, help="folder to write train/, valid/ and test/ into")
    parser.add_argument("--seed", default=0, type=int, help="seed of the split shuffle")
    parser.add_argument(
        "--valid-fraction", default=0.15, type=float, help="share of each class for validation"
    )
    parser.add_argument(
        "--test-fraction", default=0.15, type=float, help="share of each class for the test split"
    )
    parser.add_argument(
        "--max-per-class",
        default=None,
        type=int,
        help="cap on images per class before splitting (tiny data sets for tests)",
    )
    parser.add_argument(
        "--size", default=32, type=int, help="side of the written PNGs in pixels (8 = original)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing train/valid/test folders"
    )
    parser.add_argument(
        "--manifest", action="store_true", help="also write manifest.json (schema version 1)"
    )
    return parser


def main(args: argparse.Namespace) -> None:
    summary = write_digits(
        args.out_dir,
        seed=args.seed,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        max_per_class=args.max_per_class,
        size=args.size,
        overwrite=args.overwrite,
        manifest=args.manifest,
    )
    totals = {split: sum(c.values()) for split, c in summary["splits"].items()}
    print(
        f"wrote {summary['file_count']} images of {len(summary['classes'])} classes to "
        f"{args.out_dir}: " + ", ".join(f"{split} {n}" for split, n in totals.items())
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
