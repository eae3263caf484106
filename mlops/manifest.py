"""Building the data set manifest (schema in docs/contracts.md) from a local folder.

The manifest is uploaded last: its arrival in S3 is what starts a run, so it must describe
exactly what was uploaded before it. The schema, the splits and the name rule are the
pipeline's (pipeline_common), so the uploader cannot drift from what ValidateDataset checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_common.manifest import SCHEMA_VERSION, SPLITS, Manifest
from pipeline_common.naming import DATASET_NAME_PATTERN


class DatasetFolderError(ValueError):
    """The local folder is not a data set in the dog-breed layout; the message says why."""


@dataclass(frozen=True)
class DatasetFile:
    path: Path
    key: str  # relative to datasets/<name>/
    size: int


def check_dataset_name(name: str) -> str:
    if not DATASET_NAME_PATTERN.match(name):
        raise DatasetFolderError(
            f"Data set name {name!r} is not valid: use 1-40 lowercase letters, digits and '-', "
            "starting with a letter or digit (it becomes part of SageMaker job names)"
        )
    return name


def list_dataset_files(root: Path, skipped: list[Path] | None = None) -> list[DatasetFile]:
    """Every file under <root>/<split>/<class>/, in a stable order; layout errors name the fix.

    Symbolic links are never followed (a link could point anywhere on the machine): links to
    files or folders are left out and appended to ``skipped``, so the caller can say so, and a
    split folder that is a link is refused.
    """
    if not root.is_dir():
        raise DatasetFolderError(f"{root} is not a folder")
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise DatasetFolderError(
            f"{root} has no {', '.join(missing)} folder(s): expected "
            f"{'|'.join(SPLITS)}/<NNN.Label>/<image> (e.g. train/001.Affenpinscher/x.jpg)"
        )
    linked = [split for split in SPLITS if (root / split).is_symlink()]
    if linked:
        raise DatasetFolderError(
            f"{', '.join(str(root / s) for s in linked)} is a symbolic link: the upload does not "
            "follow links out of the data set folder; copy the files in instead"
        )
    files = []
    for split in SPLITS:
        for path in sorted((root / split).rglob("*")):
            if path.is_symlink():
                if skipped is not None:
                    skipped.append(path)
                continue
            if path.is_file() and not path.name.startswith("."):
                relative = path.relative_to(root)
                if len(relative.parts) != 3:
                    raise DatasetFolderError(
                        f"{relative} is not at <split>/<class>/<file>: move it into a class folder"
                    )
                files.append(DatasetFile(path, relative.as_posix(), path.stat().st_size))
    if not files:
        raise DatasetFolderError(f"{root} holds no files")
    return files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(item: DatasetFile, known: Mapping[str, str]) -> str:
    return known.get(item.key) or sha256_of(item.path)


def build_manifest(
    name: str,
    files: list[DatasetFile],
    checksums: bool = True,
    sha256: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The manifest for `files`; class list = union of class folders over the splits, sorted.

    `sha256` maps keys to digests already computed (the upload reads each file once); a file
    missing from it is read here.

    Checked against the pipeline's own schema (:class:`pipeline_common.manifest.Manifest`)
    before it is returned: a manifest the pipeline would refuse must not start a run.
    """
    splits: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for item in files:
        split, label, _ = item.key.split("/")
        splits[split][label] = splits[split].get(label, 0) + 1
    classes = sorted({label for counts in splits.values() for label in counts})
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "dataset": name,
        "classes": classes,
        "splits": {split: dict(sorted(counts.items())) for split, counts in splits.items()},
        "file_count": len(files),
    }
    if checksums:
        known = sha256 or {}
        manifest["files"] = [
            {"key": item.key, "size": item.size, "sha256": _digest(item, known)} for item in files
        ]
    Manifest.model_validate(manifest)
    return manifest
