"""check_status: the wait loops' describe step and its terminal failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.stub import Stubber
from pipeline_common.errors import (
    EndpointFailed,
    JobNotFound,
    SageMakerThrottled,
    TrainingFailed,
    TuningFailed,
)

from tests.functions.handler_helpers import endpoint, training_job, tuning_job

TUNING = "mlops-digits-tune-1a2b3c4d"
TRAINING = "mlops-digits-retrain-1a2b3c4d"
ENDPOINT = "mlops-classifier"


@pytest.fixture
def app(load_handler):
    return load_handler("check_status")


def check(app, context, stub_operation, answer, **event):
    with Stubber(app.sagemaker) as stub:
        stub.add_response(stub_operation, answer)
        return app.lambda_handler(event, context)


@pytest.mark.parametrize(
    ("status", "done"), [("InProgress", False), ("Stopping", False), ("Completed", True)]
)
def test_check_status_tuning_progress(app, context, status, done):
    result = check(
        app,
        context,
        "describe_hyper_parameter_tuning_job",
        tuning_job(TUNING, status),
        kind="tuning",
        name=TUNING,
    )

    assert result["done"] is done
    assert result["counters"]["Completed"] == 2


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_check_status_tuning_failed_names_reason_and_trials(app, context, status):
    answer = tuning_job(TUNING, status, FailureReason="All training jobs failed")

    with pytest.raises(TuningFailed) as error:
        check(
            app, context, "describe_hyper_parameter_tuning_job", answer, kind="tuning", name=TUNING
        )

    assert f"tuning job {TUNING} ended {status}: All training jobs failed" in str(error.value)
    assert "failed: 1" in str(error.value)


def test_check_status_missing_job(app, context):
    with Stubber(app.sagemaker) as stub:
        stub.add_client_error(
            "describe_hyper_parameter_tuning_job", "ResourceNotFound", "Amazon SageMaker can't find"
        )
        with pytest.raises(JobNotFound, match=TUNING):
            app.lambda_handler({"kind": "tuning", "name": TUNING}, context)


def test_check_status_throttled_is_retryable(app, context):
    with Stubber(app.sagemaker) as stub:
        stub.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded")
        with pytest.raises(SageMakerThrottled):
            app.lambda_handler({"kind": "training", "name": TRAINING}, context)


def test_check_status_training_in_progress(app, context):
    result = check(
        app,
        context,
        "describe_training_job",
        training_job(TRAINING, "InProgress"),
        kind="training",
        name=TRAINING,
    )

    assert result["done"] is False


def test_check_status_training_waits_for_rule_evaluations(app, context):
    answer = training_job(
        TRAINING,
        rules=[("LossNotDecreasing", "InProgress"), ("Overfit", "NoIssuesFound")],
        ended=datetime.now(UTC),
    )

    result = check(app, context, "describe_training_job", answer, kind="training", name=TRAINING)

    assert result["done"] is False
    assert result["pending_rules"] == ["LossNotDecreasing"]


def test_check_status_training_stops_waiting_for_rules_after_the_limit(app, context):
    answer = training_job(
        TRAINING,
        rules=[("LossNotDecreasing", "InProgress")],
        ended=datetime.now(UTC) - timedelta(hours=2),
    )

    result = check(app, context, "describe_training_job", answer, kind="training", name=TRAINING)

    assert result["done"] is True
    assert result["rules_timed_out"] is True


def test_check_status_training_done_when_rules_finished(app, context):
    answer = training_job(
        TRAINING, rules=[("LossNotDecreasing", "IssuesFound"), ("Overfit", "Error")]
    )

    result = check(app, context, "describe_training_job", answer, kind="training", name=TRAINING)

    assert result["done"] is True
    assert result["pending_rules"] == []


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_check_status_training_failed(app, context, status):
    answer = training_job(TRAINING, status, FailureReason="AlgorithmError: CUDA out of memory")

    with pytest.raises(TrainingFailed, match="AlgorithmError: CUDA out of memory"):
        check(app, context, "describe_training_job", answer, kind="training", name=TRAINING)


@pytest.mark.parametrize("status", ["Creating", "Updating", "SystemUpdating", "RollingBack"])
def test_check_status_endpoint_in_transition(app, context, status):
    answer = endpoint(ENDPOINT, status, config="mlops-digits-1a2b3c4d")

    result = check(
        app,
        context,
        "describe_endpoint",
        answer,
        kind="endpoint",
        name=ENDPOINT,
        expected_config="mlops-digits-1a2b3c4d",
    )

    assert result["done"] is False


def test_check_status_endpoint_in_service_with_this_runs_config(app, context):
    answer = endpoint(ENDPOINT, "InService", config="mlops-digits-1a2b3c4d")

    result = check(
        app,
        context,
        "describe_endpoint",
        answer,
        kind="endpoint",
        name=ENDPOINT,
        expected_config="mlops-digits-1a2b3c4d",
    )

    assert result["done"] is True


def approved_at(value: str | None) -> dict:
    return {"Tags": [{"Key": "mlops:approved-at", "Value": value}] if value else []}


def check_replaced_endpoint(app, context, ours: str | None, serving: str | None) -> dict:
    """This run's config approved at ``ours``; another config, approved at ``serving``, serves."""
    with Stubber(app.sagemaker) as stub:
        stub.add_response(
            "describe_endpoint", endpoint(ENDPOINT, "InService", config="mlops-digits-00000000")
        )
        stub.add_response("list_tags", approved_at(ours))
        if ours:
            stub.add_response("list_tags", approved_at(serving))
        return app.lambda_handler(
            {"kind": "endpoint", "name": ENDPOINT, "expected_config": "mlops-digits-1a2b3c4d"},
            context,
        )


