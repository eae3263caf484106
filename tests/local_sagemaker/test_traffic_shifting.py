"""Blue/green updates with CANARY/LINEAR traffic shifting and alarm-driven auto-rollback."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mlops.local.sagemaker.processes import live_process_count
from mlops.local.sagemaker.traffic import traffic_policy
from tests.support.waiting import wait_for

from .helpers import invoke, make_config, wait_endpoint

pytestmark = pytest.mark.timeout(120)


def deployment_config(
    routing: dict[str, Any], alarms: list[str] | None = None, bake: int = 0
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": bake,
        }
    }
    if alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return config


def canary(percent: int, wait: int) -> dict[str, Any]:
    return {
        "Type": "CANARY",
        "WaitIntervalInSeconds": wait,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": percent},
    }


def make_alarm(cloudwatch: Any, metric: str) -> str:
    name = f"alarm-{uuid.uuid4().hex[:8]}"
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        Namespace="Tests",
        MetricName=metric,
        Dimensions=[{"Name": "Model", "Value": "any"}],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=3,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
    )
    return name


def start(sm: Any, s3: Any, name: str, version: str) -> None:
    sm.create_endpoint(EndpointName=name, EndpointConfigName=make_config(sm, s3, version))
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"


def first_answer_from(runtime: Any, name: str, version: str) -> None:
    wait_for(
        lambda: invoke(runtime, name, {})["body"]["version"],
        60,
        f"{name} to answer from {version}",
        done=lambda answered: answered == version,
        interval=0.02,
    )


def versions(runtime: Any, name: str, count: int) -> list[str]:
    return [invoke(runtime, name, {"n": n})["body"]["version"] for n in range(count)]


def test_traffic_policy_linear_steps_up_to_all() -> None:
    config = {"ProductionVariants": [{"VariantName": "AllTraffic", "InitialInstanceCount": 1}]}

    def policy(percent: int) -> tuple[float, ...]:
        routing = {
            "Type": "LINEAR",
            "WaitIntervalInSeconds": 5,
            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": percent},
        }
        return traffic_policy({"DeploymentConfig": deployment_config(routing)}, config).shares

    assert traffic_policy({}, config).shares == (1.0,)
    assert policy(25) == (0.25, 0.5, 0.75, 1.0)
    assert policy(30) == (0.3, 0.6, 0.9, 1.0)


def test_canary_sends_its_share_to_the_new_model_then_all(sm: Any, runtime: Any, s3: Any) -> None:
    start(sm, s3, "ep-canary", "c1")
    sm.update_endpoint(
        EndpointName="ep-canary",
        EndpointConfigName=make_config(sm, s3, "c2"),
        DeploymentConfig=deployment_config(canary(20, wait=25)),
    )
    first_answer_from(runtime, "ep-canary", "c2")

    answered = versions(runtime, "ep-canary", 200)
    during = sm.describe_endpoint(EndpointName="ep-canary")

    assert (during["EndpointStatus"], during["EndpointConfigName"]) == ("Updating", "config-c1")
    assert during["PendingDeploymentSummary"]["EndpointConfigName"] == "config-c2"
    assert set(answered) == {"c1", "c2"}
    # Binomial(200, 0.2): mean 40, standard deviation 5.7; 4.5 deviations either side.
    tolerance = 4.5 * math.sqrt(200 * 0.2 * 0.8)
    assert abs(answered.count("c2") - 40) <= tolerance, answered.count("c2")
    done = wait_endpoint(sm, "ep-canary")
    assert (done["EndpointStatus"], done["EndpointConfigName"]) == ("InService", "config-c2")
    assert set(versions(runtime, "ep-canary", 20)) == {"c2"}


def test_canary_alarm_rolls_back_to_the_old_config(
    sm: Any, runtime: Any, s3: Any, cloudwatch: Any
) -> None:
    alarm = make_alarm(cloudwatch, "CanaryErrors")
    start(sm, s3, "ep-canary-bad", "k1")
    sm.update_endpoint(
        EndpointName="ep-canary-bad",
        EndpointConfigName=make_config(sm, s3, "k2"),
        DeploymentConfig=deployment_config(canary(50, wait=60), alarms=[alarm]),
    )
    first_answer_from(runtime, "ep-canary-bad", "k2")
    assert live_process_count() == 2  # both fleets serve the canary

    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")
    endpoint = wait_endpoint(sm, "ep-canary-bad", timeout=20)

    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == "config-k1"
    assert f"alarm {alarm} was in ALARM state" in endpoint["FailureReason"]
    assert "PendingDeploymentSummary" not in endpoint
    assert set(versions(runtime, "ep-canary-bad", 30)) == {"k1"}
    wait_for(live_process_count, 20, "the new fleet stopped", done=lambda count: count == 1)


def test_canary_with_alarm_ok_is_promoted(sm: Any, runtime: Any, s3: Any, cloudwatch: Any) -> None:
    alarm = make_alarm(cloudwatch, "QuietErrors")
    start(sm, s3, "ep-canary-ok", "o1")
    sm.update_endpoint(
        EndpointName="ep-canary-ok",
        EndpointConfigName=make_config(sm, s3, "o2"),
        DeploymentConfig=deployment_config(canary(10, wait=1), alarms=[alarm], bake=1),
    )
    endpoint = wait_endpoint(sm, "ep-canary-ok")

    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == (
        "InService",
        "config-o2",
    )
    assert "FailureReason" not in endpoint
    assert set(versions(runtime, "ep-canary-ok", 10)) == {"o2"}
    wait_for(live_process_count, 20, "the old fleet stopped", done=lambda count: count == 1)


def test_metric_breaching_during_bake_rolls_back(
    sm: Any, runtime: Any, s3: Any, cloudwatch: Any
) -> None:
    """moto never evaluates alarms; the local SageMaker reads the alarm's metric itself."""
    alarm = make_alarm(cloudwatch, "LowConfidence")
    start(sm, s3, "ep-bake-alarm", "m1")
    sm.update_endpoint(
        EndpointName="ep-bake-alarm",
        EndpointConfigName=make_config(sm, s3, "m2"),
        DeploymentConfig=deployment_config(
            {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}, alarms=[alarm], bake=60
        ),
    )
    first_answer_from(runtime, "ep-bake-alarm", "m2")
    assert sm.describe_endpoint(EndpointName="ep-bake-alarm")["EndpointStatus"] == "Updating"

    cloudwatch.put_metric_data(
        Namespace="Tests",
        MetricData=[
            {
                "MetricName": "LowConfidence",
                "Dimensions": [{"Name": "Model", "Value": "any"}],
                "Value": 1.0,
                "Unit": "Count",
            }
        ]
        * 3,
    )
    endpoint = wait_endpoint(sm, "ep-bake-alarm", timeout=20)

    assert endpoint["EndpointConfigName"] == "config-m1"
    assert alarm in endpoint["FailureReason"]
    assert set(versions(runtime, "ep-bake-alarm", 10)) == {"m1"}


