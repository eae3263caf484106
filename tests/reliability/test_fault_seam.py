"""The local SageMaker's fault-injection seam (mlops/local/sagemaker/faults.py)."""

from __future__ import annotations

import pytest

from mlops.local.sagemaker.faults import FAULTS_ENV, Faults, parse_faults


def test_faults_parse_names_and_arguments() -> None:
    assert parse_faults("training_fail=a|b, endpoint_start_fail,throttle=X:2") == {
        "training_fail": "a|b",
        "endpoint_start_fail": "",
        "throttle": "X:2",
    }


def test_faults_hit_any_alternative_of_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "training_fail=-001-|-retrain-")
    faults = Faults()

    assert faults.hits("training_fail", "mlops-a-tune-1234abcd-001-0f0f0f0f")
    assert faults.hits("training_fail", "mlops-c-retrain-1234abcd")
    assert not faults.hits("training_fail", "mlops-a-tune-1234abcd-002-0f0f0f0f")


def test_faults_hit_when_any_resource_name_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "endpoint_start_fail=relib")
    faults = Faults()

    assert faults.hits("endpoint_start_fail", "mlops-classifier", "mlops-relib-1234abcd")
    assert not faults.hits("endpoint_start_fail", "mlops-classifier", "mlops-relia-1234abcd")


def test_faults_without_argument_hit_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "endpoint_start_fail")

    assert Faults().hits("endpoint_start_fail", "anything")
    assert not Faults().hits("training_fail", "anything")


def test_faults_throttle_is_consumed_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "throttle=CreateHyperParameterTuningJob:2")
    faults = Faults()

    answers = [faults.should_throttle("CreateHyperParameterTuningJob") for _ in range(3)]

    assert answers == [True, True, False]
    assert not faults.should_throttle("DescribeEndpoint")
