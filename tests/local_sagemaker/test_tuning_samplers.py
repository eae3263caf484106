"""The Bayesian strategy's sampler over every kind of SageMaker range, asked as a tuning job
asks: with MaxParallelTrainingJobs trials pending and results told in trial order.

These drive the study that `create_study` builds for a job (no service, no training): the
search itself is what is under test here; tests/local_sagemaker/test_tuning.py runs it inside
real tuning jobs, and bench/tuning.py judges its search quality over many seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.tuning import create_study, tell_study
from mlops.local.sagemaker.tuning_request import TuningSettings
from mlops.local.sagemaker.tuning_space import Parameter, build_search_space

# One range of every kind and scaling that CreateHyperParameterTuningJob accepts.
EVERY_RANGE = {
    "CategoricalParameterRanges": [{"Name": "model", "Values": ["small", "medium", "large"]}],
    "ContinuousParameterRanges": [
        {"Name": "lr", "MinValue": "0.0001", "MaxValue": "1", "ScalingType": "Logarithmic"},
        {"Name": "dropout", "MinValue": "0", "MaxValue": "0.5", "ScalingType": "Linear"},
        {
            "Name": "beta",
            "MinValue": "0.5",
            "MaxValue": "0.999",
            "ScalingType": "ReverseLogarithmic",
        },
        {"Name": "wd", "MinValue": "0.000001", "MaxValue": "0.01", "ScalingType": "Auto"},
    ],
    "IntegerParameterRanges": [
        {"Name": "layers", "MinValue": "1", "MaxValue": "8", "ScalingType": "Linear"},
        {"Name": "width", "MinValue": "8", "MaxValue": "1024", "ScalingType": "Logarithmic"},
    ],
}
TRIALS = 8
PARALLEL = 2


def study_for(strategy: str, seed: int, parameters: list[Parameter], tmp: Path) -> optuna.Study:
    settings = TuningSettings(
        strategy=strategy,
        objective_name="valid:loss",
        direction="minimize",
        max_jobs=TRIALS,
        max_parallel=PARALLEL,
        max_runtime_s=None,
        early_stopping=False,
        seed=seed,
        parameters=parameters,
    )
    return create_study(settings, SageMakerConfig(state_dir=tmp), f"samplers-{strategy}-{seed}")


def toy_loss(tuned: dict[str, str]) -> float:
    """A smooth objective over the strings a training job receives (best: lr 0.01, 4 layers)."""
    return (
        (math.log10(float(tuned["lr"])) + 2) ** 2
        + 0.1 * (int(tuned["layers"]) - 4) ** 2
        + {"small": 0.5, "medium": 0.0, "large": 0.2}[tuned["model"]]
        + float(tuned["dropout"])
    )


def run_job(strategy: str, seed: int, tmp: Path) -> list[dict[str, str]]:
    """Trial i is asked once trials 1..i-PARALLEL are told, in order, as TuningJob does."""
    parameters = build_search_space(EVERY_RANGE, strategy)
    study = study_for(strategy, seed, parameters, tmp)
    distributions = {p.name: p.distribution for p in parameters}
    asked: list[tuple[optuna.trial.Trial, dict[str, str]]] = []
    for index in range(TRIALS):
        if index >= PARALLEL:
            trial, tuned = asked[index - PARALLEL]
            study.tell(trial, toy_loss(tuned))
        trial = study.ask(distributions)
        asked.append((trial, {p.name: p.to_string(trial.params[p.name]) for p in parameters}))
    return [tuned for _, tuned in asked]


def in_range(name: str, text: str) -> bool:
    """The string a training job gets lies within its ParameterRange (and parses as its type)."""
    for item in EVERY_RANGE["ContinuousParameterRanges"]:
        if item["Name"] == name:
            return float(item["MinValue"]) <= float(text) <= float(item["MaxValue"])
    for item in EVERY_RANGE["IntegerParameterRanges"]:
        if item["Name"] == name:
            return int(item["MinValue"]) <= int(text) <= int(item["MaxValue"])
    return text in EVERY_RANGE["CategoricalParameterRanges"][0]["Values"]


def test_bayesian_sampler_suggests_every_range_kind_within_its_bounds(tmp_path: Path) -> None:
    trials = run_job("Bayesian", seed=3, tmp=tmp_path)

    assert len(trials) == TRIALS
    for tuned in trials:
        assert set(tuned) == {"model", "lr", "dropout", "beta", "wd", "layers", "width"}
        outside = {name: text for name, text in tuned.items() if not in_range(name, text)}
        assert not outside, f"suggested outside the ranges: {outside}"
    assert len({tuple(sorted(t.items())) for t in trials}) == TRIALS, "a trial was repeated"


def test_bayesian_sampler_same_seed_gives_the_same_suggestions(tmp_path: Path) -> None:
    assert run_job("Bayesian", seed=7, tmp=tmp_path) == run_job("Bayesian", seed=7, tmp=tmp_path)


@pytest.mark.parametrize("seed", [0, 1])
def test_bayesian_is_not_random_search_once_results_are_known(seed: int, tmp_path: Path) -> None:
    """Optuna's default TPE draws its first 10 trials with the same seeded generator as the
    Random strategy: a 6-trial "Bayesian" job was random search, trial for trial. From the
    third trial on (one result known, one trial pending) the model must choose."""
    bayesian = run_job("Bayesian", seed, tmp_path)
    random = run_job("Random", seed, tmp_path)

    assert bayesian[:PARALLEL] == random[:PARALLEL], "the first trials are asked blind"
    assert all(b != r for b, r in zip(bayesian[PARALLEL:], random[PARALLEL:], strict=True))


@pytest.mark.parametrize(
    ("strategy", "job_status", "value", "told_as"),
    [
        ("Bayesian", "Stopped", 2.5, optuna.trial.TrialState.COMPLETE),
        ("Random", "Stopped", 2.5, optuna.trial.TrialState.PRUNED),
        ("Bayesian", "Completed", 2.5, optuna.trial.TrialState.COMPLETE),
        ("Bayesian", "Failed", None, optuna.trial.TrialState.FAIL),
        ("Bayesian", "Stopped", None, optuna.trial.TrialState.FAIL),
    ],
)
def test_an_early_stopped_trial_teaches_the_bayesian_model(
    strategy: str, job_status: str, value: float | None, told_as: object, tmp_path: Path
) -> None:
    """GPSampler models complete trials only: an early-stopped job's last objective value must
    reach it as a complete trial, or the GP never learns that the region is poor."""
    parameters = build_search_space(EVERY_RANGE, strategy)
    study = study_for(strategy, 0, parameters, tmp_path)
    trial = study.ask({p.name: p.distribution for p in parameters})
    trial.report(3.0, 0)

    tell_study(study, trial, strategy, job_status, value)

    (told,) = study.get_trials(deepcopy=False)
    assert told.state == told_as
    if told_as == optuna.trial.TrialState.COMPLETE:
        assert told.value == value
