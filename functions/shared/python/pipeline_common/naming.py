"""Deterministic names for everything a run creates.

Names derive from the execution name, so a retried Lambda invocation asks for the very
same resource again (and gets "already exists", which the handlers treat as success)
instead of starting a second, paid-for job. SageMaker limits: tuning jobs 32 characters,
training jobs, models, endpoint configs and endpoints 63, all ``[a-zA-Z0-9-]`` starting
with an alphanumeric. Step Functions execution names: 80 characters.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

DATASET_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
MANIFEST_KEY_PATTERN = re.compile(r"^datasets/(?P<name>[^/]+)/manifest\.json$")
DATASETS_PREFIX = "datasets/"
MANIFEST_FILE = "manifest.json"

TUNING_JOB_MAX = 32
SAGEMAKER_NAME_MAX = 63
EXECUTION_NAME_MAX = 80
HASH_LENGTH = 8


def short_hash(text: str, length: int = HASH_LENGTH) -> str:
    """A stable hex digest prefix: the same input always yields the same suffix."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _fit(project: str, dataset: str, kind: str, suffix: str, limit: int) -> str:
    """Join ``project-dataset-kind-suffix``, shortening only the data set part to fit."""
    fixed = f"{project}--{kind}-{suffix}" if kind else f"{project}--{suffix}"
    room = max(limit - len(fixed), 1)
    part = re.sub(r"[^a-zA-Z0-9-]", "-", dataset)[:room].strip("-") or "ds"
    return f"{project}-{part}-{kind}-{suffix}" if kind else f"{project}-{part}-{suffix}"


def tuning_job_prefix(project: str, dataset: str) -> str:
    """The common start of every tuning job name of one data set (for NameContains)."""
    name = _fit(project, dataset, "tune", "x" * HASH_LENGTH, TUNING_JOB_MAX)
    return name[:-HASH_LENGTH]


def tuning_job_name(project: str, dataset: str, execution_name: str) -> str:
    """E.g. ``mlops-digits-tune-1a2b3c4d`` (at most 32 characters)."""
    return _fit(project, dataset, "tune", short_hash(execution_name), TUNING_JOB_MAX)


def training_job_name(project: str, dataset: str, execution_name: str) -> str:
    """The profiled retrain of the best configuration, e.g. ``mlops-digits-retrain-1a2b3c4d``."""
    return _fit(project, dataset, "retrain", short_hash(execution_name), SAGEMAKER_NAME_MAX)


def model_name(project: str, dataset: str, execution_name: str) -> str:
    """Model and endpoint config share this name (different resource types)."""
    return _fit(project, dataset, "", short_hash(execution_name), SAGEMAKER_NAME_MAX)


def execution_name(dataset: str, version_token: str) -> str:
    """The Step Functions execution name for one manifest version.

    S3 delivers events at least once: the same manifest version always maps to the same
    name, so a repeated event cannot start a second execution (StartExecution answers
    ExecutionAlreadyExists). A new upload of the manifest is a new version, a new name.
    """
    safe = re.sub(r"[^a-zA-Z0-9_-]", "-", dataset)[:40].strip("-") or "dataset"
    return f"{safe}-{short_hash(f'{dataset}#{version_token}', 16)}"


def promotion_execution_name(dataset: str, version: int | None, moment: str) -> str:
    """The execution `mlops deploy` / `mlops rollback` starts to put a registered version on
    the endpoint, e.g. ``deploy-digits-v3-1a2b3c4d`` (one per request: ``moment`` differs)."""
    safe = re.sub(r"[^a-zA-Z0-9_-]", "-", dataset)[:40].strip("-") or "dataset"
    return f"deploy-{safe}-v{version}-{short_hash(moment)}"


def retrain_execution_name(dataset: str, moment: str) -> str:
    """The execution the drift monitor starts to retrain on a data set's newest version, e.g.
    ``retrain-digits-1a2b3c4d`` (one per decision: ``moment`` differs; a retried monitor
    invocation with the same moment meets ExecutionAlreadyExists)."""
    safe = re.sub(r"[^a-zA-Z0-9_-]", "-", dataset)[:40].strip("-") or "dataset"
    return f"retrain-{safe}-{short_hash(moment)}"


class S3ObjectVersion(Protocol):
    """What an S3 event record says about the object (Powertools' and our own models alike)."""

    versionId: str | None
    eTag: str | None


def manifest_version_token(version_id: str | None, etag: str | None) -> str | None:
    """The manifest version a run is named after: version id on a versioned bucket, else the ETag.

    The trigger reads both from the S3 event, the CLI from its PutObject response (where the
    ETag is quoted); both must arrive at the same token, so the CLI can compute the name of the
    execution its upload starts instead of searching for it.
    """
    if version_id and version_id != "null":
        return f"v:{version_id}"
    if etag:
        return f"e:{etag.strip(chr(34))}"
    return None


def version_token(obj: S3ObjectVersion) -> str | None:
    """:func:`manifest_version_token` of an S3 event's object."""
    return manifest_version_token(obj.versionId, obj.eTag)


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN Step Functions gives execution `name` of the state machine (same partition,
    region and account): ``arn:aws:states:r:a:stateMachine:M`` -> ``...:execution:M:name``."""
    head, kind, machine = state_machine_arn.rsplit(":", 2)
    if kind != "stateMachine":
        raise ValueError(f"not a state machine ARN: {state_machine_arn!r}")
    return f"{head}:execution:{machine}:{name}"


def dataset_from_manifest_key(key: str) -> str | None:
    """``datasets/<name>/manifest.json`` -> ``<name>``; None for any other key."""
    match = MANIFEST_KEY_PATTERN.match(key)
    return match.group("name") if match else None


def dataset_prefix(dataset: str) -> str:
    """The S3 prefix of a data set, with a trailing slash."""
    return f"{DATASETS_PREFIX}{dataset}/"


def manifest_key(dataset: str) -> str:
    """``datasets/<name>/manifest.json``: the object whose arrival starts a run."""
    return f"{dataset_prefix(dataset)}{MANIFEST_FILE}"


def run_prefix(execution: str) -> str:
    """Where a run keeps its records in the artifacts bucket: ``runs/<execution>/``."""
    return f"runs/{execution}/"


def class_label(class_name: str) -> str:
    """``003.three`` -> ``three`` (the ``NNN.`` prefix only orders the folders)."""
    head, sep, tail = class_name.partition(".")
    return tail if sep and head.isdigit() and tail else class_name