@pytest.mark.parametrize(
    ("ours", "serving"),
    [
        ("2026-11-25T12:00:00+00:00", "2026-11-25T11:00:00+00:00"),  # the old model is back
        ("2026-11-25T12:00:00+00:00", None),  # a config from before approval times
        (None, None),
    ],
)
def test_check_status_endpoint_rolled_back(app, context, ours, serving):
    with pytest.raises(EndpointFailed, match="rolled back"):
        check_replaced_endpoint(app, context, ours, serving)


def test_check_status_endpoint_replaced_by_a_run_approved_later(app, context):
    result = check_replaced_endpoint(
        app, context, ours="2026-11-25T12:00:00+00:00", serving="2026-11-25T12:00:30+00:00"
    )

    assert result["done"] is True
    assert result["superseded_by"] == "mlops-digits-00000000"


@pytest.mark.parametrize("status", ["Failed", "OutOfService", "UpdateRollbackFailed", "Deleting"])
def test_check_status_endpoint_failed(app, context, status):
    answer = endpoint(ENDPOINT, status, config="mlops-digits-1a2b3c4d", FailureReason="ping failed")

    with pytest.raises(EndpointFailed, match=f"is {status} instead of InService: ping failed"):
        check(
            app,
            context,
            "describe_endpoint",
            answer,
            kind="endpoint",
            name=ENDPOINT,
            expected_config="mlops-digits-1a2b3c4d",
        )


def test_check_status_endpoint_rolled_back_by_an_alarm_names_the_alarm(app, context):
    """An update that a rollback alarm undid ends InService on the old config (AWS, and the
    local SageMaker's traffic shifting); the run fails with the reason, for NotifyFailure."""
    reason = (
        "Update to endpoint config mlops-digits-1a2b3c4d was rolled back because alarm "
        "mlops-classifier-model-quality was in ALARM state; the endpoint serves "
        "mlops-digits-00000000."
    )
    with Stubber(app.sagemaker) as stub:
        stub.add_response(
            "describe_endpoint",
            endpoint(ENDPOINT, "InService", config="mlops-digits-00000000", FailureReason=reason),
        )
        stub.add_response("list_tags", approved_at("2026-11-25T12:00:00+00:00"))
        stub.add_response("list_tags", approved_at("2026-11-25T11:00:00+00:00"))
        with pytest.raises(EndpointFailed) as raised:
            app.lambda_handler(
                {"kind": "endpoint", "name": ENDPOINT, "expected_config": "mlops-digits-1a2b3c4d"},
                context,
            )

    assert "not this run's mlops-digits-1a2b3c4d" in str(raised.value)
    assert "alarm mlops-classifier-model-quality was in ALARM state" in str(raised.value)
