"""The deploy gate: rule findings under a policy, plus the quality gate on test accuracy.

Policy text (template parameter GatePolicy, environment GATE_POLICY)::

    block:LossNotDecreasing,VanishingGradient,PoorWeightInitialization;warn:Overfit,Overtraining,LowGPUUtilization

Rule statuses are SageMaker's words. ``NoIssuesFound`` passes; ``IssuesFound`` blocks or
warns as the policy says. A rule that gave no verdict (``InProgress``, ``Error``,
``Stopping``, ``Stopped``, or no result at all) cannot vouch for the model: it blocks when
the policy makes the rule blocking, otherwise it warns. Rules the policy does not name warn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

from pipeline_common.errors import ConfigurationError

RULE_STATUSES = ("InProgress", "NoIssuesFound", "IssuesFound", "Error", "Stopping", "Stopped")
PENDING_STATUSES = frozenset({"InProgress", "Stopping"})
DETAILS_LIMIT = 300


class Severity(StrEnum):
    PASS = "pass"
    WARN = "warn"
    BLOCK = "block"


@dataclass(frozen=True)
class RuleStatus:
    """One rule evaluation, from DescribeTrainingJob or from the job's rule_statuses.json."""

    rule: str
    status: str
    details: str
    source: str  # "debugger", "profiler" or "job"


@dataclass(frozen=True)
class Finding:
    """One line of the gate report."""

    check: str
    source: str
    status: str
    severity: Severity
    details: str

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class GatePolicy:
    blocking: frozenset[str]
    warning: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> GatePolicy:
        """Parse ``block:A,B;warn:C`` (either part may be absent or empty)."""
        parts: dict[str, frozenset[str]] = {"block": frozenset(), "warn": frozenset()}
        for section in filter(None, (s.strip() for s in text.split(";"))):
            kind, sep, names = section.partition(":")
            kind = kind.strip().lower()
            if not sep or kind not in parts:
                raise ConfigurationError(
                    f"GATE_POLICY section {section!r} must look like 'block:RuleA,RuleB' or "
                    f"'warn:RuleC' (template parameter GatePolicy)"
                )
            parts[kind] = frozenset(n.strip() for n in names.split(",") if n.strip())
        both = parts["block"] & parts["warn"]
        if both:
            raise ConfigurationError(
                f"GATE_POLICY lists {', '.join(sorted(both))} as both block and warn"
            )
        return cls(blocking=parts["block"], warning=parts["warn"])

    def severity(self, rule: str, status: str) -> Severity:
        if status == "NoIssuesFound":
            return Severity.PASS
        return Severity.BLOCK if rule in self.blocking else Severity.WARN


def _short(text: str) -> str:
    return text if len(text) <= DETAILS_LIMIT else text[: DETAILS_LIMIT - 3] + "..."


def explain(status: RuleStatus) -> str:
    """Say what a status means for the deploy, in words a person can act on."""
    base = status.details or ""
    if status.status == "IssuesFound":
        return _short(base or "the rule found issues")
    if status.status in ("Error", "Stopped", "Stopping", "InProgress"):
        reason = f"rule evaluation {status.status}: it gave no verdict"
        return _short(f"{reason} ({base})" if base else reason)
    if status.status not in RULE_STATUSES:
        return _short(f"unknown rule status {status.status!r} ({base})")
    return _short(base)


def rule_findings(
    statuses: list[RuleStatus], policy: GatePolicy, expected_rules: list[str]
) -> list[Finding]:
    """A finding per rule evaluation, plus one per expected rule that reported nothing."""
    findings = [
        Finding(
            check=s.rule,
            source=s.source,
            status=s.status,
            severity=policy.severity(s.rule, s.status),
            details=explain(s),
        )
        for s in statuses
    ]
    reported = {s.rule for s in statuses}
    for rule in expected_rules:
        if rule not in reported:
            findings.append(
                Finding(
                    check=rule,
                    source="missing",
                    status="NoResult",
                    severity=policy.severity(rule, "NoResult"),
                    details=(
                        f"{rule} produced no result: not in the job's rule_statuses.json nor in "
                        f"its rule evaluation statuses; check the training job's log"
                    ),
                )
            )
    return findings


