"""Benchmark 5: does the Bayesian strategy find better hyperparameters than random search?

The objective is real small trainings, run live (no surrogate): a scikit-learn MLP on the 8x8
digits with a fixed budget (12 epochs, fixed weight seed), scored by validation log loss
(minimised, like the pipeline's valid:loss). With BLAS held to one thread a training costs
0.03-0.2 s of CPU, so every trial of every seed is a real training (a surrogate table would
only add an interpolation error); the objective is deterministic, so a configuration seen again
is not trained twice. The search space has the pipeline's shape: a categorical "model" (hidden
width), a categorical batch size, a log-scaled learning rate, plus a log-scaled weight decay.
(train.py's ResNets over the template's space cost minutes a trial on this 2-core machine;
thousands of trials are needed to judge a sampler over seeds.)

The studies are made by the local SageMaker's own code: the space by tuning_space.py's
`build_search_space` from SageMaker-shaped ParameterRanges, the study by tuning.py's
`create_study` for strategy "Bayesian" and "Random" (same seed handling). Trials are asked and
told as a tuning job with MaxParallelTrainingJobs=2 does (the template's default): trial i is
asked once trials 1..i-2 are told, in index order, so the first two trials of every strategy
are asked with nothing known. Hyperparameters pass through `Parameter.to_string`, the strings a
training job receives. A diverged trial (no finite loss) is told as failed, as a training job
that printed no objective metric.

Reported, over the same seeds for both strategies: the mean best objective after the
template's MaxJobs (6) and after 20 trials, the mean of the per-seed differences
(Bayesian - random) and its standard error; the goal is a difference below zero by more than
one standard error at 6 trials, and below zero at 20.

Warm start: a child tuning job warm-started from a 6-trial Bayesian parent (the parent's
finished trials added to its study, as tuning.py's `_seed_from_parents` does) against the same
job started cold (same seed): how many of its own trials each needs to reach the parent's best
(a job that does not reach it within 20 trials counts as 21).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.common import Settings, at_most, info, log, result

NAME = "tuning"
TITLE = "Tuning efficiency: Bayesian against random search, warm start"
TEMPLATE_MAX_JOBS = 6  # template.yaml's MaxJobs default
MAX_PARALLEL = 2  # template.yaml's MaxParallelJobs default
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
    return Size(trials=8, seeds=3) if quick else Size(trials=20, seeds=20)


class DigitsObjective:
    """Validation log loss of an MLP trained with a fixed budget; deterministic per input, so
    a configuration met again (often: warm starts, categorical choices) is trained once."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        features, labels = load_digits(return_X_y=True)
        split = train_test_split(
            features / 16.0, labels, test_size=0.3, stratify=labels, random_state=0
        )
        self.x_train, self.x_valid, self.y_train, self.y_valid = split
        self.known: dict[tuple[tuple[str, str], ...], float] = {}
        self.trainings = 0

    def __call__(self, hyperparameters: dict[str, str]) -> float:
        """The strings a training job receives in, the objective value out (nan: diverged)."""
        key = tuple(sorted(hyperparameters.items()))
        if key not in self.known:
            self.known[key] = self.train(hyperparameters)
            self.trainings += 1
        return self.known[key]

    def train(self, hyperparameters: dict[str, str]) -> float:
        """One real training. BLAS runs single-threaded (see `run`): 0.03-0.2 s of CPU each."""
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
    """The study the local SageMaker creates for a tuning job with this strategy and seed."""
    from mlops.local.sagemaker.config import SageMakerConfig
    from mlops.local.sagemaker.tuning import create_study
    from mlops.local.sagemaker.tuning_request import TuningSettings
    from mlops.local.sagemaker.tuning_space import build_search_space

    parameters = build_search_space(PARAMETER_RANGES, strategy)
    settings = TuningSettings(
        strategy=strategy,
        objective_name="valid:loss",
        direction="minimize",
        max_jobs=max_jobs,
        max_parallel=MAX_PARALLEL,
        max_runtime_s=None,
        early_stopping=False,
        seed=seed,
        parameters=parameters,
    )
    config = SageMakerConfig(state_dir=Path(tempfile.gettempdir()))  # read only for early stopping
    return create_study(settings, config, f"bench-{strategy}-{seed}"), parameters


