"""The sampler of a local tuning job's Bayesian strategy.

SageMaker's Bayesian strategy models the objective from the first trials on. optuna's TPE
defaults to ten random start-up trials, so with the template's MaxJobs of 6 a "Bayesian" job
was random search, trial for trial. Here Bayesian is TPE with a short random start-up
(`BAYESIAN_STARTUP_TRIALS`) and one joint model of all parameters (`multivariate`, `group`).
Measured in bench/tuning.py over 20 seeds (docs/performance.md): clearly ahead of Random at
20 trials and with a warm start, but not yet better than Random at 6 trials. optuna's
GPSampler is the next candidate (about 2.5 s of CPU per suggestion on the shared machine).

Random, Grid and Hyperband keep their plain optuna samplers (tuning.py). The sampler is seeded
with the job's RandomSeed, so the same seed gives the same suggestions
(tests/local/test_tuning.py).
"""

from __future__ import annotations

import warnings

import optuna

# Random trials before TPE models the objective. Two: with MaxParallelTrainingJobs=2 the first
# two trials are asked before any result is known, so they are random whatever this says.
BAYESIAN_STARTUP_TRIALS = 2


def bayesian_sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE that learns after `BAYESIAN_STARTUP_TRIALS` trials, all parameters modelled jointly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=BAYESIAN_STARTUP_TRIALS, multivariate=True, group=True
        )
