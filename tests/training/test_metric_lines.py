"""pipeline_common.metrics: the printed lines and the MetricDefinitions regexes agree."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_common import metrics


def test_metric_definitions_cover_every_split_and_field():
    names = [d["Name"] for d in metrics.METRIC_DEFINITIONS]
    assert names == [
        "train:loss",
        "train:accuracy",
        "valid:loss",
        "valid:accuracy",
        "test:loss",
        "test:accuracy",
    ]
    assert metrics.OBJECTIVE_METRIC in names and metrics.OBJECTIVE_TYPE == "Minimize"


def test_each_regex_reads_exactly_its_own_value():
    log = "\n".join(
        [
            metrics.format_metric_line(12, "train", 0.123456789, 0.95123),
            metrics.format_metric_line(12, "valid", 1.5, 0.5),
            metrics.format_metric_line("final", "test", 0.2, 0.94),
        ]
    )
    assert metrics.parse_metrics(log) == {
        "train:loss": [0.123457],
        "train:accuracy": [0.9512],
        "valid:loss": [1.5],
        "valid:accuracy": [0.5],
        "test:loss": [0.2],
        "test:accuracy": [0.94],
    }
    for definition in metrics.METRIC_DEFINITIONS:
        assert len(re.findall(definition["Regex"], log)) == 1


def test_nan_loss_is_not_reported_as_a_value():
    line = metrics.format_metric_line(1, "valid", float("nan"), 0.1)
    assert metrics.parse_metrics(line) == {"valid:accuracy": [0.1]}


def test_format_rejects_unknown_split_and_test_per_epoch():
    with pytest.raises(ValueError, match="valid splits: train, valid, test"):
        metrics.format_metric_line(1, "holdout", 0.1, 0.2)
    with pytest.raises(ValueError, match="once, at the end"):
        metrics.format_metric_line(3, "test", 0.1, 0.2)


def test_metrics_command_writes_metric_definitions_json(tmp_path):
    target = tmp_path / "code" / "metric_definitions.json"
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pipeline_common.metrics", str(target)], cwd=root, check=True
    )
    assert json.loads(target.read_text()) == metrics.METRIC_DEFINITIONS
