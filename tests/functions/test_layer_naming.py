"""pipeline_common.naming: names that fit SageMaker's limits and never collide per run."""

from __future__ import annotations

import re

import pytest
from pipeline_common import naming

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
LONG = "a" * 40


@pytest.mark.parametrize("dataset", ["digits", "dog-breeds", LONG, "a-------------b"])
@pytest.mark.parametrize("project", ["mlops", "abcdefghijkl"])
def test_naming_fits_sagemaker_limits(project, dataset):
    tuning = naming.tuning_job_name(project, dataset, "exec-1")
    training = naming.training_job_name(project, dataset, "exec-1")
    model = naming.model_name(project, dataset, "exec-1")

    assert len(tuning) <= 32 and len(training) <= 63 and len(model) <= 63
    for name in (tuning, training, model):
        assert SAGEMAKER_NAME.match(name), name
        assert name.startswith(f"{project}-")
    assert tuning.startswith(naming.tuning_job_prefix(project, dataset))


def test_naming_is_deterministic_per_execution():
    assert naming.tuning_job_name("mlops", "digits", "run-a") == naming.tuning_job_name(
        "mlops", "digits", "run-a"
    )
    assert naming.tuning_job_name("mlops", "digits", "run-a") != naming.tuning_job_name(
        "mlops", "digits", "run-b"
    )


def test_naming_example_from_the_contract():
    assert re.fullmatch(
        r"mlops-digits-tune-[0-9a-f]{8}", naming.tuning_job_name("mlops", "digits", "x")
    )


def test_naming_execution_name_per_manifest_version():
    first = naming.execution_name("digits", "v:1")

    assert first == naming.execution_name("digits", "v:1")
    assert first != naming.execution_name("digits", "v:2")
    assert len(naming.execution_name(LONG, "v:1")) <= 80
    assert re.fullmatch(r"[A-Za-z0-9_-]+", naming.execution_name("Weird Name!", "v:1"))


@pytest.mark.parametrize(
    ("key", "dataset"),
    [
        ("datasets/digits/manifest.json", "digits"),
        ("datasets/digits/train/manifest.json", None),
        ("datasets/manifest.json", None),
        ("data/digits/manifest.json", None),
    ],
)
def test_naming_dataset_from_manifest_key(key, dataset):
    assert naming.dataset_from_manifest_key(key) == dataset


@pytest.mark.parametrize(
    ("folder", "label"),
    [("003.three", "three"), ("001.Affenpinscher", "Affenpinscher"), ("cat", "cat")],
)
def test_naming_class_label_drops_the_order_prefix(folder, label):
    assert naming.class_label(folder) == label


def test_manifest_version_token_is_the_same_from_the_event_and_from_put_object():
    """The trigger reads the S3 event (ETag unquoted), the CLI its PutObject response (ETag in
    quotes): both must name the same execution."""
    etag = "0123456789abcdef0123456789abcdef"
    assert naming.manifest_version_token(None, etag) == naming.manifest_version_token(
        None, f'"{etag}"'
    )
    assert naming.manifest_version_token("null", f'"{etag}"') == f"e:{etag}"  # versioning off
    assert naming.manifest_version_token("3HL4kqtJ", f'"{etag}"') == "v:3HL4kqtJ"
    assert naming.manifest_version_token(None, None) is None


def test_version_token_of_an_event_object():
    class EventObject:
        versionId = "3HL4kqtJ"
        eTag = "0123"

    assert naming.version_token(EventObject()) == "v:3HL4kqtJ"


def test_execution_arn_and_names_of_similar_data_sets():
    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:mlops-pipeline"
    name = naming.execution_name("dogs", "v:1")
    assert naming.execution_arn(machine, name) == (
        f"arn:aws:states:eu-west-1:123456789012:execution:mlops-pipeline:{name}"
    )
    assert naming.execution_name("hotdogs", "v:1") != name
    with pytest.raises(ValueError, match="not a state machine ARN"):
        naming.execution_arn("arn:aws:states:eu-west-1:1:activity:x", name)
    assert naming.manifest_key("dogs") == "datasets/dogs/manifest.json"
    assert naming.dataset_from_manifest_key(naming.manifest_key("hotdogs")) == "hotdogs"
