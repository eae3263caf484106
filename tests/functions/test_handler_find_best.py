"""find_best: the best trial, the leaderboard, and a clear error without a completed trial."""

from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber
from pipeline_common.errors import NoCompletedTrainingJob

from tests.functions.handler_helpers import trial, tuning_job

TUNING = "mlops-digits-tune-1a2b3c4d"
EXECUTION = "digits-0123456789abcdef"
EVENT = {"execution_name": EXECUTION, "tuning_job_name": TUNING}


@pytest.fixture
def app(load_handler, buckets):
    return load_handler("find_best")


def run(app, context, job, *pages):
    with Stubber(app.sagemaker) as stub:
        stub.add_response(
            "describe_hyper_parameter_tuning_job", job, {"HyperParameterTuningJobName": TUNING}
        )
        for page in pages:
            stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job", page)
        return app.lambda_handler(EVENT, context)


def leaderboard(buckets):
    key = f"runs/{EXECUTION}/leaderboard.json"
    return json.loads(buckets.s3.get_object(Bucket=buckets.artifacts, Key=key)["Body"].read())


def test_find_best_picks_sagemakers_best_and_writes_the_leaderboard(app, buckets, context):
    trials = [
        trial("t-001", objective=0.40),
        trial(
            "t-002",
            objective=0.20,
            TunedHyperParameters={"model": '"resnet34"', "batch-size": "64", "lr": "0.003"},
        ),
        trial("t-003", "Failed", objective=None, FailureReason="AlgorithmError: out of memory"),
    ]
    job = tuning_job(TUNING, "Completed", BestTrainingJob=trials[1])

    result = run(app, context, job, {"TrainingJobSummaries": trials})

    assert result["training_job_name"] == "t-002"
    assert result["objective_value"] == 0.20
    assert result["hyperparameters"] == {"model": '"resnet34"', "batch-size": "64", "lr": "0.003"}
    assert result["model_uri"] == "s3://artifacts/runs/x/tuning/t-002/output/model.tar.gz"
    assert (result["completed_trials"], result["total_trials"]) == (2, 3)
    board = leaderboard(buckets)
    assert [row["training_job_name"] for row in board["trials"]] == ["t-002", "t-001", "t-003"]
    assert board["trials"][0]["hyperparameters"] == {
        "model": "resnet34",
        "batch-size": 64,
        "lr": 0.003,
    }
    assert board["trials"][2]["failure_reason"] == "AlgorithmError: out of memory"
    assert (
        result["leaderboard_uri"] == f"s3://{buckets.artifacts}/runs/{EXECUTION}/leaderboard.json"
    )


def test_find_best_without_best_training_job_takes_the_lowest_loss(app, buckets, context):
    trials = [trial("t-001", objective=0.40), trial("t-002", objective=0.30)]

    result = run(app, context, tuning_job(TUNING, "Completed"), {"TrainingJobSummaries": trials})

    assert result["training_job_name"] == "t-002"


def test_find_best_reads_every_page(app, buckets, context):
    first = {"TrainingJobSummaries": [trial("t-001", objective=0.4)], "NextToken": "more"}
    second = {"TrainingJobSummaries": [trial("t-002", objective=0.1)]}

    result = run(app, context, tuning_job(TUNING, "Completed"), first, second)

    assert result["training_job_name"] == "t-002"
    assert len(leaderboard(buckets)["trials"]) == 2


def test_find_best_no_completed_trial_names_the_failures(app, buckets, context):
    trials = [
        trial("t-001", "Failed", objective=None, FailureReason="AlgorithmError: bad lr"),
        trial("t-002", "Stopped", objective=None),
        trial("t-003", "Completed", objective=None),
    ]

    with pytest.raises(NoCompletedTrainingJob) as error:
        run(app, context, tuning_job(TUNING, "Completed"), {"TrainingJobSummaries": trials})

    message = str(error.value)
    assert TUNING in message
    assert "1 Completed, 1 Failed, 1 Stopped" in message
    assert "t-001: AlgorithmError: bad lr" in message


def test_find_best_no_trials_at_all(app, buckets, context):
    with pytest.raises(NoCompletedTrainingJob, match="0 trials"):
        run(app, context, tuning_job(TUNING, "Completed"), {"TrainingJobSummaries": []})
