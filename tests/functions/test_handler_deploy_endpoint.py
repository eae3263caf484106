"""deploy_endpoint: create, blue/green update, busy endpoints, retries and rollback."""

from __future__ import annotations

import json

import pytest
from botocore.stub import ANY, Stubber
from pipeline_common.errors import ConfigurationError, EndpointBusy

from tests.functions.handler_helpers import ARN_PREFIX, endpoint

EXECUTION = "digits-0123456789abcdef"
TRAINING = "mlops-digits-retrain-1a2b3c4d"
ENDPOINT = "mlops-classifier"
APPROVED_AT = "2026-11-25T12:00:00.000+00:00"
MODEL_PACKAGE = f"{ARN_PREFIX}:model-package/mlops-digits-models/3"
# template.yaml's EndpointErrorAlarm; the model-quality alarm joins it when the replaced model
# has a baseline (test_deploy_endpoint_arms_the_quality_alarm_relative_to_the_old_model).
ROLLBACK_ALARMS = [{"AlarmName": "mlops-classifier-5xx"}]
QUALITY_ALARM = "mlops-classifier-model-quality"
OLD_TRAINING = "mlops-digits-retrain-00000000"
EVENT = {
    "action": "deploy",
    "execution_name": EXECUTION,
    "dataset": "digits",
    "training_job_name": TRAINING,
    "model_package_arn": MODEL_PACKAGE,
    "test_accuracy": 0.93,
    "approved_at": APPROVED_AT,
}


@pytest.fixture
def app(load_handler, buckets):
    return load_handler("deploy_endpoint")


def expect_models(stub, model_error: str | None = None) -> None:
    if model_error:
        stub.add_client_error("create_model", "ValidationException", model_error)
        stub.add_client_error("create_endpoint_config", "ValidationException", model_error)
    else:
        stub.add_response("create_model", {"ModelArn": f"{ARN_PREFIX}:model/m"})
        stub.add_response(
            "create_endpoint_config", {"EndpointConfigArn": f"{ARN_PREFIX}:endpoint-config/m"}
        )


def expect_serving_tags(stub, config: str, approved_at: str | None) -> None:
    tags = [{"Key": "mlops:approved-at", "Value": approved_at}] if approved_at else []
    stub.add_response(
        "list_tags",
        {"Tags": tags},
        {"ResourceArn": f"{ARN_PREFIX}:endpoint-config/{config}"},
    )


def expect_update_tags(
    stub, config: str, approved_at: str | None, old_model: str | None = None
) -> None:
    """An update reads the serving config's tags twice: its approval time (may this run
    replace it?) and its training job (the model the quality alarm compares with)."""
    expect_serving_tags(stub, config, approved_at)
    tags = [{"Key": "mlops:training-job", "Value": old_model}] if old_model else []
    stub.add_response(
        "list_tags", {"Tags": tags}, {"ResourceArn": f"{ARN_PREFIX}:endpoint-config/{config}"}
    )


def record(buckets) -> dict:
    key = f"runs/{EXECUTION}/deployment.json"
    return json.loads(buckets.s3.get_object(Bucket=buckets.artifacts, Key=key)["Body"].read())


def test_deploy_endpoint_creates_a_missing_endpoint(app, buckets, context):
    sent = {}
    app.sagemaker.meta.events.register(
        "provide-client-params.sagemaker.CreateModel", lambda params, **_: sent.update(params)
    )
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
        stub.add_response(
            "create_endpoint",
            {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"},
            {"EndpointName": ENDPOINT, "EndpointConfigName": ANY, "Tags": ANY},
        )
        result = app.lambda_handler(EVENT, context)

    assert result["operation"] == "created"
    assert result["endpoint_config_name"] == result["model_name"]
    assert result["model_name"].startswith("mlops-digits-")
    assert sent["PrimaryContainer"] == {"ModelPackageName": MODEL_PACKAGE}  # the registry's
    assert {"Key": "mlops:test-accuracy", "Value": "0.930000"} in sent["Tags"]
    assert {"Key": "mlops:model-package", "Value": MODEL_PACKAGE} in sent["Tags"]
    assert record(buckets)["operation"] == "created"
    assert record(buckets)["model_package_arn"] == MODEL_PACKAGE


def test_deploy_endpoint_updates_blue_green_with_rollback_alarm(app, buckets, context):
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_response(
            "describe_endpoint", endpoint(ENDPOINT, "InService", config="mlops-digits-00000000")
        )
        expect_update_tags(stub, "mlops-digits-00000000", "2026-11-25T11:00:00+00:00")
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"},
            {
                "EndpointName": ENDPOINT,
                "EndpointConfigName": ANY,
                "DeploymentConfig": {
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {
                            "Type": "ALL_AT_ONCE",
                            "WaitIntervalInSeconds": 0,
                        },
                        "TerminationWaitInSeconds": 300,
                        "MaximumExecutionTimeoutInSeconds": 3900,
                    },
                    "AutoRollbackConfiguration": {"Alarms": ROLLBACK_ALARMS},
                },
            },
        )
        result = app.lambda_handler(EVENT, context)

    assert result["operation"] == "updated"
    assert result["previous_endpoint_config"] == "mlops-digits-00000000"


