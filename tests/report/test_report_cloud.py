"""The report of a finished local execution, checked against the SageMaker describe calls."""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile

import pytest
from PIL import Image
from pipeline_report.analysis import decode_hyperparameters
from pipeline_report.build import build_report

from mlops.cli import main

from .conftest import Runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

EXPECTED_PLOTS = {
    "gantt",
    "objective_by_trial",
    "objective_by_lr",
    "training_curves",
    "epoch_times",
    "system_profile",
    "confusion_matrix",
}


def embedded_json(html: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S
    )
    assert match, "the report embeds no report-data JSON"
    return json.loads(match.group(1).replace("<\\/", "</"))


def embedded_pngs(html: str) -> dict[str, bytes]:
    found = re.findall(r'<img data-plot="([a-z_]+)"[^>]*src="data:image/png;base64,([^"]+)"', html)
    return {name: base64.b64decode(data) for name, data in found}


@pytest.fixture(scope="module")
def report(runs: Runs):
    return build_report(runs.target, runs.succeeded.name)


@pytest.fixture(scope="module")
def tuning_job(runs: Runs) -> dict:
    sagemaker = runs.target.client("sagemaker")
    [summary] = sagemaker.list_hyper_parameter_tuning_jobs(NameContains="digits-rep")[
        "HyperParameterTuningJobSummaries"
    ]
    return sagemaker.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=summary["HyperParameterTuningJobName"]
    )


