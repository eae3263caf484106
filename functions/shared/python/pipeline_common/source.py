"""The packaged training source and its metric definitions in the artifacts bucket.

``mlops publish-training`` writes both (docs/contracts.md). The regexes are read from S3 at
run time so they always belong to the train.py that prints the lines they match.
"""

from __future__ import annotations

from pipeline_common.aws import aws_call
from pipeline_common.errors import ConfigurationError
from pipeline_common.jobs import METRIC_DEFINITIONS_KEY, REQUIRED_METRICS, TRAINING_SOURCE_KEY
from pipeline_common.s3io import MISSING_CODES, S3Client, read_json, s3_uri

PUBLISH_HINT = "publish the training code first (mlops publish-training, see docs/deploy.md)"
MAX_METRIC_DEFINITIONS = 40


def load_metric_definitions(s3: S3Client, bucket: str) -> list[dict[str, str]]:
    """The MetricDefinitions shared with train.py, checked for the metrics the pipeline needs."""
    uri = s3_uri(bucket, METRIC_DEFINITIONS_KEY)
    try:
        with aws_call("GetObject", uri, ok=MISSING_CODES) as call:
            definitions = read_json(s3, bucket, METRIC_DEFINITIONS_KEY)
    except ValueError as e:
        raise ConfigurationError(f"{uri} is not valid JSON ({e}); {PUBLISH_HINT}") from e
    if not call.succeeded:
        raise ConfigurationError(f"{uri} does not exist; {PUBLISH_HINT}") from call.error
    if not isinstance(definitions, list) or not all(
        isinstance(d, dict) and {"Name", "Regex"} <= d.keys() for d in definitions
    ):
        raise ConfigurationError(f"{uri} must be a JSON list of {{'Name', 'Regex'}} objects")
    if len(definitions) > MAX_METRIC_DEFINITIONS:
        raise ConfigurationError(
            f"{uri} defines {len(definitions)} metrics; SageMaker accepts at most "
            f"{MAX_METRIC_DEFINITIONS}"
        )
    names = {d["Name"] for d in definitions}
    missing = [m for m in REQUIRED_METRICS if m not in names]
    if missing:
        raise ConfigurationError(f"{uri} defines no regex for {', '.join(missing)}")
    return [{"Name": str(d["Name"]), "Regex": str(d["Regex"])} for d in definitions]


def require_training_source(s3: S3Client, bucket: str) -> None:
    """Fail before any job starts when sourcedir.tar.gz was never published."""
    uri = s3_uri(bucket, TRAINING_SOURCE_KEY)
    with aws_call("HeadObject", uri, ok=MISSING_CODES) as call:
        s3.head_object(Bucket=bucket, Key=TRAINING_SOURCE_KEY)
    if not call.succeeded:
        raise ConfigurationError(f"{uri} does not exist; {PUBLISH_HINT}") from call.error
