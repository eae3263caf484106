"""The sampler of a local tuning job's Bayesian strategy.

SageMaker's Bayesian strategy models the objective with a Gaussian process from the first
trials on. Here it is optuna's GPSampler, modelling from the first known result
(`BAYESIAN_STARTUP_TRIALS`), with the trials still running taken into account (optuna's
qLogEI: a pending trial counts as an uncertain result, so two parallel trials are not asked
for the same point), and its acquisition maximised inside a trust region around the best
trial so far (`TrustRegionGPSampler`). Every SageMaker range kind maps onto its search space:
categorical, integer and continuous, linear or log (tuning_space.py turns
ReverseLogarithmic and Auto into these).

Measured in bench/tuning.py (docs/performance.md, section 5), over the same seeds with live
trainings:
- optuna's default TPE draws its first 10 trials at random, with the Random strategy's own
  seeded generator: a 6-trial job (the template's MaxJobs) was random search, trial for trial;
- TPE with 2 start-up trials (multivariate, group) was ahead at 20 trials but not at 6: with
  one or two results its Parzen windows span most of the range, so it samples almost at
  random;
- the plain GPSampler was far behind at 6 trials: with a handful of results expected
  improvement is largest where nothing is known, and on a bounded range that is a corner
  (learning rate 1e-4 or 1, the worst values), a known weakness of GP search on few points.
  The trust region keeps the modelled trials near what has worked; the categorical
  parameters stay free. With it the GP is ahead of Random and of that TPE at 20 trials and
  with a warm start, but not better than Random at 6 trials (within about one standard error
  of it: with 2 trials in parallel only 4 of 6 trials are modelled, from 1 to 4 results).

GPSampler learns from completed trials only, so a trial stopped by early stopping is told to a
Bayesian study as complete with its last objective value (tuning.tell_study): it teaches the
model that its region is poor, as TPE learned from pruned trials.

Random, Grid and Hyperband keep their plain optuna samplers (tuning.py). The sampler is seeded
with the job's RandomSeed, so the same seed gives the same suggestions
(tests/local_sagemaker/test_tuning_samplers.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna

# Trials drawn at random before the GP models the objective. One: with
# MaxParallelTrainingJobs=2 the first two trials are asked before any result exists anyway,
# and the third (one result known, one trial pending) is the first one a model can choose.
BAYESIAN_STARTUP_TRIALS = 1
# Side of the trust region, as a share of each numeric parameter's range (on its own scale:
# log for log-scaled ranges): half of a learning rate range of four decades is two decades.
TRUST_REGION_SIDE = 0.5
# Candidates scored by the acquisition function inside the trust region.
TRUST_REGION_CANDIDATES = 2048


class TrustRegionGPSampler(optuna.samplers.GPSampler):
    """GPSampler whose acquisition function is maximised near the best result so far.

    optuna documents `_optimize_acqf` as the method to override to change how the
    acquisition function is optimised (optuna is pinned: requirements/dev.txt). Candidates
    are drawn over the whole space, then each numeric coordinate is pulled into a box of
    side `TRUST_REGION_SIDE` centred on the best trial (normalised coordinates in [0, 1]);
    categorical coordinates are left as drawn, so the model still chooses among all values.
    """

    def _optimize_acqf(self, acqf: object, best_params: np.ndarray | None) -> np.ndarray:
        if best_params is None:  # no feasible result: nothing to centre on
            return super()._optimize_acqf(acqf, best_params)  # type: ignore[arg-type]
        space = acqf.search_space  # type: ignore[attr-defined]
        candidates = space.sample_normalized_params(TRUST_REGION_CANDIDATES, self._rng.rng)
        numeric = ~space.is_categorical
        centre = best_params[0, numeric]
        offsets = (candidates[:, numeric] - 0.5) * TRUST_REGION_SIDE
        candidates[:, numeric] = np.clip(centre + offsets, 0.0, 1.0)
        scores = acqf.eval_acqf_no_grad(candidates)  # type: ignore[attr-defined]
        return candidates[int(np.argmax(scores))]


def bayesian_sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    """The GP sampler of the Bayesian strategy, seeded with the job's RandomSeed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return TrustRegionGPSampler(
            seed=seed,
            n_startup_trials=BAYESIAN_STARTUP_TRIALS,
            warn_independent_sampling=False,
        )
