"""The model registry's vocabulary: one model package group per project and data set, one
version per gated retrain.

RegisterModel writes a version (its image, model data and environment, the run's records as
ModelMetrics, the gate's findings in CustomerMetadataProperties); DeployEndpoint creates the
endpoint's model from that version; ``mlops models`` and the report read these keys back. The
metadata keys are defined here once, so a writer and a reader cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pipeline_common.naming import short_hash

ApprovalStatus = Literal["Approved", "Rejected", "PendingManualApproval"]

# What the model server (training/inference.py) accepts and answers; a test keeps them equal.
SUPPORTED_CONTENT_TYPES = (
    "image/jpeg",
    "image/png",
    "application/x-image",
    "application/octet-stream",
    "application/json",
)
RESPONSE_TYPES = ("application/json",)

# CustomerMetadataProperties keys (AWS: at most 50 entries, keys 128 and values 256 characters).
DATASET_KEY = "dataset"
MANIFEST_VERSION_KEY = "manifest-version"
EXECUTION_KEY = "execution"
TUNING_JOB_KEY = "tuning-job"
TRAINING_JOB_KEY = "training-job"
TEST_ACCURACY_KEY = "test-accuracy"
BASELINE_ACCURACY_KEY = "baseline-accuracy"
GATE_KEY = "gate"
FINDING_KEY_PREFIX = "finding:"
METADATA_VALUE_MAX = 256
METADATA_ENTRIES_MAX = 50

MODEL_PACKAGE_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[^:]*:[0-9]{12}:model-package/(?P<group>[^/]+)/(?P<version>[0-9]+)$"
)


def model_package_group_name(project: str, dataset: str) -> str:
    """E.g. ``mlops-digits-models`` (the template's ProjectName and data set name patterns keep
    it within SageMaker's 63 characters and ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``)."""
    return f"{project}-{dataset}-models"


def client_token(execution_name: str) -> str:
    """CreateModelPackage's idempotency token for one run: a retried invocation gets the version
    the first one created, not a second one (at most 36 characters of ``[a-zA-Z0-9-]``)."""
    return f"register-{short_hash(execution_name, 16)}"


def package_version(arn: str) -> int | None:
    """``arn:...:model-package/mlops-digits-models/7`` -> 7 (None for an unversioned ARN)."""
    match = MODEL_PACKAGE_ARN.match(arn)
    return int(match.group("version")) if match else None


def inference_container(image: str, model_data: str, region: str) -> dict[str, Any]:
    """The PyTorch inference container serving the archive's code/inference.py."""
    return {
        "Image": image,
        "ModelDataUrl": model_data,
        "Environment": {
            "SAGEMAKER_PROGRAM": "inference.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
            "SAGEMAKER_REGION": region,
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        },
    }


def metadata_value(value: object) -> str:
    """A CustomerMetadataProperties value: text, cut to AWS's 256 characters."""
    text = "" if value is None else str(value)
    return text if len(text) <= METADATA_VALUE_MAX else text[: METADATA_VALUE_MAX - 3] + "..."


def finding_properties(findings: list[dict[str, str]], room: int) -> dict[str, str]:
    """``finding:<source>:<check>`` -> ``<status> (<severity>): <details>``, at most ``room``."""
    properties: dict[str, str] = {}
    for finding in findings[: max(room, 0)]:
        key = f"{FINDING_KEY_PREFIX}{finding.get('source', '?')}:{finding.get('check', '?')}"
        value = f"{finding.get('status')} ({finding.get('severity')}): {finding.get('details', '')}"
        properties[key[:128]] = metadata_value(value)
    return properties
