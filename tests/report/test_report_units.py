"""The pure parts of reports, progress and the console, without a cloud."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from pipeline_common import metrics
from pipeline_report import analysis as an
from pipeline_report import progress
from pipeline_report.executions import ExecutionView, StepRecord
from pipeline_report.records import confusion_from_record
from pipeline_report.render import badge, short_cause, tone

from mlops import console, console_graph

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trial(name: str, objective: float | None, status: str = "Completed", started: str = ""):
    return {
        "name": name,
        "objective": objective,
        "status": status,
        "hyperparameters": {},
        "started": started,
    }


# -- leaderboard ---------------------------------------------------------------------------------
def test_sort_trials_minimize_puts_the_lowest_objective_first_and_unscored_last():
    trials = [trial("b", 0.7), trial("failed", None, "Failed"), trial("a", 0.3), trial("c", 0.5)]

    ordered = [t["name"] for t in an.sort_trials(trials, "Minimize")]

    assert ordered == ["a", "c", "b", "failed"]


def test_sort_trials_maximize_puts_the_highest_objective_first():
    trials = [trial("a", 0.3), trial("b", 0.9), trial("nan", float("nan"))]

    assert [t["name"] for t in an.sort_trials(trials, "Maximize")] == ["b", "a", "nan"]


def test_trial_order_follows_start_time_then_name():
    trials = [trial("x-002", 1.0, started="2026-01-01 12:01"), trial("x-001", 2.0, started="")]

    assert [t["name"] for t in an.trial_order(trials)] == ["x-001", "x-002"]


def test_best_so_far_keeps_the_running_minimum_and_skips_missing_values():
    values = [None, 0.9, 1.2, None, 0.4, 0.6]

    assert an.best_so_far(values, "Minimize") == [None, 0.9, 0.9, 0.9, 0.4, 0.4]
    assert an.best_so_far(values, "Maximize") == [None, 0.9, 1.2, 1.2, 1.2, 1.2]


def test_decode_hyperparameters_undoes_the_sdks_json_encoding():
    decoded = an.decode_hyperparameters({"model": '"resnet18"', "lr": "0.01", "raw": "abc"})

    assert decoded == {"model": "resnet18", "lr": 0.01, "raw": "abc"}


# -- timeline ------------------------------------------------------------------------------------
def step(name, kind, start, end, status="SUCCEEDED", error=None, attempts=0):
    return StepRecord(
        name=name,
        state_type=kind,
        started=at(start),
        ended=at(end) if end is not None else None,
        status=status,
        error=error,
        attempts=attempts,
    )


def test_timeline_folds_a_wait_loop_into_one_row_per_state():
    steps = [
        step("StartTuning", "Task", 0, 1, attempts=1),
        step("WaitForTuning", "Wait", 1, 3),
        step("CheckTuning", "Task", 3, 3.5, attempts=1),
        step("WaitForTuning", "Wait", 3.5, 5.5),
        step("CheckTuning", "Task", 5.5, 6, attempts=1),
        step("FindBest", "Task", 6, None, status="RUNNING"),
    ]

    rows = an.timeline(steps, at(0), now=at(10))

    assert [r.name for r in rows] == ["StartTuning", "WaitForTuning", "CheckTuning", "FindBest"]
    wait = rows[1]
    assert wait.visits == 2
    assert wait.duration_s == pytest.approx(4.0)
    assert wait.segments == [(1.0, 2.0), (3.5, 2.0)]
    assert rows[2].attempts == 2
    assert rows[3].status == "RUNNING"
    assert rows[3].duration_s == pytest.approx(4.0)  # still running: up to `now`


def test_timeline_marks_a_task_that_exited_with_its_error_as_caught():
    steps = [
        step("ValidateDataset", "Task", 0, 1, error="DatasetInvalid"),
        step("PipelineFailed", "Fail", 1, 1, status="FAILED", error="DatasetInvalid"),
    ]

    rows = an.timeline(steps, at(0), now=at(2))

    assert [r.status for r in rows] == ["CAUGHT", "FAILED"]


# -- training curves -----------------------------------------------------------------------------
LOG = """Invoking script with the following command: python train.py
[metric] epoch=1 split=train loss=2.300000 accuracy=0.1000
[metric] epoch=1 split=valid loss=2.200000 accuracy=0.1500
[metric] epoch=2 split=train loss=1.500000 accuracy=0.4000
[metric] epoch=2 split=valid loss=9.000000 accuracy=0.2000
resumed from checkpoint
[metric] epoch=2 split=valid loss=1.400000 accuracy=0.5000
[metric] epoch=final split=test loss=1.300000 accuracy=0.5500
"""


def test_curves_from_log_reads_every_epoch_and_keeps_the_last_line_of_a_repeated_one():
    curves = an.curves_from_log(LOG.splitlines(), "log")

    assert curves.epochs == [1, 2]
    assert curves.train_loss == [2.3, 1.5]
    assert curves.valid_loss == [2.2, 1.4]
    assert curves.valid_accuracy == [0.15, 0.5]
    assert curves.test == {"loss": 1.3, "accuracy": 0.55}


def test_curves_from_history_keeps_epoch_times():
    history = {
        "epochs": [
            {
                "epoch": 1,
                "seconds": 2.5,
                "train": {"loss": 2.0, "accuracy": 0.2},
                "valid": {"loss": 1.9, "accuracy": 0.25},
            },
        ],
        "test": {"loss": 1.8, "accuracy": 0.3, "samples": 40},
    }

    curves = an.curves_from_history(history, "history.json")

    assert curves.epochs == [1]
    assert curves.epoch_seconds == [2.5]
    assert curves.test["accuracy"] == 0.3


def test_last_epoch_gives_the_newest_epoch_and_its_metrics():
    epoch, values = an.last_epoch(LOG.splitlines())

    assert epoch == 2
    assert values["valid:loss"] == 1.4
    assert values["train:accuracy"] == 0.4


# -- confusion matrix ----------------------------------------------------------------------------
def test_confusion_record_counts_true_rows_and_accuracy_per_class():
    record = metrics.confusion_record(
        ["000.zero", "001.one", "002.two"], [[1, 1, 0], [0, 1, 0], [0, 0, 2]]
    )

    assert record["images"] == 5
    assert record["accuracy"] == pytest.approx(0.8)
    assert record["per_class_accuracy"] == {"000.zero": 0.5, "001.one": 1.0, "002.two": 1.0}
    with pytest.raises(ValueError, match="3 x 3"):
        metrics.confusion_record(["a", "b", "c"], [[1, 0], [0, 1]])


def test_confusion_from_record_labels_the_classes_and_rejects_other_shapes():
    record = metrics.confusion_record(["000.zero", "001.one"], [[0, 0], [1, 3]])

    confusion = confusion_from_record(json.loads(json.dumps(record)))

    assert confusion.labels == ["zero", "one"]
    assert confusion.per_class_accuracy == {"zero": None, "one": 0.75}
    assert confusion_from_record(None) is None
    assert confusion_from_record({"classes": [], "matrix": []}) is None


# -- rendering -----------------------------------------------------------------------------------
def test_badge_escapes_text_and_colours_unknown_words_grey():
    assert "&lt;b&gt;" in badge("<b>")
    assert tone("NoIssuesFound") == "good"
    assert tone("IssuesFound") == "bad"
    assert tone("Passed") == "good"
    assert tone("whatever") == "info"
    assert [tone(s) for s in ("Approved", "Rejected", "PendingManualApproval")] == [
        "good",
        "bad",
        "warn",
    ]


def test_short_cause_shows_a_lambda_errors_message():
    cause = json.dumps({"errorType": "DatasetInvalid", "errorMessage": "no valid split"})

    assert short_cause(cause) == "no valid split"
    assert short_cause("plain text") == "plain text"


# -- progress ------------------------------------------------------------------------------------
class FakeSageMaker:
    def describe_hyper_parameter_tuning_job(self, HyperParameterTuningJobName):
        return {
            "TrainingJobStatusCounters": {"Completed": 1, "InProgress": 1, "Stopped": 1},
            "HyperParameterTuningJobConfig": {"ResourceLimits": {"MaxNumberOfTrainingJobs": 4}},
            "BestTrainingJob": {
                "TrainingJobName": "t-001",
                "FinalHyperParameterTuningJobObjectiveMetric": {
                    "MetricName": "valid:loss",
                    "Value": 0.61234,
                },
            },
        }

    def describe_training_job(self, TrainingJobName):
        return {"SecondaryStatus": "Training", "HyperParameters": {"epochs": "6"}}


class FakeLogs:
    def describe_log_streams(self, logGroupName, logStreamNamePrefix):
        return {"logStreams": [{"logStreamName": "job/algo-1"}]}

    def get_log_events(self, **kwargs):
        return {"events": [{"message": line} for line in LOG.splitlines()]}


def view_in(state_input: dict) -> ExecutionView:
    return ExecutionView(
        arn="arn",
        name="x",
        status="RUNNING",
        started=T0,
        stopped=None,
        input={},
        output=None,
        error=None,
        cause=None,
        steps=[StepRecord(name="CheckTuning", state_type="Task", started=T0, input=state_input)],
    )


def test_execution_progress_during_tuning_counts_trials_and_names_the_best():
    line = progress.execution_progress(
        view_in({"tuning": {"job_name": "tune-1"}}), FakeSageMaker(), FakeLogs()
    )

    assert line == "tuning tune-1: 2/4 trials done (1 running), best valid:loss 0.6123 (t-001)"


def test_execution_progress_during_the_retrain_shows_its_epoch():
    state = {"tuning": {}, "best": {}, "training": {"job_name": "retrain-1"}}

    line = progress.execution_progress(view_in(state), FakeSageMaker(), FakeLogs())

    assert line == "retrain retrain-1: Training, epoch 2/6 (valid loss 1.4000, accuracy 0.5000)"


def test_execution_progress_is_silent_outside_tuning_and_training():
    assert progress.execution_progress(view_in({"gate": {}}), FakeSageMaker(), None) is None


# -- console graph -------------------------------------------------------------------------------
DEFINITION = {
    "StartAt": "Check",
    "States": {
        "Check": {"Type": "Choice", "Choices": [{"Next": "Work"}], "Default": "Bad"},
        "Bad": {"Type": "Fail"},
        "Work": {"Type": "Task", "Next": "Wait", "Catch": [{"Next": "Notify"}]},
        "Wait": {"Type": "Wait", "Next": "Poll"},
        "Poll": {"Type": "Task", "Next": "Done?", "Catch": [{"Next": "Notify"}]},
        "Done?": {"Type": "Choice", "Choices": [{"Next": "Ok"}], "Default": "Wait"},
        "Ok": {"Type": "Succeed"},
        "Notify": {"Type": "Task", "Next": "Failed"},
        "Failed": {"Type": "Fail"},
    },
}


def test_back_edges_are_the_wait_loops():
    edges = console_graph.transitions(DEFINITION)

    loops = console_graph.back_edges(DEFINITION, edges)

    assert loops == {console_graph.Edge("Done?", "Wait", "default")}


def test_layout_keeps_the_main_path_in_the_first_column_top_to_bottom():
    positions = console_graph.layout(DEFINITION)

    main = ["Check", "Work", "Wait", "Poll", "Done?", "Ok"]
    assert [positions[name][1] for name in main] == [0] * len(main)
    assert [positions[name][0] for name in main] == sorted(positions[n][0] for n in main)
    assert positions["Bad"] == (1, 1)  # beside Work, to the right
    assert positions["Notify"][0] > positions["Poll"][0]
    assert len(set(positions.values())) == len(positions)


def test_graph_svg_colours_states_by_status_and_marks_unvisited_ones():
    svg = console_graph.graph_svg(
        DEFINITION, {"Check": "SUCCEEDED", "Work": "CAUGHT", "Failed": "FAILED"}
    )

    assert 'data-state="Work" data-status="CAUGHT"' in svg
    assert 'data-state="Ok" data-status="NOT_VISITED"' in svg
    assert svg.count('<g class="state') == len(DEFINITION["States"])
    assert 'class="edge loop"' in svg and 'class="edge catch"' in svg


def test_dataset_of_strips_the_execution_suffix():
    assert console.dataset_of("digits-a-0123456789abcdef") == "digits-a"
    assert console.dataset_of("hand-started") == "-"


# -- the whole report from synthetic data ----------------------------------------------------------
def synthetic_run():
    from pipeline_report.collect import RunData
    from pipeline_report.describe import Endpoint, Retrain, Tuning
    from pipeline_report.profile import Profile

    steps = [
        step("ValidateDataset", "Task", 0, 1),
        step("WaitForTuning", "Wait", 1, 3),
        step("CheckTuning", "Task", 3, 4),
        step("PipelineFailed", "Fail", 4, 4, status="FAILED", error="Boom"),
    ]
    view = ExecutionView(
        arn="arn",
        name="digits-0123456789abcdef",
        status="FAILED",
        started=T0,
        stopped=at(5),
        input={"dataset": "digits"},
        output=None,
        error="Boom",
        cause=json.dumps({"errorMessage": "<script>alert(1)</script> went wrong"}),
        steps=steps,
    )
    trials = [
        {
            "name": f"t-00{i}",
            "status": "Completed",
            "objective": v,
            "started": str(i),
            "hyperparameters": {"lr": lr, "model": "resnet18"},
        }
        for i, (v, lr) in enumerate([(0.9, 0.01), (0.5, 0.02), (0.7, 0.03)], 1)
    ]
    curves = an.curves_from_log(LOG.splitlines(), "log")
    curves.epoch_seconds = [1.0, 2.0]
    return RunData(
        view=view,
        target_name="local",
        generated=at(6),
        timeline=an.timeline(steps, T0, at(5)),
        records={
            "gate.json": {
                "approved": False,
                "summary": "rejected",
                "findings": [
                    {
                        "check": "Overfit",
                        "status": "IssuesFound",
                        "source": "job",
                        "severity": "block",
                        "details": "valid loss above train loss",
                    }
                ],
            }
        },
        tuning=Tuning(
            job_name="tune",
            status="Completed",
            strategy="Bayesian",
            objective_metric="valid:loss",
            objective_type="Minimize",
            trials=an.sort_trials(trials, "Minimize"),
            trials_source="test",
            best_name="t-002",
            best_objective=0.5,
            best_hyperparameters={"lr": 0.02},
            counters={"Completed": 3},
            max_jobs=3,
            learning_rate="lr",
            learning_rate_log=True,
            learning_rate_range=(0.01, 0.03),
        ),
        retrain=Retrain(
            job_name="retrain",
            status="Completed",
            secondary_status="Completed",
            failure_reason=None,
            instance_type="ml.m5.large",
            hyperparameters={"epochs": 2},
            final_metrics={"test:accuracy": 0.55},
            curves=curves,
            billable_s=30.0,
            rule_statuses=[
                {"rule": "Overfit", "status": "IssuesFound", "details": "x", "source": "job"}
            ],
            confusion=confusion_from_record(
                metrics.confusion_record(["000.zero", "001.one"], [[3, 1], [0, 4]])
            ),
            profile=Profile(
                source="usage",
                times_s=[0, 1, 2],
                cpu_percent=[50, 150, 90],
                memory_mib=[100, 300, 200],
                cpu_count=2,
            ),
        ),
        endpoint=Endpoint(
            name="ep",
            status="InService",
            config_name="c",
            run_config_name="c",
            model_name="m",
            model_data=None,
            instance_type="ml.m5.large",
            serves_this_run=True,
            failure_reason=None,
        ),
    )


def test_render_draws_every_plot_and_escapes_run_text():
    from pipeline_report.build import draw
    from pipeline_report.render import render

    data = synthetic_run()
    figures = draw(data)
    html = render(data, figures)

    assert set(figures) == {
        "gantt",
        "objective_by_trial",
        "objective_by_lr",
        "training_curves",
        "epoch_times",
        "system_profile",
        "confusion_matrix",
    }
    assert all(png.startswith(b"\x89PNG") and len(png) > 5_000 for png in figures.values())
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; went wrong" in html
    assert 'data-trial="t-002" class="best"' in html
    assert 'data-rule="Overfit" data-status="IssuesFound"' in html
    assert html.count('<img data-plot="') == len(figures)


def test_skipped_images_are_counted_and_listed_with_their_reason():
    from pipeline_report.render import skipped_images

    html = skipped_images(
        {
            "skipped_images": 3,
            "skipped_files": [
                {"split": "train", "file": "000.zero/<bad>.png", "reason": "not an image"}
            ],
        }
    )

    assert 'data-skipped-images="3"' in html
    assert "(the first 1 listed)" in html
    assert "000.zero/&lt;bad&gt;.png" in html and "not an image" in html
    assert "wrote no list" in skipped_images({"skipped_images": None})


def test_local_job_samples_read_back_as_a_profiler_system_profile():
    import boto3
    from moto import mock_aws
    from pipeline_report.profile import profile_from_profiler_output

    from mlops.local.sagemaker.processes import profiler_system_metrics

    usage = {
        "started_epoch_s": 1_800_000_000.0,
        "cpu_count": 2,
        "samples": [
            {"t": 0.0, "cpu_percent": 50.0, "rss_bytes": 2**30},
            {"t": 1.0, "cpu_percent": 180.0, "rss_bytes": 2**31},
        ],
    }
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="artifacts")
        key = "runs/r/profiler/job/profiler-output/system/incremental/1.algo-1.json"
        body = profiler_system_metrics(usage, total_memory_bytes=2**33)
        s3.put_object(Bucket="artifacts", Key=key, Body=body.encode())
        profile = profile_from_profiler_output(
            s3, "s3://artifacts/runs/r/profiler/job/profiler-output/system/"
        )

    assert profile is not None
    assert profile.times_s == [0.0, 1.0]
    assert profile.cpu_percent == [25.0, 90.0]  # per-core average, as AWS reports it
    assert profile.gpu_percent == []
    assert profile.memory_percent == [12.5, 25.0]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"gate": {"approved": True}}, ("SUCCEEDED", None)),
        ({"gate": {"approved": False, "summary": "too weak"}}, ("FAILED", "ModelRejected")),
        (
            {"failure": {"Error": "DatasetInvalid", "Cause": "no split"}},
            ("FAILED", "DatasetInvalid"),
        ),
    ],
)
def test_reported_outcome_is_what_the_outcome_choice_decides_next(state, expected):
    steps = [step("SmokeTest", "Task", 0, 1), step("WriteReport", "Task", 1, None, "RUNNING")]
    steps[-1].input = state

    outcome = an.reported_outcome("RUNNING", steps)

    assert (outcome.status, outcome.error) == expected
    assert an.reported_outcome("SUCCEEDED", steps) is None  # the run has ended: its own status
    assert an.reported_outcome("RUNNING", steps[:1]) is None  # still working, not reporting


def test_dataset_section_counts_unreadable_images_and_shows_the_warnings():
    from pipeline_report.render import dataset_section

    validation = {
        "images": {
            "readable": {"train": {"a": 5, "b": 6}, "valid": {"a": 2, "b": 2}},
            "unreadable": {"train": {"a": 1, "b": 0}, "valid": {"a": 0, "b": 0}},
            "unreadable_count": 1,
            "unreadable_files": [
                {"split": "train", "class": "a", "file": "train/a/<x>.png", "reason": "empty"}
            ],
        },
        "warnings": ["1 unreadable image(s) in train/ will be skipped"],
    }

    html = dataset_section(validation)

    assert 'data-unreadable-images="1"' in html
    assert "train/a/&lt;x&gt;.png" in html
    assert "will be skipped" in html
    assert "No validation record" in dataset_section(None)


def test_smoke_test_section_says_an_input_error_is_not_a_model_failure():
    from pipeline_report.render import smoke_test

    record = {"image_key": "datasets/d/test/a/1.png", "input_rejected": {"status": 415}}

    html = smoke_test(record)

    assert 'data-smoke-input-rejected="415"' in html
    assert "not a model failure" in html


def test_report_names_the_registered_version_and_the_one_the_endpoint_serves():
    from pipeline_common import records as names
    from pipeline_report.render import render

    data = synthetic_run()
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/mlops-digits-models/7"
    data.records[names.REGISTRATION] = {
        "model_package_group_name": "mlops-digits-models",
        "model_package_arn": arn,
        "model_package_version": 7,
        "approval_status": "Rejected",
    }
    data.records[names.DEPLOYMENT] = {"operation": "updated", "model_package_arn": arn}
    html = render(data, {})

    registered = re.search(r'<p id="model-package">(.*?)</p>', html, re.S)
    assert registered, "the rules section names no model package version"
    assert "<b>7</b>" in registered.group(1) and "mlops-digits-models" in registered.group(1)
    assert "Rejected" in registered.group(1)
    served = re.search(r'<span class="muted" id="served-package">(.*?)</span>', html, re.S)
    assert served, "the endpoint row names no version"
    assert served.group(1) == (  # the version it serves, linked to the console's version page
        f'model package <a href="/models/mlops-digits-models/7">{arn}</a>'
    )


def test_report_shows_the_registered_versions_lineage_linked_where_the_target_lives():
    from pipeline_common import records as names
    from pipeline_report.lineage import Link, package_link
    from pipeline_report.render import render

    data = synthetic_run()
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/mlops-digits-models/7"
    data.records[names.REGISTRATION] = {"model_package_arn": arn, "model_package_version": 7}
    data.lineage = [
        Link("data set", "<digits>", "manifest version v:1", "s3://d/datasets/x/manifest.json"),
        Link("tuning job", "mlops-digits-tune-1a2b3c4d"),
        package_link(arn, "Approved"),
        Link("endpoint", "mlops-endpoint", "serves it now"),
    ]

    local = render(data, {})
    data.link_region = "eu-west-1"
    on_aws = render(data, {})

    chain = re.search(r'<ol class="lineage" id="lineage">(.*?)</ol>', local, re.S)
    assert chain, "the report shows no lineage"
    assert re.findall(r'href="([^"]*)"', chain.group(1)) == [
        "/datasets/%3Cdigits%3E",
        "/tuning-jobs/mlops-digits-tune-1a2b3c4d",
        "/models/mlops-digits-models/7",
        "/endpoints/mlops-endpoint",
    ]
    page = local.split('<script type="application/json"')[0]  # JSON keeps names as they are
    assert "&lt;digits&gt;" in chain.group(1) and "<digits>" not in page
    aws_chain = re.search(r'<ol class="lineage" id="lineage">(.*?)</ol>', on_aws, re.S).group(1)
    assert 'href="https://eu-west-1.console.aws.amazon.com/sagemaker/home?region=eu-west-1' in (
        aws_chain
    )
    embedded = json.loads(re.search(r'id="report-data">(.*?)</script>', on_aws, re.S).group(1))
    assert [link["kind"] for link in embedded["lineage"]] == [
        "data set",
        "tuning job",
        "model package",
        "endpoint",
    ]
    assert embedded["lineage"][3]["url"].endswith("#/endpoints/mlops-endpoint")


def test_report_says_when_a_run_ended_before_the_registry():
    from pipeline_report.render import render

    html = render(synthetic_run(), {})
    assert "No model package version: the run ended before the registry." in html