def search(
    study: optuna.Study,
    parameters: list,
    objective: DigitsObjective,
    trials: int,
    target: float | None = None,
) -> list[float]:
    """Objective values in trial order (nan: failed), asked and told as a tuning job with
    MaxParallelTrainingJobs=2 does: trial i is asked once trials 1..i-2 are told, in order.
    With `target`, the search ends at the first trial whose value reaches it."""
    distributions = {p.name: p.distribution for p in parameters}
    asked: list[tuple[optuna.trial.Trial, float]] = []
    told = 0
    for index in range(trials):
        while told <= index - MAX_PARALLEL:
            tell(study, *asked[told])
            told += 1
        trial = study.ask(distributions)
        tuned = {p.name: p.to_string(trial.params[p.name]) for p in parameters}
        asked.append((trial, objective(tuned)))
        if target is not None and asked[-1][1] <= target:
            break
    return [value for _, value in asked]


def tell(study: optuna.Study, trial: optuna.trial.Trial, value: float) -> None:
    """A finite loss is told as the trial's value; a diverged one as a failed trial."""
    if math.isfinite(value):
        study.tell(trial, value)
    else:
        study.tell(trial, state=TrialState.FAIL)


def best_after(values: list[float], count: int) -> float:
    finite = [v for v in values[:count] if math.isfinite(v)]
    return min(finite) if finite else math.nan


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return mean, error


def warm_started(
    seed: int, parent: list[tuple[dict[str, Any], float]], trials: int
) -> tuple[optuna.Study, list]:
    """A Bayesian study with the parent's finished trials added, as `_seed_from_parents` does."""
    study, parameters = local_sagemaker_study("Bayesian", seed, trials)
    distributions = {p.name: p.distribution for p in parameters}
    for params, value in parent:
        if math.isfinite(value):
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=distributions, value=value)
            )
    return study, parameters


def trials_to_reach(values: list[float], target: float, cap: int) -> int:
    """1-based index of the first trial at or below `target`; cap + 1 when none is."""
    for index, value in enumerate(values[:cap], start=1):
        if value <= target:
            return index
    return cap + 1


def run_strategies(size: Size, objective: DigitsObjective) -> dict[str, dict[int, Any]]:
    """Every seed's Random and Bayesian job; the Bayesian study is kept for warm starts."""
    runs: dict[str, dict[int, Any]] = {"random": {}, "bayesian": {}, "bayesian_study": {}}
    for seed in range(size.seeds):
        log(f"{NAME}: seed {seed + 1}/{size.seeds}")
        for name, strategy in (("random", "Random"), ("bayesian", "Bayesian")):
            study, parameters = local_sagemaker_study(strategy, seed, size.trials)
            runs[name][seed] = search(study, parameters, objective, size.trials)
            if strategy == "Bayesian":
                runs["bayesian_study"][seed] = study
    return runs


def warm_start(
    size: Size, objective: DigitsObjective, runs: dict[str, dict[int, Any]]
) -> dict[str, Any]:
    """Parent: seed s's Bayesian job cut at MaxJobs 6. Child: seed s+1's job, cold (its own
    run above) and warm (the parent's trials added); trials each needs to reach the parent's
    best."""
    cold, warm = [], []
    for seed in range(size.seeds):
        child_seed = (seed + 1) % size.seeds
        parent_trials = sorted(runs["bayesian_study"][seed].trials, key=lambda t: t.number)
        parent = [(t.params, runs["bayesian"][seed][t.number]) for t in parent_trials]
        parent = parent[:TEMPLATE_MAX_JOBS]
        target = best_after([value for _, value in parent], TEMPLATE_MAX_JOBS)
        cold.append(trials_to_reach(runs["bayesian"][child_seed], target, size.trials))
        study, parameters = warm_started(child_seed, parent, size.trials)
        values = search(study, parameters, objective, size.trials, target=target)
        warm.append(trials_to_reach(values, target, size.trials))
    return {"cold_trials": cold, "warm_trials": warm}


