"""Decide whether the retrained model may be deployed.

Rule results come from two places that hold the same shape: DescribeTrainingJob's
DebugRuleEvaluationStatuses / ProfilerRuleEvaluationStatuses (AWS's built-in rules, or the
local cloud running the project's rules) and ``rule_statuses.json`` inside the job's
``output.tar.gz`` (the project's rules run by train.py). The gate policy says which rules
block and which warn. The quality gate wants test:accuracy (FinalMetricDataList) at or above
MIN_TEST_ACCURACY and not below the accuracy of the model the endpoint serves now (recorded
as a tag on its endpoint config at deploy time) by more than REGRESSION_TOLERANCE. The full
report goes to ``runs/<execution>/gate.json``; the state gets the decision and findings.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipeline_common.aws import NOT_FOUND, aws_call, client
from pipeline_common.config import CommonSettings, GateSettings
from pipeline_common.endpoints import ACCURACY_TAG, serving_config_tags
from pipeline_common.gate import Finding, GatePolicy, RuleStatus, decide, expected_rules
from pipeline_common.jobs import TEST_ACCURACY_METRIC
from pipeline_common.kit import count, logger, step
from pipeline_common.models import GateDecision, StepModel
from pipeline_common.records import GATE, record_key
from pipeline_common.s3io import (
    MISSING_CODES,
    output_archive_uri,
    parse_s3_uri,
    read_tar_member,
    s3_uri,
    write_json,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
sagemaker = client("sagemaker")

RULE_STATUSES_FILE = "rule_statuses.json"
SKIPPED_FILES_FILE = "skipped_files.json"
MAX_SKIPPED_LISTED = 50


class EvaluateInput(StepModel):
    execution_name: str
    training_job_name: str


def statuses_from_job(job: dict[str, Any]) -> list[RuleStatus]:
    """Rule evaluations SageMaker reports on the training job itself."""
    found = []
    for field, source in (
        ("DebugRuleEvaluationStatuses", "debugger"),
        ("ProfilerRuleEvaluationStatuses", "profiler"),
    ):
        for item in job.get(field, []):
            found.append(
                RuleStatus(
                    rule=item.get("RuleConfigurationName", "?"),
                    status=item.get("RuleEvaluationStatus", "Error"),
                    details=item.get("StatusDetails", ""),
                    source=source,
                )
            )
    return found


def parse_rule_statuses(raw: bytes, uri: str) -> list[RuleStatus]:
    """rule_statuses.json -> statuses; a malformed file becomes one Error status."""
    try:
        items = json.loads(raw)
        return [
            RuleStatus(
                rule=str(item["RuleConfigurationName"]),
                status=str(item["RuleEvaluationStatus"]),
                details=str(item.get("StatusDetails", "")),
                source="job",
            )
            for item in items
        ]
    except (ValueError, TypeError, KeyError) as e:
        return [
            RuleStatus(
                rule=RULE_STATUSES_FILE,
                status="Error",
                details=f"{RULE_STATUSES_FILE} in {uri} is malformed ({e!r})",
                source="job",
            )
        ]


def read_output_archive(job: dict[str, Any]) -> tuple[bytes | None, str]:
    """The job's output.tar.gz (None when the job wrote none) and its URI."""
    uri = output_archive_uri(job["ModelArtifacts"]["S3ModelArtifacts"])
    bucket, key = parse_s3_uri(uri)
    with aws_call("GetObject", uri, ok=MISSING_CODES):
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read(), uri
    logger.warning({"operation": "read-output-archive", "missing": uri})
    return None, uri


def statuses_from_output(archive: bytes | None, uri: str) -> list[RuleStatus]:
    """The project's own rule results, written by train.py into output.tar.gz."""
    raw = read_tar_member(archive, RULE_STATUSES_FILE) if archive else None
    return parse_rule_statuses(raw, uri) if raw is not None else []


def skipped_files(archive: bytes | None) -> list[dict[str, str]] | None:
    """The images train.py could not decode and left out (None when it wrote no list)."""
    raw = read_tar_member(archive, SKIPPED_FILES_FILE) if archive else None
    try:
        items = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else None


def final_metric(job: dict[str, Any], name: str) -> float | None:
    for metric in job.get("FinalMetricDataList", []):
        if metric.get("MetricName") == name and "Value" in metric:
            return float(metric["Value"])
    return None


def serving_accuracy(endpoint_name: str) -> tuple[float | None, str | None]:
    """The recorded test accuracy of the model the endpoint serves now, and its config."""
    with aws_call("DescribeEndpoint", endpoint_name, ok=NOT_FOUND) as call:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    if not call.succeeded:
        return None, None  # no endpoint yet: nothing to regress against
    config = endpoint.get("EndpointConfigName")
    if not config:
        return None, None
    value = serving_config_tags(sagemaker, endpoint).get(ACCURACY_TAG)
    try:
        return (float(value) if value is not None else None), config
    except ValueError:
        logger.warning({"operation": "baseline", "bad_tag": value, "config": config})
        return None, config


def compact(findings: list[Finding]) -> list[dict[str, str]]:
    return [f.as_dict() for f in findings]


@step(EvaluateInput)
def lambda_handler(event: EvaluateInput, context: LambdaContext) -> GateDecision:
    common, gate = CommonSettings.from_env(), GateSettings.from_env()
    policy = GatePolicy.parse(gate.policy_text)
    with aws_call("DescribeTrainingJob", event.training_job_name):
        job = sagemaker.describe_training_job(TrainingJobName=event.training_job_name)
    archive, archive_uri = read_output_archive(job)
    statuses = statuses_from_job(job) + statuses_from_output(archive, archive_uri)
    skipped = skipped_files(archive)
    test_accuracy = final_metric(job, TEST_ACCURACY_METRIC)
    baseline, serving_config = serving_accuracy(gate.endpoint_name)
    verdict = decide(
        statuses,
        policy,
        expected_rules(gate.debugger_available),
        test_accuracy,
        gate.min_test_accuracy,
        baseline,
        gate.regression_tolerance,
    )
    approved, summary = verdict.approved, verdict.summary
    key = record_key(event.execution_name, GATE)
    report = {
        "training_job_name": event.training_job_name,
        "approved": approved,
        "summary": summary,
        "policy": {"block": sorted(policy.blocking), "warn": sorted(policy.warning)},
        "test_accuracy": test_accuracy,
        "min_test_accuracy": gate.min_test_accuracy,
        "baseline_accuracy": baseline,
        "baseline_endpoint_config": serving_config,
        "regression_tolerance": gate.regression_tolerance,
        "findings": compact(verdict.findings),
        # Corrupt or unreadable images the retrain left out (None: train.py wrote no list).
        "skipped_images": len(skipped) if skipped is not None else None,
        "skipped_files": (skipped or [])[:MAX_SKIPPED_LISTED],
    }
    with aws_call("PutObject", s3_uri(common.artifacts_bucket, key)):
        uri = write_json(s3, common.artifacts_bucket, key, report)
    logger.info({"operation": "gate", "approved": approved, "summary": summary})
    count("ModelsApproved" if approved else "ModelsRejected")
    return GateDecision(
        approved=approved,
        summary=summary,
        test_accuracy=test_accuracy,
        baseline_accuracy=baseline,
        blocking=verdict.blocking,
        findings=compact(verdict.findings),
        skipped_images=report["skipped_images"],
        report_uri=uri,
    )
