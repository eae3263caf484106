"""evaluate_rules: gate policy over every rule status, plus the quality gate."""

from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber

from tests.functions.handler_helpers import ARN_PREFIX, endpoint, tar_gz, training_job

TRAINING = "mlops-digits-retrain-1a2b3c4d"
EXECUTION = "digits-0123456789abcdef"
OWN_RULES = [
    "LossNotDecreasing",
    "VanishingGradient",
    "PoorWeightInitialization",
    "Overfit",
    "Overtraining",
]
ALL_CLEAR = [(rule, "NoIssuesFound") for rule in OWN_RULES]


@pytest.fixture
def app(load_handler, buckets):
    return load_handler("evaluate_rules")


def model_uri(buckets) -> str:
    return f"s3://{buckets.artifacts}/runs/{EXECUTION}/training/{TRAINING}/output/model.tar.gz"


def write_rule_statuses(
    buckets, statuses: list[tuple[str, str]] | bytes, extra: dict[str, bytes] | None = None
) -> None:
    body = (
        statuses
        if isinstance(statuses, bytes)
        else json.dumps(
            [
                {
                    "RuleConfigurationName": r,
                    "RuleEvaluationStatus": s,
                    "StatusDetails": f"{r} said {s}",
                }
                for r, s in statuses
            ]
        ).encode()
    )
    key = f"runs/{EXECUTION}/training/{TRAINING}/output/output.tar.gz"
    buckets.s3.put_object(
        Bucket=buckets.artifacts,
        Key=key,
        Body=tar_gz({"rule_statuses.json": body, "history.json": b"[]", **(extra or {})}),
    )


def evaluate(
    app,
    buckets,
    context,
    *,
    accuracy: float | None = 0.9,
    builtin: list[tuple[str, str]] | None = None,
    serving_accuracy: str | None = None,
):
    job = training_job(
        TRAINING,
        rules=builtin,
        metrics={"test:accuracy": accuracy} if accuracy is not None else {},
        ModelArtifacts={"S3ModelArtifacts": model_uri(buckets)},
    )
    with Stubber(app.sagemaker) as stub:
        stub.add_response("describe_training_job", job, {"TrainingJobName": TRAINING})
        if serving_accuracy is None:
            stub.add_client_error(
                "describe_endpoint", "ValidationException", "Could not find endpoint"
            )
        else:
            stub.add_response(
                "describe_endpoint", endpoint("mlops-classifier", config="mlops-digits-00000000")
            )
            stub.add_response(
                "list_tags",
                {"Tags": [{"Key": "mlops:test-accuracy", "Value": serving_accuracy}]},
                {"ResourceArn": f"{ARN_PREFIX}:endpoint-config/mlops-digits-00000000"},
            )
        return app.lambda_handler(
            {"execution_name": EXECUTION, "training_job_name": TRAINING}, context
        )


def severity_of(result, check):
    return {(f["check"], f["source"]): f["severity"] for f in result["findings"]}[check]


def test_evaluate_rules_approves_a_clean_model(app, buckets, context):
    write_rule_statuses(buckets, ALL_CLEAR)

    result = evaluate(app, buckets, context)

    assert result["approved"] is True
    assert result["blocking"] == []
    assert result["test_accuracy"] == 0.9
    report = json.loads(
        buckets.s3.get_object(Bucket=buckets.artifacts, Key=f"runs/{EXECUTION}/gate.json")[
            "Body"
        ].read()
    )
    assert report["approved"] is True
    assert len(report["findings"]) == len(OWN_RULES) + 2  # rules + threshold + regression


def test_evaluate_rules_blocking_rule_with_issues_rejects(app, buckets, context):
    write_rule_statuses(buckets, [*ALL_CLEAR[1:], ("LossNotDecreasing", "IssuesFound")])

    result = evaluate(app, buckets, context)

    assert result["approved"] is False
    assert result["blocking"] == ["LossNotDecreasing"]
    assert (
        "LossNotDecreasing (job): IssuesFound: LossNotDecreasing said IssuesFound"
        in result["summary"]
    )


def test_evaluate_rules_warning_rule_with_issues_only_warns(app, buckets, context):
    write_rule_statuses(
        buckets, [*ALL_CLEAR[:3], ("Overfit", "IssuesFound"), ("Overtraining", "NoIssuesFound")]
    )

    result = evaluate(app, buckets, context)

    assert result["approved"] is True
    assert "1 warning(s): Overfit IssuesFound" in result["summary"]