def test_report_succeeded_run_lists_every_trial_with_its_objective(runs, report, tuning_job):
    assert runs.succeeded.status == "SUCCEEDED", runs.succeeded.cause
    trials = runs.target.client("sagemaker").list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning_job["HyperParameterTuningJobName"]
    )["TrainingJobSummaries"]
    shown = {t["name"]: t for t in embedded_json(report.html)["tuning"]["trials"]}

    assert len(trials) == 2
    for trial in trials:
        name = trial["TrainingJobName"]
        objective = trial["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        assert shown[name]["objective"] == pytest.approx(objective)
        assert f'data-trial="{name}"' in report.html
        assert f"{objective:.6f}" in report.html
    objectives = [t["objective"] for t in embedded_json(report.html)["tuning"]["trials"]]
    assert objectives == sorted(objectives)  # valid:loss, minimised: best first


def test_report_best_hyperparameters_are_the_tuning_jobs_best_training_job(report, tuning_job):
    best = tuning_job["BestTrainingJob"]
    data = embedded_json(report.html)["tuning"]

    assert data["best_training_job"] == best["TrainingJobName"]
    assert data["best_hyperparameters"] == decode_hyperparameters(best["TunedHyperParameters"])
    assert 'class="best"' in report.html


def test_report_rule_statuses_equal_the_jobs_own(runs, report):
    """Both sources the gate reads: DescribeTrainingJob's rule statuses and the job's
    rule_statuses.json in output.tar.gz (which the local retrain writes)."""
    sagemaker, s3 = runs.target.client("sagemaker"), runs.target.client("s3")
    job_name = embedded_json(report.html)["retrain"]["job_name"]
    job = sagemaker.describe_training_job(TrainingJobName=job_name)
    bucket, key = job["ModelArtifacts"]["S3ModelArtifacts"][len("s3://") :].split("/", 1)
    archive = s3.get_object(Bucket=bucket, Key=key.rsplit("/", 1)[0] + "/output.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(archive["Body"].read())) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("rule_statuses.json"))
        from_output = json.loads(tar.extractfile(member).read())
    expected = {
        ("debugger", s["RuleConfigurationName"]): s["RuleEvaluationStatus"]
        for s in job.get("DebugRuleEvaluationStatuses", [])
    } | {("job", s["RuleConfigurationName"]): s["RuleEvaluationStatus"] for s in from_output}
    shown = embedded_json(report.html)["retrain"]["rule_statuses"]

    assert expected, "the retrain reported no rule evaluations"
    assert {(r["source"], r["rule"]): r["status"] for r in shown} == expected
    for (_, rule), status in expected.items():
        assert f'data-rule="{rule}" data-status="{status}"' in report.html
    gate = embedded_json(report.html)["gate"]
    for finding in gate["findings"]:
        if finding["source"] in ("job", "debugger"):
            assert expected[(finding["source"], finding["check"])] == finding["status"]


def test_report_embeds_every_plot_as_a_non_empty_png(report):
    pngs = embedded_pngs(report.html)

    assert set(pngs) == EXPECTED_PLOTS
    for name, png in pngs.items():
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), name
        width, height = Image.open(io.BytesIO(png)).size
        assert width >= 300 and height >= 150, f"{name} is {width}x{height}"
        assert len(png) > 5_000, f"{name} is only {len(png)} bytes"


def test_report_confusion_matrix_covers_the_test_split_from_the_retrains_record(report):
    confusion = embedded_json(report.html)["confusion"]

    assert confusion["images"] == 40  # the whole test split, counted in the test pass
    assert sum(map(sum, confusion["matrix"])) == 40
    assert len(confusion["labels"]) == len(confusion["per_class_accuracy"]) == 10
    assert confusion["accuracy"] == pytest.approx(
        report.data.retrain.final_metrics["test:accuracy"], abs=1e-4
    )


def test_report_cli_writes_the_file_and_prints_its_path(runs, tmp_path, capsys):
    code = main(["report", "latest", "--root", str(runs.root), "--out", str(tmp_path)])

    printed = capsys.readouterr().out.strip()
    assert code == 0
    assert printed == str(tmp_path / f"{runs.failed.name}.html")  # the newest run
    assert "DatasetInvalid" in (tmp_path / f"{runs.failed.name}.html").read_text()


def test_report_failed_run_names_its_error_and_what_is_missing(runs):
    report = build_report(runs.target, runs.failed.name)
    data = embedded_json(report.html)

    assert data["status"] == "FAILED"
    assert data["error"] == "DatasetInvalid"
    assert 'id="execution-error"' in report.html
    assert data["tuning"] is None
    assert any("StartTuning" in note for note in data["notes"])
    assert set(embedded_pngs(report.html)) == {"gantt"}


def test_wait_progress_shows_trials_best_objective_and_epochs(runs):
    lines = runs.wait_output.splitlines()

    assert any(re.search(r"tuning \S+: [12]/2 trials done", line) for line in lines), lines
    assert any("best valid:loss" in line for line in lines), lines
    assert any(re.search(r"retrain \S+: \w+, epoch [1-6]/6", line) for line in lines), lines


def stored_report(runs: Runs, execution: str) -> str:
    s3 = runs.target.client("s3")
    key = f"runs/{execution}/report.html"
    return s3.get_object(Bucket=runs.target.artifacts_bucket, Key=key)["Body"].read().decode()


def test_pipeline_writes_its_report_to_the_artifacts_bucket(runs, tuning_job):
    html = stored_report(runs, runs.succeeded.name)

    trials = embedded_json(html)["tuning"]["trials"]
    assert {t["name"] for t in trials} == {
        s["TrainingJobName"]
        for s in runs.target.client("sagemaker").list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning_job["HyperParameterTuningJobName"]
        )["TrainingJobSummaries"]
    }
    pngs = embedded_pngs(html)
    for plot in (
        "gantt",
        "objective_by_trial",
        "training_curves",
        "system_profile",
        "confusion_matrix",
    ):
        assert Image.open(io.BytesIO(pngs[plot])).size[0] > 100, plot
    # Written from inside the run: its own step is the last one on the timeline, and the
    # header shows where the run ends next.
    assert embedded_json(html)["states"][-1]["name"] == "WriteReport"
    assert re.search(r'<span id="outcome">[^\n]*SUCCEEDED', html)


def test_pipeline_writes_a_report_for_a_failed_run_too(runs):
    html = stored_report(runs, runs.failed.name)

    assert re.search(r'<span id="outcome">[^\n]*FAILED', html)
    assert re.search(r'id="execution-error"><b>DatasetInvalid</b>', html)


def test_report_counts_the_corrupt_image_the_retrain_skipped(runs, report):
    from .conftest import CORRUPT_IMAGE

    gate = report.data.gate
    assert gate["skipped_images"] == 1
    [skipped] = gate["skipped_files"]
    assert skipped["split"] == "train" and skipped["file"].endswith(CORRUPT_IMAGE)
    assert 'data-skipped-images="1"' in report.html
