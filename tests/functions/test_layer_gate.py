"""pipeline_common.gate: the policy text, every status, the quality gate."""

from __future__ import annotations

import pytest
from pipeline_common.errors import ConfigurationError
from pipeline_common.gate import (
    RULE_STATUSES,
    GatePolicy,
    RuleStatus,
    Severity,
    quality_findings,
    rule_findings,
    summarize,
)

DEFAULT = (
    "block:LossNotDecreasing,VanishingGradient,PoorWeightInitialization;"
    "warn:Overfit,Overtraining,LowGPUUtilization"
)


def test_gate_policy_parses_the_default():
    policy = GatePolicy.parse(DEFAULT)

    assert policy.blocking == {"LossNotDecreasing", "VanishingGradient", "PoorWeightInitialization"}
    assert policy.warning == {"Overfit", "Overtraining", "LowGPUUtilization"}


@pytest.mark.parametrize("text", ["stop:Overfit", "block:A;warn:A", "LossNotDecreasing"])
def test_gate_policy_refuses_malformed_text(text):
    with pytest.raises(ConfigurationError, match="GATE_POLICY"):
        GatePolicy.parse(text)


@pytest.mark.parametrize("status", RULE_STATUSES)
def test_gate_every_status_has_a_severity(status):
    policy = GatePolicy.parse(DEFAULT)
    statuses = [
        RuleStatus("VanishingGradient", status, "", "job"),
        RuleStatus("Overfit", status, "", "job"),
    ]

    blocking, warning = rule_findings(statuses, policy, [])

    passed = status == "NoIssuesFound"
    assert blocking.severity is (Severity.PASS if passed else Severity.BLOCK)
    assert warning.severity is (Severity.PASS if passed else Severity.WARN)
    assert warning.details or passed


def test_gate_unknown_rules_only_warn():
    [finding] = rule_findings(
        [RuleStatus("ClassImbalance", "IssuesFound", "", "debugger")], GatePolicy.parse(DEFAULT), []
    )

    assert finding.severity is Severity.WARN


def test_gate_quality_threshold_and_regression():
    findings = quality_findings(0.80, 0.75, baseline_accuracy=0.90, tolerance=0.05)

    approved, summary = summarize(findings)

    assert approved is False
    assert "NoRegression" in summary and "0.8500" in summary


def test_gate_summary_lists_warnings_when_approved():
    findings = rule_findings(
        [RuleStatus("Overfit", "IssuesFound", "ratio 0.3", "job")], GatePolicy.parse(DEFAULT), []
    )

    approved, summary = summarize(findings + quality_findings(0.9, 0.5, None, 0.0))

    assert approved is True
    assert summary == "approved with 1 warning(s): Overfit IssuesFound"
