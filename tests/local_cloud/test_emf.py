"""EMF log lines of the local cloud's Lambdas become CloudWatch metrics, as on AWS."""

from __future__ import annotations

import datetime as dt
import json

import boto3
from moto import mock_aws

from mlops.local.emf import metric_data
from mlops.local.lambda_runtime import put_emf_metrics

# What Powertools' single_metric prints (predict's per-model LowConfidenceAnswers).
LINE = json.dumps(
    {
        "_aws": {
            "Timestamp": 1796252165360,
            "CloudWatchMetrics": [
                {
                    "Namespace": "mlops",
                    "Dimensions": [["Model", "service"]],
                    "Metrics": [{"Name": "LowConfidenceAnswers", "Unit": "Count"}],
                }
            ],
        },
        "Model": "job-1",
        "service": "predict",
        "LowConfidenceAnswers": [1.0],
    }
)


def test_emf_line_gives_one_datum_per_value_and_dimension_set() -> None:
    [(namespace, data)] = metric_data(LINE)

    assert namespace == "mlops"
    assert data == [
        {
            "MetricName": "LowConfidenceAnswers",
            "Value": 1.0,
            "Dimensions": [
                {"Name": "Model", "Value": "job-1"},
                {"Name": "service", "Value": "predict"},
            ],
            "Timestamp": dt.datetime(2026, 12, 2, 22, 56, 5, 360000),
            "Unit": "Count",
        }
    ]


def test_emf_ordinary_log_lines_give_nothing() -> None:
    assert metric_data('{"level":"INFO","message":"predict"}') == []
    assert metric_data("START RequestId: 1") == []
    assert metric_data('{"_aws": "not a directive"}') == []


@mock_aws
def test_emf_metrics_reach_cloudwatch() -> None:
    line = json.loads(LINE)
    line["_aws"]["Timestamp"] = int(dt.datetime.now(dt.UTC).timestamp() * 1000)

    assert put_emf_metrics("123456789012", "us-east-1", json.dumps(line)) == 1

    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    now = dt.datetime.now(dt.UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace="mlops",
        MetricName="LowConfidenceAnswers",
        Dimensions=[{"Name": "Model", "Value": "job-1"}, {"Name": "service", "Value": "predict"}],
        StartTime=now - dt.timedelta(minutes=5),
        EndTime=now + dt.timedelta(minutes=1),
        Period=60,
        Statistics=["Sum"],
    )["Datapoints"]
    assert sum(p["Sum"] for p in points) == 1.0
