"""Check an uploaded data set against its manifest before any compute is spent.

Reads ``datasets/<name>/manifest.json``, lists every object under ``datasets/<name>/`` and
compares the two: splits, class folders, per-class counts, the file count and (when the
manifest lists files) every file's size. Then every image is read (parallel GETs) and checked
with Pillow (pipeline_common.images: header and pixel limit first, then verify and a bounded
decode): a class with fewer readable images than the template's minimum in any split, or a
split with none, is invalid; unreadable files that leave enough are warnings (train.py skips
them). All problems are reported in one DatasetInvalid error, so one failed run tells the
user everything to fix. The smoke test's image is chosen here among the test images that
decoded completely as plain 8-bit RGB or grayscale JPEG/PNG.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from pipeline_common.aws import aws_call, client
from pipeline_common.config import CommonSettings, ValidationSettings
from pipeline_common.errors import DatasetInvalid, DatasetTooLarge
from pipeline_common.images import ImageCheck, check_image_bytes, unreadable
from pipeline_common.kit import count, logger, step
from pipeline_common.manifest import (
    IMAGE_EXTENSIONS,
    SPLITS,
    Manifest,
    ObjectListing,
    describe_problems,
    find_problems,
    parse_manifest,
    summarize_objects,
)
from pipeline_common.models import SampleImage, StepModel, ValidatedDataset
from pipeline_common.naming import dataset_prefix
from pipeline_common.parallel import bounded_map
from pipeline_common.records import VALIDATION, record_key
from pipeline_common.s3io import MISSING_CODES, s3_uri, write_json

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# GETs in flight at once. S3's latency (tens of ms) is hidden by the threads while Pillow's
# decoders release the GIL; the client's connection pool is as large, so none waits for one.
CHECK_WORKERS = 16
# Checks submitted and not yet read: memory stays flat at 100k images (pipeline_common.parallel).
CHECK_BACKLOG = 4 * CHECK_WORKERS
# Stop this long before the Lambda's timeout, so the run ends with DatasetTooLarge and the
# numbers to act on instead of Sandbox.Timedout (which the state machine retries once, whole).
DEADLINE_MARGIN_S = 20.0
s3 = client("s3", max_pool_connections=CHECK_WORKERS)
# Larger objects are not downloaded: no photo for a classifier is this big.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
SMOKE_TEST_IMAGES_PER_CLASS = 3
FILES_NAMED_PER_CLASS = 5
UNREADABLE_RECORDED = 200


@dataclass
class ImageScan:
    """What reading every image found, per (split, class)."""

    readable: Counter[tuple[str, str]] = field(default_factory=Counter)
    unreadable: dict[tuple[str, str], list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # class -> relative keys of test images that decoded completely as plain RGB/L JPEG/PNG
    plain_test: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    readable_test: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def unreadable_count(self) -> int:
        return sum(len(files) for files in self.unreadable.values())

    def add(self, split: str, class_name: str, relative: str, check: ImageCheck) -> None:
        """Count one image's verdict (results arrive in completion order; see sort)."""
        if not check.readable:
            self.unreadable[(split, class_name)].append((relative, check.reason or "unreadable"))
            return
        self.readable[(split, class_name)] += 1
        if split == "test":
            self.readable_test[class_name].append(relative)
            if check.plain:
                self.plain_test[class_name].append(relative)

    def sort(self) -> None:
        """Key order, as if checked one by one: messages and smoke-test images stay stable."""
        for files in (*self.unreadable.values(), *self.plain_test.values()):
            files.sort()
        for keys in self.readable_test.values():
            keys.sort()


class ValidateInput(StepModel):
    """The execution input written by the trigger function."""

    bucket: str
    manifest_key: str
    dataset: str
    execution_name: str


def read_manifest(bucket: str, key: str) -> bytes:
    with aws_call("GetObject", s3_uri(bucket, key), ok=MISSING_CODES) as call:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    raise DatasetInvalid(
        f"s3://{bucket}/{key} no longer exists; upload the data set again with its "
        f"manifest.json written last"
    ) from call.error


def list_relative_keys(bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """Every object under the data set prefix as (key relative to the prefix, size)."""
    paginator = s3.get_paginator("list_objects_v2")
    with aws_call("ListObjectsV2", s3_uri(bucket, prefix)):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(prefix) :], int(item.get("Size", 0))


