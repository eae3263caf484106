"""Benchmark 5: does the Bayesian strategy find better hyperparameters than random search?

The objective is cheap and fixed: a scikit-learn MLP on the 8x8 digits with a fixed budget (12
epochs, fixed weight seed), scored by validation log loss (minimised, like the pipeline's
valid:loss). The search space has the pipeline's shape: a categorical "model" (hidden width),
a categorical batch size, a log-scaled learning rate, plus a log-scaled weight decay.

The studies are made by the local SageMaker's own code: the space by tuning.py's
`build_search_space` from SageMaker-shaped ParameterRanges, the sampler by `TuningJob`'s study
factory for strategy "Bayesian" and "Random" (same seed handling), trials asked and told one at
a time as a sequential tuning job does (hyperparameters pass through `Parameter.to_string`, the
strings a training job receives). A diverged trial (no finite loss) is told as failed, as a
training job that printed no objective metric.

Reported: mean (and per seed) best objective after N trials for each strategy over the same
seeds, the mean best after the template's default MaxJobs (6), and how many trials were
identical to random search: optuna's TPE starts with 10 random trials, so a tuning job with
MaxJobs <= 10 (the template's 6, the local 2) is random search whatever the strategy says.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.common import Settings, at_most, info, log, result

NAME = "tuning"
TITLE = "Tuning efficiency: Bayesian (TPE) against random search"
TEMPLATE_MAX_JOBS = 6  # template.yaml's MaxJobs default
PARAMETER_RANGES = {
    "CategoricalParameterRanges": [
        {"Name": "model", "Values": ["mlp16", "mlp32", "mlp64", "mlp128"]},
        {"Name": "batch-size", "Values": ["16", "32", "64", "128"]},
    ],
    "ContinuousParameterRanges": [
        {"Name": "lr", "MinValue": "0.0001", "MaxValue": "1", "ScalingType": "Logarithmic"},
        {
            "Name": "weight-decay",
            "MinValue": "0.000001",
            "MaxValue": "0.1",
            "ScalingType": "Logarithmic",
        },
    ],
}


@dataclass(frozen=True)
class Size:
    trials: int
    seeds: int


def size_for(quick: bool) -> Size:
    return Size(trials=12, seeds=2) if quick else Size(trials=20, seeds=5)


class DigitsObjective:
    """Validation log loss of an MLP trained with a fixed budget; deterministic per input."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        features, labels = load_digits(return_X_y=True)
        split = train_test_split(
            features / 16.0, labels, test_size=0.3, stratify=labels, random_state=0
        )
        self.x_train, self.x_valid, self.y_train, self.y_valid = split

    def __call__(self, hyperparameters: dict[str, str]) -> float:
        """The strings a training job receives in, the objective value out (nan: diverged)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.metrics import log_loss
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(
            hidden_layer_sizes=(int(hyperparameters["model"].removeprefix("mlp")),),
            batch_size=int(hyperparameters["batch-size"]),
            learning_rate_init=float(hyperparameters["lr"]),
            alpha=float(hyperparameters["weight-decay"]),
            max_iter=12,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow while diverging
            model.fit(self.x_train, self.y_train)
            probabilities = model.predict_proba(self.x_valid)
        if not math.isfinite(float(probabilities.sum())):
            return math.nan
        return float(log_loss(self.y_valid, probabilities, labels=list(range(10))))


def local_sagemaker_study(strategy: str, seed: int, max_jobs: int) -> tuple[optuna.Study, list]:
    """The study the local SageMaker creates for a tuning job with this strategy and seed.

    tuning.py has no public sampler factory, so its TuningJob._create_study is called on a
    stand-in that carries only what that method reads (settings, config, name).
    """
    from mlops.local.sagemaker.tuning import TuningJob
    from mlops.local.sagemaker.tuning_request import TuningSettings
    from mlops.local.sagemaker.tuning_space import build_search_space

    parameters = build_search_space(PARAMETER_RANGES, strategy)
    settings = TuningSettings(
        strategy=strategy,
        objective_name="valid:loss",
        direction="minimize",
        max_jobs=max_jobs,
        max_parallel=1,
        max_runtime_s=None,
        early_stopping=False,
        seed=seed,
        parameters=parameters,
    )
    stand_in = SimpleNamespace(name=f"bench-{strategy}-{seed}", settings=settings, config=None)
    return TuningJob._create_study(stand_in), parameters


def search(study: optuna.Study, parameters: list, objective: DigitsObjective, trials: int) -> list:
    """Ask/tell one trial at a time; returns the objective values in trial order (nan: failed)."""
    distributions = {p.name: p.distribution for p in parameters}
    values = []
    for _ in range(trials):
        trial = study.ask(distributions)
        tuned = {p.name: p.to_string(trial.params[p.name]) for p in parameters}
        value = objective(tuned)
        if math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.FAIL)
        values.append(value)
    return values


def best_after(values: list[float], count: int) -> float:
    finite = [v for v in values[:count] if math.isfinite(v)]
    return min(finite) if finite else math.nan


def run(settings: Settings) -> dict[str, Any]:
    size = size_for(settings.quick)
    objective = DigitsObjective()
    makers = {
        "random": lambda seed: local_sagemaker_study("Random", seed, size.trials),
        "bayesian": lambda seed: local_sagemaker_study("Bayesian", seed, size.trials),
    }
    runs: dict[str, dict[int, list[float]]] = {name: {} for name in makers}
    for seed in range(size.seeds):
        log(f"{NAME}: seed {seed + 1}/{size.seeds}")
        for name, make in makers.items():
            study, parameters = make(seed)
            runs[name][seed] = search(study, parameters, objective, size.trials)
    summary = summarize(runs, size)
    mean = {name: summary[name]["mean_best"] for name in makers}
    checks = [
        at_most(
            f"mean best valid loss after {size.trials}: Bayesian - random",
            mean["bayesian"] - mean["random"],
            0.0,
        ),
        info("  mean best: Bayesian / random", f"{mean['bayesian']:.4f} / {mean['random']:.4f}"),
        info(
            f"  same after {TEMPLATE_MAX_JOBS} trials (template MaxJobs)",
            f"{summary['bayesian']['mean_best_at_max_jobs']:.4f} / "
            f"{summary['random']['mean_best_at_max_jobs']:.4f}",
        ),
    ]
    notes = [
        f"{size.seeds} seeds x {size.trials} trials per strategy; objective: MLP on digits, "
        "validation log loss",
        f"trials identical to random search (TPE's random start-up): "
        f"{summary['identical_to_random']} of {size.seeds * size.trials}",
    ]
    return result(NAME, TITLE, checks, {"size": size.__dict__, **summary}, notes)


def summarize(runs: dict[str, dict[int, list[float]]], size: Size) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, per_seed in runs.items():
        bests = [best_after(values, size.trials) for values in per_seed.values()]
        at_max_jobs = [best_after(values, TEMPLATE_MAX_JOBS) for values in per_seed.values()]
        summary[name] = {
            "best_per_seed": bests,
            "mean_best": sum(bests) / len(bests),
            "mean_best_at_max_jobs": sum(at_max_jobs) / len(at_max_jobs),
            "failed_trials": sum(not math.isfinite(v) for vs in per_seed.values() for v in vs),
        }
    summary["identical_to_random"] = sum(
        a == b or (math.isnan(a) and math.isnan(b))
        for seed, values in runs["bayesian"].items()
        for a, b in zip(values, runs["random"][seed], strict=True)
    )
    return summary
