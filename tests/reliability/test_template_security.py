"""Template security: checkov with zero failed checks, and every suppression justified.

IAM scoping, bucket encryption, public access blocks, TLS-only bucket policies, the API key and
the predict function's InvokeEndpoint scope are asserted in tests/integration/test_template.py;
this module adds checkov (from PyPI, in its own .venv-checkov because it pins an older boto3)
and what those tests leave out (the topic's encryption and TLS-only policy).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlops.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
MIN_COMMENT_WORDS = 8

requires_checkov = pytest.mark.skipif(
    not CHECKOV.exists(),
    reason=".venv-checkov is missing: run `make checkov-venv` (requirements/checkov.txt)",
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def run_checkov() -> dict[str, Any]:
    """checkov on template.yaml, offline (no guideline download), as JSON."""
    done = subprocess.run(
        [
            str(CHECKOV),
            "--file",
            str(TEMPLATE),
            "--framework",
            "cloudformation",
            "--skip-download",
            "--quiet",
            "--compact",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert done.stdout.strip(), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


@requires_checkov
@pytest.mark.timeout(360)
def test_template_checkov_has_no_failed_check() -> None:
    report = run_checkov()

    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 0
    assert failed == []


def test_template_every_checkov_suppression_has_a_reason(template: dict[str, Any]) -> None:
    skips = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip", [])
    ]

    assert skips, "expected the justified suppressions of docs/reliability.md"
    for name, skip in skips:
        assert skip["id"].startswith("CKV_"), (name, skip)
        assert len(str(skip.get("comment", "")).split()) >= MIN_COMMENT_WORDS, (name, skip)


def test_template_no_checkov_check_is_skipped_for_buckets_encryption_or_public_access(
    template: dict[str, Any],
) -> None:
    """The checks that matter most may never be suppressed: encryption, public access, TLS."""
    protected = {"CKV_AWS_19", "CKV_AWS_53", "CKV_AWS_54", "CKV_AWS_55", "CKV_AWS_56", "CKV_AWS_26"}
    skipped = {
        skip["id"]
        for resource in template["Resources"].values()
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip", [])
    }
    assert skipped & protected == set()


def test_template_topic_is_encrypted_and_tls_only(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["FailureTopic"]["Properties"]["KmsMasterKeyId"]
    [statement] = resources["FailureTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]

    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_template_predict_function_has_no_other_permission(template: dict[str, Any]) -> None:
    policies = template["Resources"]["PredictFunction"]["Properties"]["Policies"]
    statements = [s for policy in policies for s in policy.get("Statement", [])]

    assert len(policies) == 1
    assert [s["Action"] for s in statements] == ["sagemaker:InvokeEndpoint"]


def test_asl_lambda_timeouts_are_retried_once_then_caught() -> None:
    """A Lambda timeout (Sandbox.Timedout, as the local runtime answers it) ends somewhere clear."""
    states = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())["States"]
    lambda_tasks = {
        name: state
        for name, state in states.items()
        if state["Type"] == "Task" and state["Resource"].endswith("lambda:invoke")
    }

    assert lambda_tasks
    for name, state in lambda_tasks.items():
        [retrier] = [r for r in state["Retry"] if "Sandbox.Timedout" in r["ErrorEquals"]]
        assert retrier["MaxAttempts"] == 1, name
        assert state["Catch"][0]["ErrorEquals"] == ["States.ALL"], name