def image_objects(listing: ObjectListing) -> list[tuple[str, str, str, int]]:
    """(split, class, key relative to the data set, size) of every image, sorted by key."""
    found = []
    for relative, size in sorted(listing.sizes.items()):
        parts = relative.split("/")
        is_image = PurePosixPath(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS
        if len(parts) == 3 and parts[0] in SPLITS and is_image:
            found.append((parts[0], parts[1], relative, size))
    return found


def check_object(bucket: str, key: str, size: int, full_decode: bool) -> ImageCheck:
    """Read one image object and judge it; a size of 0 or above the limit needs no GET."""
    if size == 0:
        return unreadable("empty file (0 bytes)")
    if size > MAX_IMAGE_BYTES:
        return unreadable(f"{size} bytes, over the limit of {MAX_IMAGE_BYTES} bytes per image")
    with aws_call("GetObject", s3_uri(bucket, key), ok=MISSING_CODES):
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return check_image_bytes(data, full_decode=full_decode)
    return unreadable("deleted after the manifest was written")


def scan_images(
    bucket: str,
    prefix: str,
    listing: ObjectListing,
    remaining_s: Callable[[], float] | None = None,
) -> ImageScan:
    """Check every image, CHECK_WORKERS at a time (S3 latency dominates, Pillow frees the GIL).

    Test images are decoded completely (the smoke test sends one); train/valid JPEGs in
    draft mode, which still reads every byte. `remaining_s` is the Lambda's time left: when
    it falls under DEADLINE_MARGIN_S the scan stops with DatasetTooLarge (see there).
    """
    objects = image_objects(listing)
    scan = ImageScan()
    started = time.monotonic()

    def check(item: tuple[str, str, str, int]) -> ImageCheck:
        split, _, relative, size = item
        return check_object(bucket, prefix + relative, size, full_decode=split == "test")

    with ThreadPoolExecutor(max_workers=CHECK_WORKERS) as pool:
        results = bounded_map(pool, check, objects, CHECK_BACKLOG)
        for done, ((split, class_name, relative, _), result) in enumerate(results, 1):
            scan.add(split, class_name, relative, result)
            if remaining_s is not None and remaining_s() < DEADLINE_MARGIN_S:
                results.close()  # cancels what has not started
                raise too_large(done, len(objects), time.monotonic() - started)
    scan.sort()
    return scan


def too_large(done: int, total: int, seconds: float) -> DatasetTooLarge:
    """The numbers a person needs to size ValidateDatasetFunction for this data set."""
    rate = done / seconds if seconds > 0 else 0.0
    needed = f"about {total / rate:.0f} s" if rate > 0 else "longer"
    return DatasetTooLarge(
        f"validation read {done} of {total} images in {seconds:.0f} s ({rate:.0f} images/s) "
        f"and stopped before the Lambda's timeout; all {total} need {needed}. Raise "
        f"ValidateDatasetFunction's MemorySize in template.yaml (its CPU share grows with "
        f"memory: 1769 MB is one vCPU) or its Timeout (at most 900 s, with the ASL's "
        f"TimeoutSeconds above it), or split the data set"
    )


def _named_files(files: list[tuple[str, str]]) -> str:
    named = ", ".join(f"{key} ({reason})" for key, reason in files[:FILES_NAMED_PER_CLASS])
    extra = len(files) - FILES_NAMED_PER_CLASS
    return named + (f" and {extra} more" if extra > 0 else "")


def image_problems(manifest: Manifest, scan: ImageScan, settings: ValidationSettings) -> list[str]:
    """Splits without a readable image, classes below the minimum, each named with its files."""
    problems = []
    for split in SPLITS:
        if not any(scan.readable[(split, c)] for c in manifest.classes):
            problems.append(f"split {split} has no readable image")
        minimum = settings.minimum(split)
        for class_name in manifest.classes:
            readable = scan.readable[(split, class_name)]
            if readable >= minimum:
                continue
            bad = scan.unreadable.get((split, class_name), [])
            problems.append(
                f"class {class_name} has {readable} readable images in {split}/, fewer than the "
                f"minimum of {minimum}"
                + (f"; unreadable: {_named_files(bad)}" if bad else "")
                + " (add images, or lower MinTrainImagesPerClass/MinEvalImagesPerClass)"
            )
    return problems


def image_warnings(manifest: Manifest, scan: ImageScan, settings: ValidationSettings) -> list[str]:
    """What passes but deserves a look: unreadable files (skipped) and small classes."""
    warnings = []
    for split in SPLITS:
        bad = [f for c in manifest.classes for f in scan.unreadable.get((split, c), [])]
        if bad:
            warnings.append(
                f"{len(bad)} unreadable image(s) in {split}/ will be skipped: {_named_files(bad)}"
            )
        minimum = settings.minimum(split)
        small = [
            f"{c} ({scan.readable[(split, c)]})"
            for c in manifest.classes
            if scan.readable[(split, c)] < 2 * minimum
        ]
        if small:
            warnings.append(
                f"small classes in {split}/ (fewer than {2 * minimum} readable images): "
                f"{', '.join(small)}; their accuracy will be noisy"
            )
    return warnings


def smoke_test_images(manifest: Manifest, scan: ImageScan, prefix: str) -> list[SampleImage]:
    """Up to SMOKE_TEST_IMAGES_PER_CLASS test images per class, plain ones first.

    Plain (8-bit RGB/grayscale JPEG/PNG that decoded completely) images test the model, not
    the endpoint's converter; a data set with none falls back to any readable test image.
    """
    chosen = []
    for index, class_name in enumerate(manifest.classes):
        keys = scan.plain_test.get(class_name) or scan.readable_test.get(class_name) or []
        chosen += [
            SampleImage(key=prefix + key, class_index=index, class_name=class_name)
            for key in keys[:SMOKE_TEST_IMAGES_PER_CLASS]
        ]
    if not any(scan.plain_test.values()):
        return chosen
    plain = {prefix + k for keys in scan.plain_test.values() for k in keys}
    return sorted(chosen, key=lambda image: image.key not in plain)


def image_record(scan: ImageScan, manifest: Manifest) -> dict[str, Any]:
    """validation.json's account of the images: counts per split and class, unreadable files."""
    unreadable = [
        {"split": split, "class": class_name, "file": key, "reason": reason}
        for (split, class_name), files in sorted(scan.unreadable.items())
        for key, reason in files
    ]
    return {
        "readable": {
            split: {c: scan.readable[(split, c)] for c in manifest.classes} for split in SPLITS
        },
        "unreadable": {
            split: {c: len(scan.unreadable.get((split, c), [])) for c in manifest.classes}
            for split in SPLITS
        },
        "unreadable_count": len(unreadable),
        "unreadable_files": unreadable[:UNREADABLE_RECORDED],
    }


def summary(
    event: ValidateInput, manifest: Manifest, prefix: str, samples: list[SampleImage]
) -> ValidatedDataset:
    return ValidatedDataset(
        name=event.dataset,
        bucket=event.bucket,
        prefix=prefix,
        manifest_key=event.manifest_key,
        class_count=len(manifest.classes),
        counts={split: sum(manifest.splits[split].values()) for split in SPLITS},
        channels={split: s3_uri(event.bucket, f"{prefix}{split}/") for split in SPLITS},
        sample_image=samples[0],
    )


def reject(event: ValidateInput, problems: list[str]) -> DatasetInvalid:
    logger.warning({"operation": "validate", "dataset": event.dataset, "problems": problems[:50]})
    count("DatasetsRejected")
    return DatasetInvalid(
        f"data set {event.dataset} (s3://{event.bucket}/{dataset_prefix(event.dataset)}) is "
        f"invalid, nothing was trained: {describe_problems(problems)}. Fix the files and "
        f"upload manifest.json again"
    )


@step(ValidateInput)
def lambda_handler(event: ValidateInput, context: LambdaContext) -> ValidatedDataset:
    common = CommonSettings.from_env()
    settings = ValidationSettings.from_env()
    if event.bucket != common.data_bucket:
        raise DatasetInvalid(
            f"manifest s3://{event.bucket}/{event.manifest_key} is not in the pipeline's data "
            f"bucket {common.data_bucket}; upload it there"
        )
    prefix = dataset_prefix(event.dataset)
    manifest, problems = parse_manifest(read_manifest(event.bucket, event.manifest_key))
    if manifest is None:
        raise reject(event, problems)
    listing = summarize_objects(list_relative_keys(event.bucket, prefix))
    problems = find_problems(manifest, event.dataset, listing)
    if problems:
        raise reject(event, problems)
    scan = scan_images(
        event.bucket, prefix, listing, lambda: context.get_remaining_time_in_millis() / 1000
    )
    problems = image_problems(manifest, scan, settings)
    if problems:
        raise reject(event, problems)
    samples = smoke_test_images(manifest, scan, prefix)
    result = summary(event, manifest, prefix, samples)
    warnings = image_warnings(manifest, scan, settings)
    key = record_key(event.execution_name, VALIDATION)
    with aws_call("PutObject", s3_uri(common.artifacts_bucket, key)):
        write_json(
            s3,
            common.artifacts_bucket,
            key,
            {
                "dataset": result.model_dump(),
                "classes": manifest.classes,
                "images": image_record(scan, manifest),
                "minimum_images_per_class": {split: settings.minimum(split) for split in SPLITS},
                "warnings": warnings,
                "smoke_test_images": [image.model_dump() for image in samples],
            },
        )
    logger.info(
        {
            "operation": "validate",
            "dataset": event.dataset,
            "counts": result.counts,
            "unreadable": scan.unreadable_count,
            "warnings": warnings[:20],
        }
    )
    count("DatasetsAccepted")
    count("UnreadableImages", scan.unreadable_count)
    return result