def test_linear_shifts_in_steps(sm: Any, runtime: Any, s3: Any) -> None:
    start(sm, s3, "ep-linear", "l1")
    sm.update_endpoint(
        EndpointName="ep-linear",
        EndpointConfigName=make_config(sm, s3, "l2"),
        DeploymentConfig=deployment_config(
            {
                "Type": "LINEAR",
                "WaitIntervalInSeconds": 4,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
            }
        ),
    )
    first_answer_from(runtime, "ep-linear", "l2")
    during = versions(runtime, "ep-linear", 40)
    still = sm.describe_endpoint(EndpointName="ep-linear")

    assert set(during) == {"l1", "l2"}  # the first step: about half each
    assert still["EndpointStatus"] == "Updating"
    done = wait_endpoint(sm, "ep-linear")
    assert done["EndpointConfigName"] == "config-l2"
    assert set(versions(runtime, "ep-linear", 10)) == {"l2"}


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        (canary(60, wait=5), "CanarySize must be less than or equal to 50%"),
        (
            {
                "Type": "LINEAR",
                "WaitIntervalInSeconds": 5,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 5},
            },
            "LinearStepSize must be between 10% and 50%",
        ),
        ({"Type": "CANARY", "WaitIntervalInSeconds": 5}, "CanarySize is required"),
    ],
)
def test_traffic_routing_out_of_limits_is_refused(sm: Any, s3: Any, routing, message) -> None:
    start(sm, s3, "ep-limits", f"x{uuid.uuid4().hex[:6]}")
    with pytest.raises(ClientError) as raised:
        sm.update_endpoint(
            EndpointName="ep-limits",
            EndpointConfigName=make_config(sm, s3, f"y{uuid.uuid4().hex[:6]}"),
            DeploymentConfig=deployment_config(routing),
        )
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert message in raised.value.response["Error"]["Message"]
    assert sm.describe_endpoint(EndpointName="ep-limits")["EndpointStatus"] == "InService"


def test_model_5xx_during_canary_trips_the_endpoint_error_alarm(
    sm: Any, runtime: Any, s3: Any, cloudwatch: Any
) -> None:
    """The local SageMaker publishes Invocation5XXErrors; template.yaml's EndpointErrorAlarm
    shape (Sum >= 1 in 60 s) trips on it and the canary rolls back."""
    alarm = f"ep-canary-5xx-{uuid.uuid4().hex[:6]}"
    cloudwatch.put_metric_alarm(
        AlarmName=alarm,
        Namespace="AWS/SageMaker",
        MetricName="Invocation5XXErrors",
        Dimensions=[
            {"Name": "EndpointName", "Value": "ep-canary-5xx"},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
    )
    start(sm, s3, "ep-canary-5xx", "e1")
    sm.update_endpoint(
        EndpointName="ep-canary-5xx",
        EndpointConfigName=make_config(sm, s3, "e2"),
        DeploymentConfig=deployment_config(canary(50, wait=60), alarms=[alarm]),
    )
    first_answer_from(runtime, "ep-canary-5xx", "e2")

    with pytest.raises(ClientError) as raised:
        invoke(runtime, "ep-canary-5xx", {"boom": True})  # the fixture model's 500
    assert raised.value.response["OriginalStatusCode"] == 500
    endpoint = wait_endpoint(sm, "ep-canary-5xx", timeout=20)

    assert endpoint["EndpointConfigName"] == "config-e1"
    assert alarm in endpoint["FailureReason"]
