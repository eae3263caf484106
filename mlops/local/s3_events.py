"""S3 event notifications from the local S3 carry the object's versionId, as AWS's do.

moto 5.2.5 builds the record's `s3.object` with key, size and eTag only. On AWS a versioned
bucket's events also carry `versionId` (and every event a `sequencer`), and the trigger names
each execution after the manifest's version, so a second upload of the same data set starts a
new run. Without the version id the trigger falls back to the ETag, an identical manifest gets
the name of the earlier run, and the re-upload is taken for a repeated event. This patches
moto's one builder of that record (`moto.s3.notifications._get_s3_event`); nothing else
changes.

moto also leaves out what every AWS record carries besides ``s3.object``: userIdentity,
requestParameters, responseElements and the bucket's ownerIdentity
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
The trigger parses records with Powertools' S3 model, which requires them as AWS sends them,
so they are added here with the local account's values.
"""

from __future__ import annotations

import uuid
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3 import notifications

_ORIGINAL = notifications._get_s3_event


def _get_s3_event_with_version(
    event_name: str, bucket: Any, key: Any, notification_id: str
) -> dict[str, list[dict[str, Any]]]:
    event = _ORIGINAL(event_name, bucket, key, notification_id)
    version = getattr(key, "version_id", None)
    for record in event["Records"]:
        record.setdefault("userIdentity", {"principalId": f"AWS:{DEFAULT_ACCOUNT_ID}"})
        record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
        record.setdefault(
            "responseElements",
            {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": "local"},
        )
        owner = getattr(bucket, "account_id", DEFAULT_ACCOUNT_ID)
        record["s3"]["bucket"].setdefault("ownerIdentity", {"principalId": owner})
        obj = record["s3"]["object"]
        if version and version != "null":
            obj["versionId"] = version
        # AWS: a hex string that orders events of one key; the version's time does that here.
        stamp = getattr(key, "last_modified", None)
        if stamp is not None:
            obj["sequencer"] = f"{int(stamp.timestamp() * 1e6):016X}"
    return event


def install() -> None:
    """Idempotent: the local cloud calls it once it starts moto."""
    notifications._get_s3_event = _get_s3_event_with_version


__all__ = ["install"]