@pytest.mark.parametrize(
    ("strategy", "routing", "timeout"),
    [
        ("AllAtOnce", {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}, 3600 + 300),
        (
            "Canary",
            {
                "Type": "CANARY",
                "WaitIntervalInSeconds": 120,
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20},
            },
            3600 + 120 + 300,
        ),
        (
            "Linear",
            {
                "Type": "LINEAR",
                "WaitIntervalInSeconds": 120,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
            },
            3600 + 3 * 120 + 300,  # 25 %, 50 %, 75 % wait; 100 % is the last step
        ),
    ],
)
def test_deploy_endpoint_sends_the_strategys_traffic_routing(
    app, buckets, context, monkeypatch, strategy, routing, timeout
):
    """The template's defaults (CanaryTrafficPercent 20, LinearStepPercent 25, 120 s)."""
    monkeypatch.setenv("DEPLOYMENT_STRATEGY", strategy)
    with Stubber(app.sagemaker) as stub:  # the Stubber validates against botocore's shapes
        expect_models(stub)
        stub.add_response(
            "describe_endpoint", endpoint(ENDPOINT, "InService", config="mlops-digits-00000000")
        )
        expect_update_tags(stub, "mlops-digits-00000000", "2026-11-25T11:00:00+00:00")
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"},
            {
                "EndpointName": ENDPOINT,
                "EndpointConfigName": ANY,
                "DeploymentConfig": {
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": routing,
                        "TerminationWaitInSeconds": 300,
                        "MaximumExecutionTimeoutInSeconds": timeout,
                    },
                    "AutoRollbackConfiguration": {"Alarms": ROLLBACK_ALARMS},
                },
            },
        )
        result = app.lambda_handler(EVENT, context)

    assert result["operation"] == "updated"


def test_deploy_endpoint_unknown_strategy_is_a_configuration_error(
    app, buckets, context, monkeypatch
):
    monkeypatch.setenv("DEPLOYMENT_STRATEGY", "BlueGreen")
    with pytest.raises(ConfigurationError, match="DeploymentStrategy"):
        app.lambda_handler(EVENT, context)


