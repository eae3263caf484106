"""Image folders in the dog-breed layout (`<split>/<NNN.Label>/<image>`) as PyTorch data.

Class index = position in the sorted list of the train split's class folders, so `001.*` is
index 0 and the endpoint's classes.json lines up with the network's outputs. Every file is
decoded once up front: a corrupt or non-image file is reported by name and skipped instead of
killing the job hours in, and a split left with no usable image is a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms

try:  # imported as part of the `training` package (tests, tooling)
    from .inference import ALLOWED_FORMATS, IMAGENET_MEAN, IMAGENET_STD, to_rgb
except ImportError:  # run as a script from inside training/ (SageMaker's entry point)
    from inference import ALLOWED_FORMATS, IMAGENET_MEAN, IMAGENET_STD, to_rgb


class DataError(Exception):
    """The data set cannot be trained on (missing folder, no classes, an empty split)."""


@dataclass
class Split:
    """The usable images of one split and the files that were skipped, with the reason."""

    name: str
    root: Path
    samples: list[tuple[Path, int]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def find_classes(train_dir: Path) -> list[str]:
    """Sorted class folder names of the train split (hidden folders ignored)."""
    if not train_dir.is_dir():
        raise DataError(f"split 'train' folder {train_dir} does not exist")
    # Only the folder's own name counts: the split itself may live under a hidden folder
    # (the local cloud keeps its jobs in .mlops/).
    classes = sorted(
        p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not classes:
        raise DataError(f"split 'train' at {train_dir} has no class folders (<split>/<NNN.Label>/)")
    return classes


def check_image(path: Path) -> str | None:
    """Decode the file fully; return why it is unusable, or None when it is a good image.

    JPEGs are decoded at a reduced scale (draft mode), which still reads the whole stream and
    so still catches truncation, at a fraction of the cost of a full decode.
    """
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as image:
            image.draft("RGB", (64, 64))
            image.load()
            to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def scan_split(name: str, root: Path, classes: list[str]) -> Split:
    """List the usable images of a split; every other file is recorded in `skipped`.

    An empty result is not an error here: the caller reports the skipped files first.
    """
    if not root.is_dir():
        raise DataError(f"split '{name}' folder {root} does not exist")
    split = Split(name, root)
    index = {c: i for i, c in enumerate(classes)}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        reason = _placement_problem(relative, index)
        if reason is None:
            reason = check_image(path)
        if reason is None:
            split.samples.append((path, index[relative.parts[0]]))
        else:
            split.skipped.append({"split": name, "file": relative.as_posix(), "reason": reason})
    return split


def require_images(split: Split) -> None:
    """A split without a single usable image is an error, named with its path."""
    if not split.samples:
        raise DataError(
            f"split '{split.name}' at {split.root} has no usable images "
            f"({len(split.skipped)} files skipped; expected <split>/<class folder>/<image>)"
        )


def _placement_problem(relative: Path, index: dict[str, int]) -> str | None:
    if len(relative.parts) != 2:
        return "not directly inside a class folder"
    if relative.parts[0] not in index:
        return f"class folder {relative.parts[0]!r} is not a class of the train split"
    if _hidden(relative):
        return "hidden file"
    return None


def _hidden(path: Path) -> bool:
    return any(part.startswith(".") for part in path.parts)


# Decoded pixels a dataset keeps in memory (per process: each DataLoader worker has its own).
# The demo's 1,797 digits at 32 px are 5.5 MB; a data set beyond the budget decodes the rest
# every epoch, as before.
DECODED_CACHE_BYTES = 1 << 30


class ImageFolderDataset(Dataset):
    """(image tensor, class index) pairs from a scanned split; any mode is converted to RGB.

    Each file is decoded once: the RGB image is kept (up to `DECODED_CACHE_BYTES`) and only
    the transform, with its random crop, runs again every epoch. Decoding a small PNG costs
    more than transforming it, and a small data set would otherwise be decoded every epoch.
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        transform: transforms.Compose,
        cache_bytes: int = DECODED_CACHE_BYTES,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.cache_bytes = cache_bytes
        self.decoded: dict[int, Image.Image] = {}
        self.cached_bytes = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[i]
        image = self.decoded.get(i)
        if image is None:
            image = self._decode(path)
            size = image.width * image.height * len(image.getbands())
            if self.cached_bytes + size <= self.cache_bytes:
                self.decoded[i] = image
                self.cached_bytes += size
        return self.transform(image), target

    @staticmethod
    def _decode(path: Path) -> Image.Image:
        """The file as a loaded RGB image that outlives the file handle."""
        with Image.open(path, formats=ALLOWED_FORMATS) as image:
            image.load()
            rgb = to_rgb(image)
            return rgb.copy() if rgb is image else rgb


def build_train_transform(image_size: int, resize_size: int, hflip: bool) -> transforms.Compose:
    """Same scale as evaluation (resize, then crop) with a random crop position for augmentation.

    A RandomResizedCrop down to 8% of the area would cut most of a digit away; resize + random
    crop keeps train and serve statistics alike and works for photos and for digits.
    """
    steps: list[object] = [
        transforms.Resize(resize_size, antialias=True),
        transforms.RandomCrop(image_size),
    ]
    if hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return transforms.Compose(steps)


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, workers: int, seed: int
) -> DataLoader:
    """A DataLoader whose shuffle order depends only on `seed` (reproducible runs).

    A training batch of a single image is dropped: BatchNorm cannot train on one value per
    channel (small inputs leave ResNet's last stage at 1x1), and the job would crash on it.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(dataset) % batch_size == 1,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


def make_distributed_loader(
    dataset: Dataset, sampler: DistributedSampler, batch_size: int, workers: int, seed: int
) -> DataLoader:
    """One process's share of the training split, reshuffled each epoch by `sampler.set_epoch`.

    The sampler gives every process ceil(n / processes) indices (a few repeated to even the
    shares), so every process takes the same number of steps, which DistributedDataParallel's
    gradient all-reduce needs. As in `make_loader`, a last batch of one image is dropped.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=len(sampler) % batch_size == 1,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
