"""Blue/green traffic shifting and alarm-driven auto-rollback of an UpdateEndpoint.

`TrafficPolicy` is what UpdateEndpoint's DeploymentConfig asks for: the shares of requests the
new fleet takes step by step (ALL_AT_ONCE: 100 %; CANARY: CanarySize, then 100 %; LINEAR:
LinearStepSize, twice that, ... 100 %), the wait between steps (WaitIntervalInSeconds), the
baking period after the last step (TerminationWaitInSeconds) and the alarms of
AutoRollbackConfiguration. endpoints.py runs the steps; this module only reads the request
and judges the alarms.

`AlarmWatch` asks CloudWatch (DescribeAlarms) for each alarm. moto's CloudWatch stores the
metrics of PutMetricData but never evaluates an alarm by itself: an alarm's state changes only
through SetAlarmState. So an alarm counts as tripped when CloudWatch says ALARM, or when its
metric, read with GetMetricStatistics over the last EvaluationPeriods periods, breaches the
threshold in DatapointsToAlarm of them (missing data does not breach, as TreatMissingData
notBreaching says). Only single-metric alarms with a plain Statistic are evaluated that way;
metric math and percentile alarms count by their CloudWatch state alone.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlops.local.sagemaker.errors import ValidationException

logger = logging.getLogger(__name__)

MAX_CANARY_PERCENT = 50  # "less than or equal to 50% of the new fleet's capacity"
LINEAR_PERCENT_RANGE = (10, 50)  # "Each linear step should only be between 10-50%"

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


@dataclass(frozen=True)
class TrafficPolicy:
    """How an update moves traffic to the new fleet and what can roll it back."""

    shares: tuple[float, ...] = (1.0,)  # the new fleet's share of requests at each step
    wait_s: float = 0.0  # between steps (WaitIntervalInSeconds)
    bake_s: float = 0.0  # after the last step, before the old fleet goes (TerminationWait...)
    alarms: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kind(self) -> str:
        return "ALL_AT_ONCE" if len(self.shares) == 1 else "shifting"


def _fleet_size(config_request: dict[str, Any]) -> int:
    return sum(int(v.get("InitialInstanceCount", 1)) for v in config_request["ProductionVariants"])


def _step_percent(size: dict[str, Any], fleet: int, name: str) -> float:
    value = float(size["Value"])
    if size["Type"] == "INSTANCE_COUNT":
        return 100.0 * value / max(fleet, 1)
    if value > 100:
        raise ValidationException(f"{name} with Type CAPACITY_PERCENT must be at most 100.")
    return value


def traffic_policy(update_request: dict[str, Any], config_request: dict[str, Any]) -> TrafficPolicy:
    """Read UpdateEndpoint's DeploymentConfig (validated against botocore's shapes already)."""
    deployment = update_request.get("DeploymentConfig") or {}
    alarms = tuple(
        a["AlarmName"]
        for a in (deployment.get("AutoRollbackConfiguration") or {}).get("Alarms") or []
    )
    policy = deployment.get("BlueGreenUpdatePolicy")
    if not policy:
        return TrafficPolicy(alarms=alarms)
    routing = policy["TrafficRoutingConfiguration"]
    kind = routing["Type"]
    wait_s = float(routing.get("WaitIntervalInSeconds") or 0)
    bake_s = float(policy.get("TerminationWaitInSeconds") or 0)
    fleet = _fleet_size(config_request)
    shares: tuple[float, ...] = (1.0,)
    if kind == "CANARY":
        if "CanarySize" not in routing:
            raise ValidationException("CanarySize is required for traffic routing type CANARY.")
        percent = _step_percent(routing["CanarySize"], fleet, "CanarySize")
        if percent > MAX_CANARY_PERCENT:
            raise ValidationException(
                f"CanarySize must be less than or equal to {MAX_CANARY_PERCENT}% of the new "
                f"fleet's capacity; got {percent:g}%."
            )
        shares = (percent / 100.0, 1.0)
    elif kind == "LINEAR":
        if "LinearStepSize" not in routing:
            raise ValidationException("LinearStepSize is required for traffic routing type LINEAR.")
        percent = _step_percent(routing["LinearStepSize"], fleet, "LinearStepSize")
        low, high = LINEAR_PERCENT_RANGE
        if not low <= percent <= high:
            raise ValidationException(
                f"LinearStepSize must be between {low}% and {high}% of the new fleet's "
                f"capacity; got {percent:g}%."
            )
        steps = math.ceil(100.0 / percent)
        shares = tuple(min(1.0, percent * (i + 1) / 100.0) for i in range(steps))
    return TrafficPolicy(shares=shares, wait_s=wait_s, bake_s=bake_s, alarms=alarms)


class AlarmWatch:
    """Judges the alarms of AutoRollbackConfiguration through the local cloud's CloudWatch."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client
        self._warned = False

    def tripped(self, names: tuple[str, ...]) -> str | None:
        """The first alarm that is in ALARM (by its state or by its metric), else None."""
        if not names:
            return None
        try:
            cloudwatch = self._client()
            alarms = cloudwatch.describe_alarms(AlarmNames=list(names))["MetricAlarms"]
            for alarm in alarms:
                if alarm.get("StateValue") == "ALARM" or self._breaching(cloudwatch, alarm):
                    return alarm["AlarmName"]
        except (ClientError, BotoCoreError) as error:
            # AWS fails a deployment whose alarms it cannot read; here a CloudWatch that is
            # not there (a bare local SageMaker) must not break every update: warn once.
            if not self._warned:
                logger.warning("cannot evaluate rollback alarms %s: %s", names, error)
                self._warned = True
        return None

    @staticmethod
    def _breaching(cloudwatch: Any, alarm: dict[str, Any]) -> bool:
        statistic = alarm.get("Statistic")
        compare = COMPARISONS.get(alarm.get("ComparisonOperator", ""))
        if not statistic or compare is None or not alarm.get("MetricName"):
            return False  # metric math, percentiles, anomaly bands: CloudWatch's state only
        period = int(alarm["Period"])
        periods = int(alarm.get("EvaluationPeriods") or 1)
        needed = int(alarm.get("DatapointsToAlarm") or periods)
        end = dt.datetime.now(dt.UTC)
        points = cloudwatch.get_metric_statistics(
            Namespace=alarm["Namespace"],
            MetricName=alarm["MetricName"],
            Dimensions=alarm.get("Dimensions") or [],
            StartTime=end - dt.timedelta(seconds=period * periods),
            EndTime=end,
            Period=period,
            Statistics=[statistic],
        )["Datapoints"]
        breaching = [p for p in points if compare(float(p[statistic]), float(alarm["Threshold"]))]
        return len(breaching) >= needed