def test_deploy_endpoint_tags_the_config_with_its_approval_time(app, buckets, context):
    sent = {}
    app.sagemaker.meta.events.register(
        "provide-client-params.sagemaker.CreateEndpointConfig",
        lambda params, **_: sent.update(params),
    )
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
        stub.add_response("create_endpoint", {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"})
        app.lambda_handler(EVENT, context)

    assert {"Key": "mlops:approved-at", "Value": "2026-11-25T12:00:00+00:00"} in sent["Tags"]


def test_deploy_endpoint_never_replaces_a_model_approved_later(app, buckets, context):
    newer = "mlops-digits-99999999"
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_response("describe_endpoint", endpoint(ENDPOINT, "InService", config=newer))
        expect_serving_tags(stub, newer, "2026-11-25T12:00:01Z")
        result = app.lambda_handler(EVENT, context)  # no update_endpoint stubbed: none is sent

    assert result["operation"] == "superseded"
    assert result["superseded_by"] == newer
    assert result["previous_endpoint_config"] is None
    assert record(buckets)["superseded_by"] == newer


@pytest.mark.parametrize("serving_at", ["2026-11-25T11:59:59Z", "not a time"])
def test_deploy_endpoint_replaces_an_older_or_unknown_model(app, buckets, context, serving_at):
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_response("describe_endpoint", endpoint(ENDPOINT, "InService", config="mlops-old"))
        expect_update_tags(stub, "mlops-old", serving_at)
        stub.add_response("update_endpoint", {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"})
        result = app.lambda_handler(EVENT, context)

    assert result["operation"] == "updated"
    assert result["superseded_by"] is None


@pytest.mark.parametrize(
    "status", ["Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"]
)
def test_deploy_endpoint_busy_endpoint_is_retried(app, buckets, context, status):
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_response(
            "describe_endpoint", endpoint(ENDPOINT, status, config="mlops-other-00000000")
        )
        with pytest.raises(EndpointBusy, match=f"endpoint {ENDPOINT} is {status}"):
            app.lambda_handler(EVENT, context)


def test_deploy_endpoint_concurrent_update_is_retried(app, buckets, context):
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_response(
            "describe_endpoint", endpoint(ENDPOINT, "InService", config="mlops-other-00000000")
        )
        expect_update_tags(stub, "mlops-other-00000000", None)
        stub.add_client_error(
            "update_endpoint", "ValidationException", "Cannot update in-progress endpoint"
        )
        with pytest.raises(EndpointBusy, match="being updated"):
            app.lambda_handler(EVENT, context)


def test_deploy_endpoint_concurrent_create_is_retried(app, buckets, context):
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
        stub.add_client_error(
            "create_endpoint", "ValidationException", "Cannot create already existing endpoint"
        )
        with pytest.raises(EndpointBusy, match="being created by another run"):
            app.lambda_handler(EVENT, context)


def test_deploy_endpoint_retry_reuses_existing_model_and_config(app, buckets, context):
    with Stubber(app.sagemaker) as stub:
        expect_models(stub, model_error="Cannot create already existing model")
        stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
        stub.add_response("create_endpoint", {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"})
        result = app.lambda_handler(EVENT, context)

    assert result["operation"] == "created"


def test_deploy_endpoint_already_on_this_config_is_unchanged(app, buckets, context):
    own_config = app.model_name("mlops", "digits", EXECUTION)  # what the first attempt created
    with Stubber(app.sagemaker) as stub:
        expect_models(stub, model_error="Cannot create already existing model")
        stub.add_response("describe_endpoint", endpoint(ENDPOINT, "Updating", config=own_config))
        result = app.lambda_handler(EVENT, context)

    assert result["operation"] == "unchanged"


def test_deploy_endpoint_failed_endpoint_is_deleted_then_recreated(app, buckets, context):
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_response(
            "describe_endpoint",
            endpoint(ENDPOINT, "Failed", config="mlops-other-0", FailureReason="bad image"),
        )
        stub.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})
        with pytest.raises(EndpointBusy, match="bad image"):
            app.lambda_handler(EVENT, context)


def test_deploy_endpoint_rollback_returns_to_previous_config(app, buckets, context):
    event = {
        "action": "rollback",
        "execution_name": EXECUTION,
        "endpoint_config_name": "mlops-digits-00000000",
    }
    with Stubber(app.sagemaker) as stub:
        stub.add_response(
            "describe_endpoint", endpoint(ENDPOINT, "InService", config="mlops-digits-11111111")
        )
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"},
            {
                "EndpointName": ENDPOINT,
                "EndpointConfigName": "mlops-digits-00000000",
                # At once and without the rollback alarms, which the failing model may have
                # set off: they must not undo the rollback.
                "DeploymentConfig": {
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {
                            "Type": "ALL_AT_ONCE",
                            "WaitIntervalInSeconds": 0,
                        },
                        "TerminationWaitInSeconds": 0,
                        "MaximumExecutionTimeoutInSeconds": 3600,
                    }
                },
            },
        )
        result = app.lambda_handler(event, context)

    assert result["operation"] == "rolled-back"


def test_deploy_endpoint_rollback_of_a_new_endpoint_does_nothing(app, buckets, context):
    event = {"action": "rollback", "execution_name": EXECUTION, "endpoint_config_name": None}

    result = app.lambda_handler(event, context)

    assert result["operation"] == "nothing-to-roll-back"


def put_answers(cloudwatch, model: str, answers: int, low: int) -> None:
    """What predict's EMF lines become in CloudWatch: one 0/1 datum per answer."""
    data = [
        {
            "MetricName": "LowConfidenceAnswers",
            "Dimensions": [
                {"Name": "service", "Value": "predict"},
                {"Name": "Model", "Value": model},
            ],
            "Value": 1.0 if i < low else 0.0,
            "Unit": "Count",
        }
        for i in range(answers)
    ]
    cloudwatch.put_metric_data(Namespace="mlops", MetricData=data)


def update_with_alarms(app, context, alarms: list[dict[str, str]]) -> dict:
    with Stubber(app.sagemaker) as stub:
        expect_models(stub)
        stub.add_response(
            "describe_endpoint", endpoint(ENDPOINT, "InService", config="mlops-digits-00000000")
        )
        expect_update_tags(stub, "mlops-digits-00000000", "2026-11-25T11:00:00Z", OLD_TRAINING)
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"},
            {
                "EndpointName": ENDPOINT,
                "EndpointConfigName": ANY,
                "DeploymentConfig": {
                    "BlueGreenUpdatePolicy": ANY,
                    "AutoRollbackConfiguration": {"Alarms": alarms},
                },
            },
        )
        return app.lambda_handler(EVENT, context)


def test_deploy_endpoint_arms_the_quality_alarm_relative_to_the_old_model(app, buckets, context):
    """The old model answered 40 times, 4 with low confidence (10 %): the new model's alarm
    fires above 10 % + LowConfidenceIncrease (25 %) in a minute, on its own series."""
    put_answers(app.cloudwatch, OLD_TRAINING, answers=40, low=4)
    put_answers(app.cloudwatch, "some-other-model", answers=40, low=40)  # not the old model

    result = update_with_alarms(app, context, [*ROLLBACK_ALARMS, {"AlarmName": QUALITY_ALARM}])

    [alarm] = app.cloudwatch.describe_alarms(AlarmNames=[QUALITY_ALARM])["MetricAlarms"]
    assert result["operation"] == "updated"
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "mlops",
        "LowConfidenceAnswers",
        "Average",
    )
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {
        "service": "predict",
        "Model": TRAINING,
    }
    assert alarm["Threshold"] == pytest.approx(0.35)
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["StateValue"] == "OK"
    guard = record(buckets)["quality_alarm"]
    assert guard["armed"] is True
    assert (guard["old_model"], guard["baseline_answers"]) == (OLD_TRAINING, 40)
    assert guard["baseline_share"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("answers", "low", "why"),
    [
        (5, 0, "fewer than the 20 a baseline needs"),  # a quiet endpoint: nothing to compare
        (40, 32, "out of a share's reach"),  # 80 % + 25 % can never be exceeded
    ],
)
def test_deploy_endpoint_without_a_usable_baseline_arms_only_the_error_alarm(
    app, buckets, context, answers, low, why
):
    put_answers(app.cloudwatch, OLD_TRAINING, answers=answers, low=low)

    result = update_with_alarms(app, context, ROLLBACK_ALARMS)

    assert result["operation"] == "updated"
    assert app.cloudwatch.describe_alarms(AlarmNames=[QUALITY_ALARM])["MetricAlarms"] == []
    guard = record(buckets)["quality_alarm"]
    assert guard["armed"] is False
    assert why in guard["why"]


def test_deploy_endpoint_config_captures_requests_for_monitoring(app, buckets, context):
    """DataCaptureSamplingPercentage (template default 20) of the requests and answers go to
    the artifacts bucket's capture/ prefix, where the SageMaker role may write."""
    sent = {}
    app.sagemaker.meta.events.register(
        "provide-client-params.sagemaker.CreateEndpointConfig",
        lambda params, **_: sent.update(params),
    )
    with Stubber(app.sagemaker) as stub:  # validates DataCaptureConfig against botocore
        expect_models(stub)
        stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
        stub.add_response("create_endpoint", {"EndpointArn": f"{ARN_PREFIX}:endpoint/{ENDPOINT}"})
        app.lambda_handler(EVENT, context)

    assert sent["DataCaptureConfig"] == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 20,
        "DestinationS3Uri": f"s3://{buckets.artifacts}/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }
