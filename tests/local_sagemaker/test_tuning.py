"""Hyperparameter tuning jobs on the local SageMaker (optuna search, fixture trials)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.waiting import wait_for

from .helpers import tuning_request, wait_tuning

pytestmark = pytest.mark.timeout(180)


def list_all_trials(sm: Any, name: str, **kwargs: Any) -> list[dict[str, Any]]:
    paginator = sm.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
    pages = paginator.paginate(HyperParameterTuningJobName=name, **kwargs)
    return [summary for page in pages for summary in page["TrainingJobSummaries"]]


def test_bayesian_tuning_job_runs_real_trials_and_picks_the_best(sm: Any) -> None:
    sm.create_hyper_parameter_tuning_job(**tuning_request("tune-bayes"))
    job = wait_tuning(sm, "tune-bayes")

    assert job["HyperParameterTuningJobStatus"] == "Completed"
    assert job["TrainingJobStatusCounters"] == {
        "Completed": 4,
        "InProgress": 0,
        "RetryableError": 0,
        "NonRetryableError": 0,
        "Stopped": 0,
    }
    assert job["ObjectiveStatusCounters"] == {"Succeeded": 4, "Pending": 0, "Failed": 0}
    trials = list_all_trials(sm, "tune-bayes", MaxResults=3)
    assert len(trials) == 4
    for trial in trials:
        assert re.fullmatch(r"tune-bayes-00[1-4]-[0-9a-f]{8}", trial["TrainingJobName"])
        assert set(trial["TunedHyperParameters"]) == {"lr", "batch-size"}
    best = job["BestTrainingJob"]
    values = [t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == min(values)
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "valid:loss"
    assert best["ObjectiveStatus"] == "Succeeded"
    ranked = list_all_trials(sm, "tune-bayes", SortBy="FinalObjectiveMetricValue")
    assert ranked[0]["TrainingJobName"] == best["TrainingJobName"]

    detail = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])
    assert detail["TuningJobArn"] == job["HyperParameterTuningJobArn"]
    assert detail["HyperParameters"]["lr"] == best["TunedHyperParameters"]["lr"]
    assert detail["HyperParameters"]["epochs"] == "2"
    listed = sm.list_hyper_parameter_tuning_jobs(NameContains="tune-bayes")
    assert listed["HyperParameterTuningJobSummaries"][0]["Strategy"] == "Bayesian"


def test_tuning_job_honours_max_parallel_training_jobs(sm: Any) -> None:
    sm.create_hyper_parameter_tuning_job(
        **tuning_request("tune-serial", strategy="Random", max_jobs=3, max_parallel=1)
    )
    wait_tuning(sm, "tune-serial")
    trials = list_all_trials(sm, "tune-serial", SortBy="CreationTime")
    spans = sorted((t["TrainingStartTime"], t["TrainingEndTime"]) for t in trials)
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "trials overlapped with MaxParallelTrainingJobs=1"


def test_early_stopping_stops_a_bad_trial(sm: Any) -> None:
    # Grid order with RandomSeed 5 runs lr=1000 (a terrible trial) last, after two good ones.
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(
            "tune-prune",
            strategy="Grid",
            max_jobs=None,
            max_parallel=1,
            seed=5,
            early_stopping="Auto",
            ranges={
                "CategoricalParameterRanges": [{"Name": "lr", "Values": ["0.01", "0.012", "1000"]}]
            },
            static={"epochs": 8, "epoch-seconds": 0.15},
        )
    )
    job = wait_tuning(sm, "tune-prune")
    trials = {t["TunedHyperParameters"]["lr"]: t for t in list_all_trials(sm, "tune-prune")}
    assert trials["0.01"]["TrainingJobStatus"] == "Completed"
    bad = trials["1000"]
    assert bad["TrainingJobStatus"] == "Stopped"
    assert bad["ObjectiveStatus"] == "Succeeded"
    assert bad["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] > 20
    assert job["TrainingJobStatusCounters"]["Stopped"] == 1
    assert job["BestTrainingJob"]["TunedHyperParameters"]["lr"] == "0.01"
    detail = sm.describe_training_job(TrainingJobName=bad["TrainingJobName"])
    assert "early stopping" in detail["SecondaryStatusTransitions"][-1]["StatusMessage"]
    valid_losses = [m for m in detail["FinalMetricDataList"] if m["MetricName"] == "valid:loss"]
    assert valid_losses, "the stopped trial keeps the metrics it printed"


def test_warm_start_seeds_the_study_with_the_parents_trials(sm: Any, service: Any) -> None:
    sm.create_hyper_parameter_tuning_job(
        **tuning_request("tune-parent", strategy="Random", max_jobs=2, max_parallel=2)
    )
    wait_tuning(sm, "tune-parent")
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(
            "tune-child",
            max_jobs=1,
            max_parallel=1,
            WarmStartConfig={
                "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "tune-parent"}],
                "WarmStartType": "IdenticalDataAndAlgorithm",
            },
        )
    )
    child = wait_tuning(sm, "tune-child")
    assert child["HyperParameterTuningJobStatus"] == "Completed"
    assert child["WarmStartConfig"]["WarmStartType"] == "IdenticalDataAndAlgorithm"
    assert service.backend.tuning_jobs["tune-child"].warm_start_trials == 2
    assert child["TrainingJobStatusCounters"]["Completed"] == 1


def test_tuning_job_where_every_trial_fails_is_failed(sm: Any) -> None:
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(
            "tune-all-fail",
            strategy="Random",
            max_jobs=2,
            max_parallel=2,
            static={"fail": "true"},
        )
    )
    job = wait_tuning(sm, "tune-all-fail")
    assert job["HyperParameterTuningJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("All 2 training jobs failed.")
    assert "synthetic failure" in job["FailureReason"]
    assert job["TrainingJobStatusCounters"]["NonRetryableError"] == 2
    assert job["ObjectiveStatusCounters"]["Failed"] == 2
    assert "BestTrainingJob" not in job


def test_one_crashing_trial_does_not_stop_the_others(
    sm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LOCAL_FAULTS", "training_fail=tune-one-bad-001")
    sm.create_hyper_parameter_tuning_job(
        **tuning_request("tune-one-bad", strategy="Random", max_jobs=3, max_parallel=1)
    )
    job = wait_tuning(sm, "tune-one-bad")
    assert job["HyperParameterTuningJobStatus"] == "Completed"
    assert job["TrainingJobStatusCounters"]["NonRetryableError"] == 1
    assert job["TrainingJobStatusCounters"]["Completed"] == 2
    failed = list_all_trials(sm, "tune-one-bad", StatusEquals="Failed")
    assert len(failed) == 1 and "injected fault" in failed[0]["FailureReason"]


def test_stop_tuning_job_stops_its_trials(sm: Any) -> None:
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(
            "tune-stop",
            strategy="Random",
            max_jobs=4,
            max_parallel=2,
            static={"epochs": 200, "epoch-seconds": 0.1},
        )
    )
    wait_for(
        lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-stop"),
        60,
        "a trial of tune-stop in progress",
        done=lambda d: d["TrainingJobStatusCounters"]["InProgress"] >= 1,
    )
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-stop")
    job = wait_tuning(sm, "tune-stop")
    assert job["HyperParameterTuningJobStatus"] == "Stopped"
    statuses = {t["TrainingJobStatus"] for t in list_all_trials(sm, "tune-stop")}
    assert statuses == {"Stopped"}
    with pytest.raises(ClientError) as raised:
        sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-stop")
    assert raised.value.response["Error"]["Code"] == "ValidationException"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {
                "strategy": "Grid",
                "max_jobs": None,
            },
            "The Grid search strategy supports only categorical",
        ),
        (
            {
                "ranges": {
                    "ContinuousParameterRanges": [
                        {
                            "Name": "lr",
                            "MinValue": "0",
                            "MaxValue": "1",
                            "ScalingType": "Logarithmic",
                        }
                    ]
                }
            },
            "Logarithmic scaling of hyperparameter lr needs MinValue > 0",
        ),
        ({"max_jobs": None}, "MaxNumberOfTrainingJobs is required"),
        (
            {"static": {"lr": 0.1}},
            "are both static and tunable",
        ),
    ],
)
def test_invalid_tuning_requests_are_refused(
    sm: Any, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ClientError) as raised:
        sm.create_hyper_parameter_tuning_job(**tuning_request("tune-invalid", **overrides))
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert message in raised.value.response["Error"]["Message"]


def test_objective_without_metric_definition_is_refused(sm: Any) -> None:
    request = tuning_request("tune-no-metric")
    request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] = (
        "valid:accuracy"
    )
    with pytest.raises(ClientError) as raised:
        sm.create_hyper_parameter_tuning_job(**request)
    assert raised.value.response["Error"]["Message"] == (
        "A metric is required for this hyperparameter tuning job objective. Provide a metric in "
        "the metric definitions."
    )


def test_list_trials_of_unknown_tuning_job_is_resource_not_found(sm: Any) -> None:
    with pytest.raises(ClientError) as raised:
        sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="nope")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFound"


def trials_in_order(sm: Any, name: str) -> list[dict[str, Any]]:
    """The tuning job's trials by their index (the -NNN- in the training job name)."""
    trials = list_all_trials(sm, name)
    return sorted(trials, key=lambda t: t["TrainingJobName"].rsplit("-", 2)[-2])


def test_same_random_seed_gives_the_same_suggestions_whatever_ends_first(sm: Any) -> None:
    """Parallel trials whose durations differ (epoch-seconds is searched) end out of order;
    trial k is still asked for only after trial k - MaxParallelTrainingJobs ended, and the
    study is told results in trial order, so one RandomSeed gives one sequence."""
    ranges = {
        "ContinuousParameterRanges": [
            {"Name": "lr", "MinValue": "0.0001", "MaxValue": "1", "ScalingType": "Logarithmic"}
        ],
        "CategoricalParameterRanges": [{"Name": "epoch-seconds", "Values": ["0.0", "0.4"]}],
    }
    sequences = []
    for name in ("tune-seed-a", "tune-seed-b"):
        sm.create_hyper_parameter_tuning_job(
            **tuning_request(name, max_jobs=6, max_parallel=2, seed=11, ranges=ranges)
        )
        wait_tuning(sm, name)
        trials = trials_in_order(sm, name)
        for earlier, later in zip(trials, trials[2:], strict=False):
            assert later["TrainingStartTime"] >= earlier["TrainingEndTime"], (
                f"{later['TrainingJobName']} started before {earlier['TrainingJobName']} ended"
            )
        sequences.append([t["TunedHyperParameters"] for t in trials])

    assert len(sequences[0]) == 6
    assert sequences[0] == sequences[1]
