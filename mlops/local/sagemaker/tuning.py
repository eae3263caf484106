"""Hyperparameter tuning jobs: a real optuna search whose trials are real training jobs.

Strategies map onto optuna samplers (Bayesian -> samplers.py; Random -> random; Grid -> grid
over the categorical values; Hyperband -> random with a Hyperband pruner). The study is driven
with ask/tell from one thread per tuning job: it asks for a configuration whenever fewer than
MaxParallelTrainingJobs trials are running, starts it as a training job (which still waits for
a slot of the service-wide training queue), and tells the study the trial's final objective
when the job ends. With TrainingJobEarlyStoppingType=Auto a MedianPruner sees every objective
value the trial prints and stops a trial that is worse than the median of earlier trials at
the same step; such a trial ends Stopped with its last objective value, as on AWS.

The search space is tuning_space.py; the request's checks and settings are tuning_request.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.samplers import bayesian_sampler
from mlops.local.sagemaker.training_job import TrainingJob, now
from mlops.local.sagemaker.tuning_request import TuningSettings, validate_tuning_request

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

TERMINAL_TUNING_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
DEFAULT_RESOURCE_CONFIG = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1}
# TrainingJobDefinition members a trial's CreateTrainingJob request inherits unchanged.
INHERITED_MEMBERS = (
    "RoleArn",
    "InputDataConfig",
    "VpcConfig",
    "OutputDataConfig",
    "StoppingCondition",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
)

TrialLauncher = Callable[[dict[str, Any], str, dict[str, str]], TrainingJob]
ParentLookup = Callable[[str], "TuningJob | None"]  # warm-start parents by name


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler without its end-of-grid ``study.stop()``, which only works inside
    ``study.optimize``; the tuning job stops after the grid's size in trials by itself."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def create_study(settings: TuningSettings, config: SageMakerConfig, name: str) -> optuna.Study:
    """The optuna study of a tuning job: the strategy's sampler (seeded with RandomSeed) and the
    pruner of its early stopping. Public so that bench/tuning.py judges the very study a job
    searches with."""
    seed = settings.seed
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if settings.strategy == "Bayesian":
        sampler: optuna.samplers.BaseSampler = bayesian_sampler(seed)
    elif settings.strategy == "Grid":
        space = {p.name: list(p.distribution.choices) for p in settings.parameters}  # type: ignore[attr-defined]
        sampler = AskTellGridSampler(space, seed=seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    if settings.strategy == "Hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1)
    elif settings.early_stopping:
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=config.early_stopping_startup_trials,
            n_warmup_steps=config.early_stopping_warmup_steps,
        )
    return optuna.create_study(
        study_name=name, direction=settings.direction, sampler=sampler, pruner=pruner
    )


def tell_study(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    strategy: str,
    job_status: str,
    value: float | None,
) -> None:
    """Tell the study how a trial's training job ended.

    A job stopped by early stopping keeps its last objective value, and SageMaker counts it
    (ObjectiveStatus Succeeded). The Bayesian strategy's GPSampler models complete trials only,
    so there such a job is told as complete with that value: the model learns that the region
    is poor instead of never hearing of it. The other strategies tell it as pruned, which keeps
    it out of the MedianPruner's median. A failed job, or one without a value, is a failure."""
    if value is None or job_status not in ("Completed", "Stopped"):
        study.tell(trial, state=TrialState.FAIL)
    elif job_status == "Stopped" and strategy != "Bayesian":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, value)


# --- trials and the tuning job ----------------------------------------------------------------


@dataclass
class Trial:
    index: int
    job: TrainingJob
    optuna_trial: optuna.trial.Trial
    tuned: dict[str, str]
    pruned: bool = False
    told: bool = False  # the tuning job has taken the trial's result
    in_study: bool = False  # the result was told to the optuna study
    objective: float | None = None

    def objective_status(self) -> str:
        """Pending until the tuning job has taken the trial's result (not merely its end)."""
        if not self.told:
            return "Pending"
        return "Succeeded" if self.objective is not None else "Failed"


