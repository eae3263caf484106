"""Small S3 helpers: URIs, JSON documents and one member of a tar.gz archive."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

S3Client = Any  # a boto3 S3 client; typed loosely to keep the layer free of stub packages

# What S3 answers for an absent object or bucket (HeadObject says 404): aws_call(ok=...).
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket name")
    return bucket, key


def read_json(s3: S3Client, bucket: str, key: str) -> Any:
    """Read and parse a JSON object; ClientError and ValueError propagate to the caller."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return json.loads(body)


def write_json(s3: S3Client, bucket: str, key: str, document: Any) -> str:
    """Write ``document`` as indented JSON and return its s3:// URI."""
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8"),
        ContentType="application/json",
    )
    return s3_uri(bucket, key)


def output_archive_uri(model_artifacts_uri: str) -> str:
    """`.../<job>/output/model.tar.gz` -> `.../<job>/output/output.tar.gz` (SM_OUTPUT_DATA_DIR)."""
    return model_artifacts_uri.rsplit("/", 1)[0] + "/output.tar.gz"


def read_tar_member(archive: bytes, member_name: str) -> bytes | None:
    """Return one file of a .tar.gz by its base name (``./x.json`` or ``x.json``), or None."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar.getmembers():
            name = member.name[2:] if member.name.startswith("./") else member.name
            if member.isfile() and name == member_name:
                extracted = tar.extractfile(member)
                return extracted.read() if extracted else None
    return None
