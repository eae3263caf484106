"""The model-quality signal: what predict records per answer, and the alarm an update arms on it.

SageMaker's rollback alarms see errors and latency, not whether a model still knows what it
is looking at. So predict puts, for every answer, ``LowConfidenceAnswers`` = 1 when the top
probability is below the threshold (else 0) with the dimensions ``service=predict`` and
``Model=<the training job that answered>``: the Average of one model's series is that model's
share of low-confidence answers. Before an endpoint update, DeployEndpoint reads the share of
the model being replaced over the last day and arms an alarm on the new model's share with
the threshold ``old share + allowed increase``: a new model that answers much less
confidently than the one it replaces is rolled back, however busy the endpoint is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

SERVICE = "predict"  # predict's POWERTOOLS_SERVICE_NAME, the `service` dimension of its metrics
ANSWERS_METRIC = "Answers"
LOW_CONFIDENCE_METRIC = "LowConfidenceAnswers"
MODEL_DIMENSION = "Model"
MAX_DIMENSION_VALUE = 255  # CloudWatch's limit on a dimension value's length
BASELINE_WINDOW = timedelta(days=1)
MIN_BASELINE_ANSWERS = 20  # fewer answers of the old model tell nothing about its share
ALARM_PERIOD_SECONDS = 60


def model_value(model: str) -> str:
    return model[:MAX_DIMENSION_VALUE]


def model_dimensions(model: str) -> list[dict[str, str]]:
    """The dimensions of one model's series, exactly as predict's EMF lines carry them."""
    return [
        {"Name": "service", "Value": SERVICE},
        {"Name": MODEL_DIMENSION, "Value": model_value(model)},
    ]


@dataclass(frozen=True)
class Baseline:
    """How the model being replaced answered: its share of low-confidence answers."""

    model: str
    answers: int
    share: float


def read_baseline(cloudwatch: Any, namespace: str, model: str, now: datetime) -> Baseline:
    """The old model's answers and low-confidence share over the last day (one datapoint).

    The window ends at the next whole minute, so that answers of this very second count."""
    seconds = int(BASELINE_WINDOW.total_seconds())
    end = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace,
        MetricName=LOW_CONFIDENCE_METRIC,
        Dimensions=model_dimensions(model),
        StartTime=end - BASELINE_WINDOW,
        EndTime=end,
        Period=seconds,
        Statistics=["SampleCount", "Sum"],
    )["Datapoints"]
    answers = int(sum(point["SampleCount"] for point in points))
    low = sum(point["Sum"] for point in points)
    return Baseline(model=model, answers=answers, share=low / answers if answers else 0.0)


def quality_alarm(
    name: str, namespace: str, model: str, baseline: Baseline, increase: float
) -> dict[str, Any]:
    """PutMetricAlarm's request: the new model's share in a minute above the old one's + increase.

    Missing data (no answers from the new model yet) does not breach."""
    threshold = round(baseline.share + increase, 6)
    return {
        "AlarmName": name,
        "AlarmDescription": (
            f"Model {model} answers with low confidence more often than {baseline.model} did "
            f"({baseline.share:.1%} of {baseline.answers} answers in the last day) plus "
            f"{increase:.0%}; an endpoint update rolls back on it."
        )[:1024],
        "Namespace": namespace,
        "MetricName": LOW_CONFIDENCE_METRIC,
        "Dimensions": model_dimensions(model),
        "Statistic": "Average",
        "Period": ALARM_PERIOD_SECONDS,
        "EvaluationPeriods": 1,
        "Threshold": threshold,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
    }


def can_fire(baseline: Baseline, increase: float) -> bool:
    """A share cannot exceed 1: a threshold at or above it would be an alarm that never fires."""
    return baseline.answers >= MIN_BASELINE_ANSWERS and baseline.share + increase < 1.0


class QualityGuard(NamedTuple):
    """What the model-quality alarm of an update compares with (recorded in deployment.json)."""

    armed: bool
    why: str
    old_model: str = ""
    baseline_answers: int = 0
    baseline_share: float | None = None
    threshold: float | None = None

    @classmethod
    def of(cls, baseline: Baseline, increase: float) -> QualityGuard:
        if baseline.answers < MIN_BASELINE_ANSWERS:
            why = (
                f"{baseline.model} answered {baseline.answers} times in the last day, fewer "
                f"than the {MIN_BASELINE_ANSWERS} a baseline needs: not armed"
            )
        elif not can_fire(baseline, increase):
            why = f"{baseline.share:.1%} + {increase:.0%} is out of a share's reach: not armed"
        else:
            why = (
                f"armed: the new model's low-confidence share in a minute above "
                f"{baseline.share + increase:.1%} ({baseline.model}: {baseline.share:.1%} of "
                f"{baseline.answers} answers, plus {increase:.0%}) rolls the update back"
            )
        return cls(
            armed=can_fire(baseline, increase),
            why=why,
            old_model=baseline.model,
            baseline_answers=baseline.answers,
            baseline_share=round(baseline.share, 6),
            threshold=round(baseline.share + increase, 6),
        )


def utcnow() -> datetime:
    return datetime.now(UTC)