def quality_findings(
    test_accuracy: float | None,
    min_accuracy: float,
    baseline_accuracy: float | None,
    tolerance: float,
) -> list[Finding]:
    """Test accuracy against the threshold and against the model serving now."""
    if test_accuracy is None:
        return [
            Finding(
                check="test:accuracy",
                source="quality",
                status="Missing",
                severity=Severity.BLOCK,
                details=(
                    "the training job reported no test:accuracy metric; train.py must print "
                    "the final '[metric] epoch=final split=test ...' line that "
                    "metric_definitions.json matches"
                ),
            )
        ]
    findings = [
        Finding(
            check="MinTestAccuracy",
            source="quality",
            status="Passed" if test_accuracy >= min_accuracy else "Failed",
            severity=Severity.PASS if test_accuracy >= min_accuracy else Severity.BLOCK,
            details=f"test accuracy {test_accuracy:.4f} vs required {min_accuracy:.4f}",
        )
    ]
    if baseline_accuracy is None:
        findings.append(
            Finding(
                check="NoRegression",
                source="quality",
                status="NoBaseline",
                severity=Severity.PASS,
                details="no model with a recorded accuracy serves the endpoint yet",
            )
        )
        return findings
    floor = baseline_accuracy - tolerance
    ok = test_accuracy >= floor
    findings.append(
        Finding(
            check="NoRegression",
            source="quality",
            status="Passed" if ok else "Failed",
            severity=Severity.PASS if ok else Severity.BLOCK,
            details=(
                f"test accuracy {test_accuracy:.4f} vs serving model {baseline_accuracy:.4f} "
                f"minus tolerance {tolerance:.4f} = {floor:.4f}"
            ),
        )
    )
    return findings


def summarize(findings: list[Finding]) -> tuple[bool, str]:
    """Approved when nothing blocks; a one-line summary naming what blocked or warned."""
    blocking = [f for f in findings if f.severity is Severity.BLOCK]
    warnings = [f for f in findings if f.severity is Severity.WARN]
    if blocking:
        reasons = "; ".join(f"{f.check} ({f.source}): {f.status}: {f.details}" for f in blocking)
        return False, f"rejected by {len(blocking)} blocking finding(s): {reasons}"
    text = "approved"
    if warnings:
        text += f" with {len(warnings)} warning(s): " + ", ".join(
            f"{f.check} {f.status}" for f in warnings
        )
    return True, text


# --- the gate as a whole: one builder for EvaluateRules and bench/rules.py --------------------

# The project's rules: train.py evaluates them (--run-rules) and writes rule_statuses.json.
OWN_RULES = (
    "LossNotDecreasing",
    "VanishingGradient",
    "PoorWeightInitialization",
    "Overfit",
    "Overtraining",
)
# AWS's profiler rules, attached only where the account has SageMaker Debugger.
PROFILER_RULES = ("LowGPUUtilization", "ProfilerReport")


def expected_rules(debugger_available: bool) -> list[str]:
    """The rules that must report a verdict; one that reports nothing is a NoResult finding."""
    return list(OWN_RULES) + (list(PROFILER_RULES) if debugger_available else [])


@dataclass(frozen=True)
class Verdict:
    """The gate's decision over one trained model."""

    approved: bool
    summary: str
    findings: list[Finding]

    @property
    def blocking(self) -> list[str]:
        return [f.check for f in self.findings if f.severity is Severity.BLOCK]


def decide(
    statuses: list[RuleStatus],
    policy: GatePolicy,
    expected: list[str],
    test_accuracy: float | None,
    min_accuracy: float,
    baseline_accuracy: float | None,
    tolerance: float,
) -> Verdict:
    """Rule findings under the policy plus the quality gate, summarized into one decision."""
    findings = rule_findings(statuses, policy, expected) + quality_findings(
        test_accuracy, min_accuracy, baseline_accuracy, tolerance
    )
    approved, summary = summarize(findings)
    return Verdict(approved, summary, findings)
