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
