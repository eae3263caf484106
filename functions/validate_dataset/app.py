"""Check an uploaded data set against its manifest before any compute is spent.

Reads ``datasets/<name>/manifest.json``, lists every object under ``datasets/<name>/`` and
compares the two: splits, class folders, per-class counts, the file count and (when the
manifest lists files) every file's size. All problems are reported in one DatasetInvalid
error, so one failed run tells the user everything to fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from botocore.exceptions import ClientError
from pipeline_common.aws import aws_call, client, translate_client_error
from pipeline_common.config import CommonSettings
from pipeline_common.errors import DatasetInvalid
from pipeline_common.manifest import (
    SPLITS,
    Manifest,
    ObjectListing,
    describe_problems,
    find_problems,
    parse_manifest,
    summarize_objects,
)
from pipeline_common.models import SampleImage, StepModel, ValidatedDataset
from pipeline_common.naming import dataset_prefix, run_prefix
from pipeline_common.s3io import is_missing, s3_uri, write_json

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer()
metrics = Metrics()
s3 = client("s3")


class ValidateInput(StepModel):
    """The execution input written by the trigger function."""

    bucket: str
    manifest_key: str
    dataset: str
    execution_name: str


def read_manifest(bucket: str, key: str) -> bytes:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if is_missing(e):
            raise DatasetInvalid(
                f"s3://{bucket}/{key} no longer exists; upload the data set again with its "
                f"manifest.json written last"
            ) from e
        raise translate_client_error(e, "GetObject", s3_uri(bucket, key)) from e


def list_relative_keys(bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """Every object under the data set prefix as (key relative to the prefix, size)."""
    paginator = s3.get_paginator("list_objects_v2")
    with aws_call("ListObjectsV2", s3_uri(bucket, prefix)):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(prefix) :], int(item.get("Size", 0))


def sample_test_image(manifest: Manifest, listing: ObjectListing, prefix: str) -> SampleImage:
    """The first test image of the first class: a real input for the smoke test."""
    class_name = manifest.classes[0]
    relative = listing.first_image[("test", class_name)]
    return SampleImage(key=prefix + relative, class_index=0, class_name=class_name)


def summary(
    event: ValidateInput, manifest: Manifest, listing: ObjectListing, prefix: str
) -> ValidatedDataset:
    return ValidatedDataset(
        name=event.dataset,
        bucket=event.bucket,
        prefix=prefix,
        manifest_key=event.manifest_key,
        class_count=len(manifest.classes),
        counts={split: sum(manifest.splits[split].values()) for split in SPLITS},
        channels={split: s3_uri(event.bucket, f"{prefix}{split}/") for split in SPLITS},
        sample_image=sample_test_image(manifest, listing, prefix),
    )


def reject(event: ValidateInput, problems: list[str]) -> DatasetInvalid:
    logger.warning({"operation": "validate", "dataset": event.dataset, "problems": problems[:50]})
    metrics.add_metric(name="DatasetsRejected", unit=MetricUnit.Count, value=1)
    return DatasetInvalid(
        f"data set {event.dataset} (s3://{event.bucket}/{dataset_prefix(event.dataset)}) is "
        f"invalid, nothing was trained: {describe_problems(problems)}. Fix the files and "
        f"upload manifest.json again"
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=ValidateInput)
def lambda_handler(event: ValidateInput, context: LambdaContext) -> dict[str, Any]:
    common = CommonSettings.from_env()
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
    result = summary(event, manifest, listing, prefix)
    with aws_call("PutObject", f"{run_prefix(event.execution_name)}validation.json"):
        write_json(
            s3,
            common.artifacts_bucket,
            f"{run_prefix(event.execution_name)}validation.json",
            {"dataset": result.model_dump(), "classes": manifest.classes},
        )
    logger.info({"operation": "validate", "dataset": event.dataset, "counts": result.counts})
    metrics.add_metric(name="DatasetsAccepted", unit=MetricUnit.Count, value=1)
    return result.model_dump()