@pytest.mark.parametrize(
    ("status", "severity"),
    [
        ("NoIssuesFound", "pass"),
        ("IssuesFound", "block"),
        ("InProgress", "block"),
        ("Error", "block"),
        ("Stopping", "block"),
        ("Stopped", "block"),
    ],
)
def test_evaluate_rules_every_status_of_a_blocking_rule(app, buckets, context, status, severity):
    write_rule_statuses(buckets, [*ALL_CLEAR[1:], ("LossNotDecreasing", status)])

    result = evaluate(app, buckets, context)

    assert severity_of(result, ("LossNotDecreasing", "job")) == severity
    assert result["approved"] is (severity == "pass")


@pytest.mark.parametrize("status", ["InProgress", "Error", "Stopping", "Stopped", "IssuesFound"])
def test_evaluate_rules_every_status_of_a_warning_rule(app, buckets, context, status):
    write_rule_statuses(
        buckets, [*ALL_CLEAR[:3], ("Overfit", status), ("Overtraining", "NoIssuesFound")]
    )

    result = evaluate(app, buckets, context)

    assert severity_of(result, ("Overfit", "job")) == "warn"
    assert result["approved"] is True


def test_evaluate_rules_reads_debugger_statuses_too(app, buckets, context):
    write_rule_statuses(buckets, ALL_CLEAR)

    result = evaluate(app, buckets, context, builtin=[("VanishingGradient", "IssuesFound")])

    assert result["approved"] is False
    assert severity_of(result, ("VanishingGradient", "debugger")) == "block"


def test_evaluate_rules_without_rule_results_rejects(app, buckets, context):
    result = evaluate(app, buckets, context)  # no output.tar.gz at all

    assert result["approved"] is False
    assert set(result["blocking"]) == {
        "LossNotDecreasing",
        "VanishingGradient",
        "PoorWeightInitialization",
    }
    assert severity_of(result, ("Overfit", "missing")) == "warn"


def gate_record(buckets) -> dict:
    key = f"runs/{EXECUTION}/gate.json"
    return json.loads(buckets.s3.get_object(Bucket=buckets.artifacts, Key=key)["Body"].read())


def test_evaluate_rules_counts_the_images_the_retrain_skipped(app, buckets, context):
    skipped = [
        {"split": "train", "file": "000.zero/bad.png", "reason": "cannot identify image file"},
        {"split": "test", "file": "001.one/cut.jpg", "reason": "image file is truncated"},
    ]
    write_rule_statuses(
        buckets, ALL_CLEAR, extra={"skipped_files.json": json.dumps(skipped).encode()}
    )

    result = evaluate(app, buckets, context)

    assert result["approved"] is True  # skipped images are counted, not a reason to reject
    assert result["skipped_images"] == 2
    assert gate_record(buckets)["skipped_files"] == skipped


def test_evaluate_rules_without_a_skipped_list_says_unknown(app, buckets, context):
    write_rule_statuses(buckets, ALL_CLEAR)

    result = evaluate(app, buckets, context)

    assert result["skipped_images"] is None
    assert gate_record(buckets)["skipped_files"] == []


def test_evaluate_rules_malformed_rule_statuses_rejects(app, buckets, context):
    write_rule_statuses(buckets, b"{not json")

    result = evaluate(app, buckets, context)

    assert result["approved"] is False
    assert "rule_statuses.json" in json.dumps(result["findings"])


def test_evaluate_rules_accuracy_below_threshold_rejects(app, buckets, context):
    write_rule_statuses(buckets, ALL_CLEAR)

    result = evaluate(app, buckets, context, accuracy=0.5)

    assert result["approved"] is False
    assert result["blocking"] == ["MinTestAccuracy"]
    assert "test accuracy 0.5000 vs required 0.7500" in result["summary"]


def test_evaluate_rules_missing_test_accuracy_rejects(app, buckets, context):
    write_rule_statuses(buckets, ALL_CLEAR)

    result = evaluate(app, buckets, context, accuracy=None)

    assert result["approved"] is False
    assert result["blocking"] == ["test:accuracy"]


def test_evaluate_rules_regression_against_serving_model_rejects(app, buckets, context):
    write_rule_statuses(buckets, ALL_CLEAR)

    result = evaluate(app, buckets, context, accuracy=0.90, serving_accuracy="0.950000")

    assert result["approved"] is False
    assert result["baseline_accuracy"] == 0.95
    assert result["blocking"] == ["NoRegression"]


def test_evaluate_rules_within_tolerance_of_serving_model_approves(app, buckets, context):
    write_rule_statuses(buckets, ALL_CLEAR)

    result = evaluate(app, buckets, context, accuracy=0.945, serving_accuracy="0.950000")

    assert result["approved"] is True


def test_evaluate_rules_debugger_accounts_expect_profiler_rules(load_handler, buckets, context):
    app = load_handler("evaluate_rules", DebuggerAvailable="true")
    write_rule_statuses(buckets, ALL_CLEAR)

    result = evaluate(app, buckets, context)

    assert severity_of(result, ("LowGPUUtilization", "missing")) == "warn"
    assert result["approved"] is True