def run(settings: Settings) -> dict[str, Any]:
    """Both strategies over the same seeds, then the warm starts. BLAS is held to one thread:
    a small MLP's matrix products gain nothing from a second thread on a shared 2-core machine,
    and two threads made every training 10-20 times slower (the 30 minutes of 2026-12-02)."""
    from threadpoolctl import threadpool_limits

    size = size_for(settings.quick)
    objective = DigitsObjective()
    with threadpool_limits(limits=1):
        runs = run_strategies(size, objective)
        summary = summarize(runs, size)
        summary["warm_start"] = warm_start(size, objective, runs)
    summary["trainings"] = objective.trainings
    return result(
        NAME,
        TITLE,
        checks_for(summary, size),
        {"size": size.__dict__, **summary},
        notes_for(summary, size),
    )


def checks_for(summary: dict[str, Any], size: Size) -> list[dict[str, Any]]:
    checks = []
    for count, key in ((TEMPLATE_MAX_JOBS, "at_max_jobs"), (size.trials, "at_end")):
        difference = summary["difference"][key]
        margin = difference["mean"] + difference["standard_error"]
        goal_value = margin if count == TEMPLATE_MAX_JOBS else difference["mean"]
        label = " + 1 SE" if count == TEMPLATE_MAX_JOBS else ""
        checks += [
            at_most(f"mean best after {count}: Bayesian - random{label}", goal_value, 0.0),
            info(
                "  Bayesian / random (difference +- SE)",
                f"{summary['bayesian']['mean_' + key]:.4f} / {summary['random']['mean_' + key]:.4f}"
                f" ({difference['mean']:+.4f} +- {difference['standard_error']:.4f})",
            ),
        ]
    warm = summary["warm_start"]
    cold_mean, warm_mean = (
        statistics.fmean(warm["cold_trials"]),
        statistics.fmean(warm["warm_trials"]),
    )
    checks += [
        {
            "metric": "trials to reach the parent's best: warm - cold",
            "value": warm_mean - cold_mean,
            "goal": "< 0",
            "passed": warm_mean < cold_mean,
        },
        info("  warm / cold mean trials", f"{warm_mean:.2f} / {cold_mean:.2f}"),
    ]
    return checks


def notes_for(summary: dict[str, Any], size: Size) -> list[str]:
    return [
        f"{size.seeds} seeds x {size.trials} trials per strategy, {MAX_PARALLEL} in parallel; "
        "objective: MLP on digits, validation log loss (live trainings, one BLAS thread, no "
        f"surrogate; {summary['trainings']} distinct trainings)",
        f"Bayesian better / equal / worse than random after {TEMPLATE_MAX_JOBS} trials: "
        + " / ".join(str(n) for n in summary["difference"]["at_max_jobs"]["better_equal_worse"]),
        f"failed (diverged) trials: random {summary['random']['failed_trials']}, "
        f"Bayesian {summary['bayesian']['failed_trials']}",
    ]


def summarize(runs: dict[str, dict[int, Any]], size: Size) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in ("random", "bayesian"):
        per_seed = runs[name]
        bests = [best_after(values, size.trials) for values in per_seed.values()]
        at_max_jobs = [best_after(values, TEMPLATE_MAX_JOBS) for values in per_seed.values()]
        summary[name] = {
            "best_per_seed": bests,
            "best_at_max_jobs_per_seed": at_max_jobs,
            "mean_at_end": statistics.fmean(bests),
            "mean_at_max_jobs": statistics.fmean(at_max_jobs),
            "failed_trials": sum(not math.isfinite(v) for vs in per_seed.values() for v in vs),
        }
    summary["difference"] = {}
    for key, per_seed_key in (
        ("at_max_jobs", "best_at_max_jobs_per_seed"),
        ("at_end", "best_per_seed"),
    ):
        pairs = zip(summary["bayesian"][per_seed_key], summary["random"][per_seed_key], strict=True)
        differences = [b - r for b, r in pairs]
        mean, error = mean_and_error(differences)
        summary["difference"][key] = {
            "mean": mean,
            "standard_error": error,
            "better_equal_worse": [
                sum(d < 0 for d in differences),
                sum(d == 0 for d in differences),
                sum(d > 0 for d in differences),
            ],
        }
    return summary