class TuningJob:
    """State of one tuning job (DescribeHyperParameterTuningJob) and the search that fills it."""

    def __init__(
        self,
        request: dict[str, Any],
        arn: str,
        config: SageMakerConfig,
        launch_trial: TrialLauncher,
        find_parent: ParentLookup,
    ) -> None:
        self.request = request
        self.name: str = request["HyperParameterTuningJobName"]
        self.arn = arn
        self.config = config
        self._launch_trial = launch_trial
        self.settings = validate_tuning_request(request, find_parent)
        self.parents = self._parents(find_parent)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.status = "InProgress"
        self.creation_time = now()
        self.last_modified_time = self.creation_time
        self.end_time: dt.datetime | None = None
        self.failure_reason: str | None = None
        self.trials: list[Trial] = []
        self.stop_event = threading.Event()
        self.warm_start_trials = 0
        self._thread = threading.Thread(target=self._run, name=f"tuning-{self.name}", daemon=True)

    def _parents(self, find_parent: ParentLookup) -> list[TuningJob]:
        warm = self.request.get("WarmStartConfig") or {}
        names = [
            p["HyperParameterTuningJobName"] for p in warm.get("ParentHyperParameterTuningJobs", [])
        ]
        return [job for job in (find_parent(n) for n in names) if job is not None]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """StopHyperParameterTuningJob: no new trials; running trials are stopped."""
        with self.lock:
            if self.status in TERMINAL_TUNING_STATUSES or self.stop_event.is_set():
                return
            self.stop_event.set()
            self.status = "Stopping"
            self.last_modified_time = now()
            running = [t.job for t in self.trials if not t.job.is_terminal]
            self.changed.notify_all()
        for job in running:
            job.request_stop("Stopped", "Training job stopped because its tuning job was stopped")

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the search ---------------------------------------------------------------------------

    def _run(self) -> None:
        started = time.monotonic()
        try:
            study = self._create_study()
            self._seed_from_parents(study)
            self._launch_trials(study, started)
            self._wait_for_trials(study)
            self._finish()
        except Exception as error:
            logger.exception("tuning job %s broke inside the local SageMaker", self.name)
            self._end("Failed", f"InternalServerError: {type(error).__name__}: {error}")

    def _create_study(self) -> optuna.Study:
        return create_study(self.settings, self.config, self.name)

    def _seed_from_parents(self, study: optuna.Study) -> None:
        """Warm start: the parents' finished trials become known points of the study."""
        distributions = {p.name: p.distribution for p in self.settings.parameters}
        for parent in self.parents:
            for summary in parent.trial_summaries():
                metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
                if summary.get("ObjectiveStatus") != "Succeeded" or not metric:
                    continue
                try:
                    params = {
                        p.name: p.from_string(summary["TunedHyperParameters"][p.name])
                        for p in self.settings.parameters
                    }
                except (KeyError, ValueError) as error:
                    logger.info("warm start: skipping %s (%s)", summary["TrainingJobName"], error)
                    continue
                study.add_trial(
                    optuna.trial.create_trial(
                        params=params, distributions=distributions, value=metric["Value"]
                    )
                )
                self.warm_start_trials += 1
        if self.parents:
            logger.info(
                "tuning job %s: warm start from %d trials", self.name, self.warm_start_trials
            )

    def _launch_trials(self, study: optuna.Study, started: float) -> None:
        settings = self.settings
        distributions = {p.name: p.distribution for p in settings.parameters}
        for index in itertools.count(1):
            with self.lock:
                while not self._may_ask(index) and not self.stop_event.is_set():
                    self.changed.wait(1.0)
                    if self._runtime_exceeded(started):
                        self.stop()
                if self.stop_event.is_set() or index > settings.max_jobs:
                    return
                self._tell_in_order(study, up_to=index - settings.max_parallel)
            if self._runtime_exceeded(started):
                self.stop()
                return
            optuna_trial = study.ask(distributions)
            tuned = {p.name: p.to_string(optuna_trial.params[p.name]) for p in settings.parameters}
            self._start_trial(study, index, optuna_trial, tuned)

    def _runtime_exceeded(self, started: float) -> bool:
        limit = self.settings.max_runtime_s
        return limit is not None and time.monotonic() - started > limit

    def _start_trial(
        self,
        study: optuna.Study,
        index: int,
        optuna_trial: optuna.trial.Trial,
        tuned: dict[str, str],
    ) -> None:
        name = f"{self.name}-{index:03d}-{secrets.token_hex(4)}"
        request = self._trial_request(name, tuned)
        job = self._launch_trial(request, self.arn, tuned)
        trial = Trial(index, job, optuna_trial, tuned)
        with self.lock:
            self.trials.append(trial)
            self.last_modified_time = now()
        job.metrics.add_listener(
            lambda metric, value, step: self._on_metric(trial, metric, value, step)
        )
        job.add_done_callback(lambda _job: self._on_trial_done(study, trial))
        logger.info("tuning job %s started trial %s with %s", self.name, name, tuned)

    def _trial_request(self, name: str, tuned: dict[str, str]) -> dict[str, Any]:
        definition = self.request["TrainingJobDefinition"]
        algorithm = dict(definition["AlgorithmSpecification"])
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "HyperParameters": {**definition.get("StaticHyperParameters", {}), **tuned},
            "AlgorithmSpecification": algorithm,
            "ResourceConfig": definition.get("ResourceConfig") or dict(DEFAULT_RESOURCE_CONFIG),
        }
        for member in INHERITED_MEMBERS:
            if member in definition:
                request[member] = definition[member]
        return request

    def _on_metric(self, trial: Trial, metric: str, value: float, step: int) -> None:
        """Early stopping: report the objective as it is printed; prune when optuna says so."""
        if metric != self.settings.objective_name or trial.job.is_terminal:
            return
        step -= 1  # optuna counts steps from 0: warm-up steps then mean "the first N values"
        trial.optuna_trial.report(value, step)
        if trial.pruned or not trial.optuna_trial.should_prune():
            return
        trial.pruned = True
        logger.info("tuning job %s: early stopping %s at step %d", self.name, trial.job.name, step)
        trial.job.request_stop(
            "Stopped",
            f"Training job stopped by the tuning job's early stopping: {metric}={value:g} at "
            f"step {step} was worse than the median of earlier training jobs",
        )

    def _on_trial_done(self, study: optuna.Study, trial: Trial) -> None:
        job = trial.job
        value = job.metrics.last_value(self.settings.objective_name)
        with self.lock:
            trial.objective = value
            trial.told = True
            self.last_modified_time = now()
            self.changed.notify_all()

    def _may_ask(self, index: int) -> bool:
        """Trial `index` is asked for once trial `index - max_parallel` (and every earlier one)
        has ended: then at most max_parallel - 1 trials run, and the study has seen exactly the
        trials before it. Waiting for that one trial, not for any free slot, makes the sampler's
        suggestions depend on the seed only, not on which parallel trial happened to end first."""
        limit = index - self.settings.max_parallel
        return all(t.told for t in self.trials if t.index <= limit)

    def _tell_in_order(self, study: optuna.Study, up_to: int) -> None:
        """Tell the study the results of trials 1..up_to, in index order (never out of turn)."""
        for trial in sorted(self.trials, key=lambda t: t.index):
            if trial.index > up_to:
                break
            if trial.told and not trial.in_study:
                trial.in_study = True
                tell_study(
                    study,
                    trial.optuna_trial,
                    self.settings.strategy,
                    trial.job.status,
                    trial.objective,
                )

    def _wait_for_trials(self, study: optuna.Study) -> None:
        with self.lock:
            while any(not t.told for t in self.trials):
                self.changed.wait(1.0)
            self._tell_in_order(study, up_to=len(self.trials))

    def _finish(self) -> None:
        with self.lock:
            if self.stop_event.is_set():
                self._end("Stopped")
            elif self.trials and all(t.objective_status() == "Failed" for t in self.trials):
                first = self.trials[0].job
                self._end(
                    "Failed",
                    f"All {len(self.trials)} training jobs failed. First failure, "
                    f"{first.name}: {first.failure_reason or 'no objective metric reported'}",
                )
            else:
                self._end("Completed")

    def _end(self, status: str, reason: str | None = None) -> None:
        with self.lock:
            self.status = status
            self.failure_reason = reason[:1024] if reason else None
            self.end_time = self.last_modified_time = now()
            self.changed.notify_all()
        logger.info("tuning job %s ended %s", self.name, status)

    # --- answers ------------------------------------------------------------------------------

    def trial_summaries(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._trial_summary(t) for t in self.trials]

    def _trial_summary(self, trial: Trial) -> dict[str, Any]:
        job = trial.job
        with job.lock:
            summary: dict[str, Any] = {
                "TrainingJobName": job.name,
                "TrainingJobArn": job.arn,
                "TuningJobName": self.name,
                "CreationTime": job.creation_time,
                "TrainingStartTime": job.training_start_time,
                "TrainingEndTime": job.training_end_time,
                "TrainingJobStatus": job.status,
                "TunedHyperParameters": dict(trial.tuned),
                "FailureReason": job.failure_reason,
                "ObjectiveStatus": trial.objective_status(),
            }
        value = trial.objective if trial.told else None
        if value is not None:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "MetricName": self.settings.objective_name,
                "Value": value,
            }
        return {k: v for k, v in summary.items() if v is not None}

    def best_trial_summary(self) -> dict[str, Any] | None:
        """Best objective among finished trials; completed ones win over early-stopped ones."""
        candidates = [s for s in self.trial_summaries() if s["ObjectiveStatus"] == "Succeeded"]
        if not candidates:
            return None
        sign = 1 if self.settings.direction == "minimize" else -1

        def rank(summary: dict[str, Any]) -> tuple[int, float]:
            value = summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
            return (0 if summary["TrainingJobStatus"] == "Completed" else 1, sign * value)

        return min(candidates, key=rank)

    def counters(self) -> tuple[dict[str, int], dict[str, int]]:
        statuses = [t.job.status for t in self.trials]
        objectives = [t.objective_status() for t in self.trials]
        training = {
            "Completed": statuses.count("Completed"),
            "InProgress": statuses.count("InProgress") + statuses.count("Stopping"),
            "RetryableError": 0,
            "NonRetryableError": statuses.count("Failed"),
            "Stopped": statuses.count("Stopped"),
        }
        objective = {
            "Succeeded": objectives.count("Succeeded"),
            "Pending": objectives.count("Pending"),
            "Failed": objectives.count("Failed"),
        }
        return training, objective

    def describe(self) -> dict[str, Any]:
        with self.lock:
            training, objective = self.counters()
            response: dict[str, Any] = {
                "HyperParameterTuningJobName": self.name,
                "HyperParameterTuningJobArn": self.arn,
                "HyperParameterTuningJobConfig": self.request["HyperParameterTuningJobConfig"],
                "TrainingJobDefinition": self.request.get("TrainingJobDefinition"),
                "HyperParameterTuningJobStatus": self.status,
                "CreationTime": self.creation_time,
                "HyperParameterTuningEndTime": self.end_time,
                "LastModifiedTime": self.last_modified_time,
                "TrainingJobStatusCounters": training,
                "ObjectiveStatusCounters": objective,
                "BestTrainingJob": self.best_trial_summary(),
                "WarmStartConfig": self.request.get("WarmStartConfig"),
                "FailureReason": self.failure_reason,
                "ConsumedResources": {"RuntimeInSeconds": self._runtime_seconds()},
            }
            best = response["BestTrainingJob"]
            if best is not None:
                response["OverallBestTrainingJob"] = best
            return {k: v for k, v in response.items() if v is not None}

    def _runtime_seconds(self) -> int:
        end = self.end_time or now()
        return int((end - self.creation_time).total_seconds())

    def summary(self) -> dict[str, Any]:
        with self.lock:
            training, objective = self.counters()
            config = self.request["HyperParameterTuningJobConfig"]
            response = {
                "HyperParameterTuningJobName": self.name,
                "HyperParameterTuningJobArn": self.arn,
                "HyperParameterTuningJobStatus": self.status,
                "Strategy": config["Strategy"],
                "CreationTime": self.creation_time,
                "HyperParameterTuningEndTime": self.end_time,
                "LastModifiedTime": self.last_modified_time,
                "TrainingJobStatusCounters": training,
                "ObjectiveStatusCounters": objective,
                "ResourceLimits": config["ResourceLimits"],
            }
            return {k: v for k, v in response.items() if v is not None}
