"""The debugging rules, as smdebug Rule subclasses, without SageMaker Debugger.

AWS closed Debugger to new customers and never published the built-in rule implementations
(only their parameter configs in smdebug_rulesconfig). These classes follow the documented
semantics and defaults of the built-in rules of the same names, over a trial that the smdebug
hook wrote (`create_trial(path)`), driven by smdebug's own `invoke_rule`:

  Overfit                  (mean valid loss - mean train loss) / mean train loss > ratio_threshold
                           for `patience` validation passes in a row (from `start_step` on),
                           counted once the train loss has learned (half its first pass) and
                           when the gap is also larger than LOSS_FLOOR.
  Overtraining             the train loss has not improved by more than `delta` for
                           `patience_train` passes, or the valid loss for `patience_validation`.
  PoorWeightInitialization in the first `steps` training steps: the largest/smallest variance of
                           the activation inputs (`activation_inputs_regex`) > `threshold`, or the
                           5th-95th percentile spread of the gradients < `distribution_range`, or
                           the loss made no new minimum for `patience` steps and did not fall
                           on average.
  VanishingGradient        the mean |gradient| of a layer < `threshold`, at a step whose training
                           loss has not converged (>= LOSS_FLOOR).
  LossNotDecreasing        the mean of each window of `num_steps` saved losses of one mode must be
                           `diff_percent` % below the previous window's, unless the loss has
                           converged (below LOSS_FLOOR, or learned and flat within noise); a
                           window above the first saved loss (diverged) and any NaN or infinite
                           loss are issues. Mode: EVAL, else TRAIN, else GLOBAL, the first with
                           enough saved losses for two windows.

A "pass" is one contiguous run of saved steps of one mode (a TRAIN epoch, or a validation pass),
its loss the mean of the batch losses saved in it: single batch losses are too noisy to compare
with AWS's small default patiences. docs/rules.md has each rule's exact semantics, where they
differ from AWS's wording and why, and the benchmark (bench/rules.py) that measures the gate's
false blocks and detections. Results use SageMaker's status words:
NoIssuesFound, IssuesFound (with the step and a reason), Error (with a reason).

Each class's DEFAULTS are AWS's documented defaults. Two are not spelled out the same way
everywhere: Overtraining.delta is 0.01 (the current pages; an older one said 0.1), and
LossNotDecreasing.diff_percent is 0.1 (the page only says "checks that the loss decreases";
pass 0 for exactly that).

    python -m training.rules <trial dir> --json [--rules Overfit,VanishingGradient]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# smdebug logs every rule invocation at INFO on stdout, around the JSON that callers parse.
# Set before smdebug is first imported (its logger reads this once); override from outside.
os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")

import numpy as np
from smdebug.core.modes import ModeKeys
from smdebug.exceptions import RuleEvaluationConditionMet
from smdebug.rules.rule import Rule
from smdebug.rules.rule_invoker import invoke_rule
from smdebug.trials import create_trial

NO_ISSUES = "NoIssuesFound"
ISSUES = "IssuesFound"
ERROR = "Error"
LOSSES = "losses"
GRADIENTS = "gradients"
END_OF_JOB_FILE = "training_job_end.ts"  # written by the hook when it closes
# Cross-entropy below this is a converged model (about 95% confidence in the right class):
# differences between such losses, or gradients that small, are not evidence of a fault.
LOSS_FLOOR = 0.05


class RuleDataError(Exception):
    """The trial lacks the tensors a rule needs: the rule's status is Error, with this reason."""


@dataclass
class Pass:
    """Consecutive saved steps of one mode: an epoch of training or one validation pass."""

    mode: ModeKeys
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        return self.steps[-1]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


class _ProjectRule(Rule):
    """Shared plumbing: typed parameters with AWS defaults, firing with a reason, data checks."""

    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, base_trial: Any, **parameters: Any) -> None:
        super().__init__(base_trial, action_str="")
        for name, value in _coerce_parameters(type(self).__name__, self.DEFAULTS, parameters):
            setattr(self, name, value)
        self.reason = ""
        self.evaluations = 0

    def fire(self, step: int, reason: str) -> bool:
        """Record why the condition is met; invoke() then raises RuleEvaluationConditionMet."""
        self.reason = f"step {step}: {reason}"
        return True

    def check_data(self) -> None:
        """Raise RuleDataError when the trial cannot answer this rule at all."""

    def summary(self) -> str:
        """StatusDetails for a NoIssuesFound result."""
        return f"{self.evaluations} checks, condition never met"


# ---------------------------------------------------------------------------------------------
# Loss-based rules
# ---------------------------------------------------------------------------------------------


class _LossRule(_ProjectRule):
    """Rules that read scalar losses: the `losses` collection, narrowed by `tensor_regex`."""

    def loss_names(self) -> list[str]:
        """The loss tensors this rule compares, looked up once (rules run on finished trials)."""
        if not hasattr(self, "_loss_names"):
            self._loss_names = self._find_loss_names()
        return self._loss_names

    def _find_loss_names(self) -> list[str]:
        regexes = _split_list(getattr(self, "tensor_regex", None))
        names: set[str] = set()
        for collection in _split_list(getattr(self, "collection_names", None)):
            names.update(_collection_tensors(self.base_trial, collection))
        for regex in regexes:
            names.update(self.base_trial.tensor_names(regex=regex))
        # LossNotDecreasing adds the losses collection to what was named (use_losses_collection);
        # for Overfit and Overtraining a tensor_regex restricts the comparison instead.
        if getattr(self, "use_losses_collection", not regexes):
            names.update(_collection_tensors(self.base_trial, LOSSES))
        if not names:
            raise RuleDataError(
                "no loss tensors were saved (collection 'losses'"
                + (f" or regex {', '.join(regexes)}" if regexes else "")
                + "); save the losses collection with the debug hook"
            )
        return sorted(names)

    def passes(self) -> dict[str, list[Pass]]:
        """Loss passes per tensor, read once: rules run on a finished trial."""
        if not hasattr(self, "_passes"):
            self._passes = {name: _loss_passes(self.base_trial, name) for name in self.loss_names()}
        return self._passes

    def check_data(self) -> None:
        self.loss_names()


class Overfit(_LossRule):
    """The validation loss is much larger than the training loss (AWS Overfit rule)."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "tensor_regex": None,
        "start_step": 0,
        "patience": 1,
        "ratio_threshold": 0.1,
    }

    def __init__(self, base_trial: Any, **parameters: Any) -> None:
        super().__init__(base_trial, **parameters)
        self.exceeded = 0
        self.warming_up = 0

    def check_data(self) -> None:
        modes = {p.mode for passes in self.passes().values() for p in passes}
        missing = [m.name for m in (ModeKeys.TRAIN, ModeKeys.EVAL) if m not in modes]
        if missing:
            raise RuleDataError(
                f"no {' or '.join(missing)} losses were saved; Overfit compares both modes"
            )

    def invoke_at_step(self, step: int) -> bool:
        if step < self.start_step:
            return False
        for name, passes in self.passes().items():
            i = _pass_ending_at(passes, step, ModeKeys.EVAL)
            train = _previous_pass(passes, i, ModeKeys.TRAIN)
            if i is None or train is None or train.mean <= 0:
                continue
            valid = passes[i].mean
            ratio = (valid - train.mean) / train.mean
            first = next(p for p in passes if p.mode == ModeKeys.TRAIN)
            if train.mean > LossNotDecreasing.LEARNED_FRACTION * first.mean:
                self.warming_up += 1  # nothing learned yet: a gap now is warm-up (BatchNorm)
                continue
            self.evaluations += 1
            # A converged model's losses are tiny: 0.02 vs 0.001 is a ratio of 19 but no gap.
            gap = valid - train.mean > LOSS_FLOOR
            self.exceeded = self.exceeded + 1 if ratio > self.ratio_threshold and gap else 0
            if self.exceeded >= self.patience:
                return self.fire(
                    step,
                    f"{name}: mean valid loss {valid:.4f} is {ratio:.1%} above mean train loss "
                    f"{train.mean:.4f} (ratio_threshold {self.ratio_threshold}, gap > "
                    f"{LOSS_FLOOR}) for "
                    f"{self.exceeded} validation pass(es)",
                )
        return False

    def summary(self) -> str:
        text = f"compared {self.evaluations} validation passes with the training loss"
        if self.warming_up:
            text += f" ({self.warming_up} before the training loss had halved not counted)"
        return text


@dataclass
class _Plateau:
    """Counts passes since the loss last improved on its best by more than `delta`."""

    patience: int
    delta: float
    best: float = math.inf
    best_step: int = -1
    waited: int = 0

    def update(self, value: float, step: int) -> bool:
        """Return True when the loss has not improved for `patience` passes."""
        if value < self.best - self.delta:
            self.best, self.best_step, self.waited = value, step, 0
        else:
            self.waited += 1
        return self.waited >= self.patience


class Overtraining(_LossRule):
    """Training went on after the losses stopped improving (AWS Overtraining rule)."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "tensor_regex": None,
        "patience_train": 5,
        "patience_validation": 10,
        "delta": 0.01,
    }

    def __init__(self, base_trial: Any, **parameters: Any) -> None:
        super().__init__(base_trial, **parameters)
        self.plateaus: dict[tuple[str, ModeKeys], _Plateau] = {}

    def invoke_at_step(self, step: int) -> bool:
        for name, passes in self.passes().items():
            for mode, patience, label in (
                (ModeKeys.TRAIN, self.patience_train, "training"),
                (ModeKeys.EVAL, self.patience_validation, "validation"),
            ):
                i = _pass_ending_at(passes, step, mode)
                if i is None:
                    continue
                plateau = self.plateaus.setdefault((name, mode), _Plateau(patience, self.delta))
                self.evaluations += 1
                if plateau.update(passes[i].mean, step):
                    return self.fire(
                        step,
                        f"{name}: {label} loss has not improved by more than {self.delta} for "
                        f"{plateau.waited} passes (best {plateau.best:.4f} at step "
                        f"{plateau.best_step}, now {passes[i].mean:.4f})",
                    )
        return False

    def summary(self) -> str:
        return f"followed {self.evaluations} training and validation passes"


class LossNotDecreasing(_LossRule):
    """The loss is not making progress (AWS LossNotDecreasing), judged on window means.

    A window is `num_steps` consecutive saved losses of one mode; each window's mean must be
    `diff_percent` % below the previous window's mean. A window that did not drop is excused
    when the loss has converged: its mean is below LOSS_FLOOR, or the run has learned (the mean
    is at most LEARNED_FRACTION of the mean of its first `num_steps` saved losses) and the rise
    is within noise. A window whose mean is above the first saved loss (diverged), and a loss
    that is NaN or infinite at any saved step, in any mode, are always issues.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "collection_names": None,
        "tensor_regex": None,
        "use_losses_collection": True,
        "num_steps": 10,
        "diff_percent": 0.1,
        "mode": None,
    }
    # A window mean below this is a converged model: "not decreasing" there is noise.
    LOSS_FLOOR: ClassVar[float] = LOSS_FLOOR
    # A run whose window mean is at most this fraction of its first window's has learned.
    LEARNED_FRACTION: ClassVar[float] = 0.5
    # Standard errors of the difference of two window means that count as noise.
    NOISE_Z: ClassVar[float] = 2.0
    # Fewer saved losses than 2 x num_steps: the two halves are compared, if each has this many.
    MIN_WINDOW: ClassVar[int] = 3

    def __init__(self, base_trial: Any, **parameters: Any) -> None:
        super().__init__(base_trial, **parameters)
        if self.num_steps < 1:
            raise ValueError("num_steps must be at least 1")
        if not 0.0 <= self.diff_percent < 100.0:
            raise ValueError("diff_percent must be in [0, 100)")
        self._mode: ModeKeys | None = None
        self._findings: dict[int, str] | None = None
        self.window = 0

    def _series(self, name: str, mode: ModeKeys) -> tuple[list[int], list[float]]:
        """(mode steps, mean loss values) of one tensor in one mode."""
        tensor = self.base_trial.tensor(name)
        steps = tensor.steps(mode=mode)
        return steps, [float(np.mean(tensor.value(s, mode=mode))) for s in steps]

    def selected_mode(self) -> ModeKeys:
        """The mode asked for; else the first of EVAL, TRAIN, GLOBAL with enough saved losses
        for two windows; else the first of them with any losses (AWS: EVAL, then TRAIN)."""
        if self._mode is None:
            if self.mode is not None:
                self._mode = _mode_named(self.mode)
            else:
                order = (ModeKeys.EVAL, ModeKeys.TRAIN, ModeKeys.GLOBAL)
                counts = {
                    m: max(len(self._series(n, m)[0]) for n in self.loss_names()) for m in order
                }
                enough = [m for m in order if window_size(counts[m], self.num_steps)]
                present = [m for m in order if counts[m]]
                self._mode = (enough or present or [ModeKeys.GLOBAL])[0]
        return self._mode

    def check_data(self) -> None:
        names = self.loss_names()
        mode = self.selected_mode()
        if not any(self._series(n, mode)[0] for n in names):
            raise RuleDataError(f"no losses were saved in mode {mode.name}")

    def findings(self) -> dict[int, str]:
        """Global step -> reason, for every step where the condition is met (computed once)."""
        if self._findings is None:
            self._findings = {}
            for name in self.loss_names():
                for step, reason in self._non_finite(name) + self._stalls(name):
                    self._findings.setdefault(step, reason)
        return self._findings

    def _non_finite(self, name: str) -> list[tuple[int, str]]:
        """NaN or infinite losses in any mode: training has broken, whatever the windows say."""
        found = []
        tensor = self.base_trial.tensor(name)
        for step in tensor.steps():
            value = float(np.mean(tensor.value(step)))
            if not math.isfinite(value):
                mode, mode_step = self.base_trial.mode_modestep(step)
                found.append((step, f"{name} is {value} at {mode.name} step {mode_step}"))
                break
        return found

    def _stalls(self, name: str) -> list[tuple[int, str]]:
        mode = self.selected_mode()
        steps, values = self._series(name, mode)
        self.window = window_size(len(steps), self.num_steps)
        if not self.window:
            return []
        windows = loss_windows(steps, values, self.window)
        reference = float(np.mean(values[: self.window]))  # the first saved losses
        found = []
        for before, now in itertools.pairwise(windows):
            self.evaluations += 1
            reason = self._diverged(name, mode, now, values[0]) or self._judge(
                name, mode, before, now, reference
            )
            if reason:
                step = self.base_trial.global_step(mode, now.steps[-1])
                found.append((step, reason))
        return found

    def _diverged(self, name: str, mode: ModeKeys, now: Window, start: float) -> str:
        """A window whose mean is above the first saved loss: whatever happened between two
        windows, the run is worse than where it began (an early blow-up can make the next
        window look like a decrease)."""
        if not math.isfinite(now.mean) or now.mean < self.LOSS_FLOOR:
            return ""
        if now.mean <= start + self.NOISE_Z * now.sem:
            return ""
        return (
            f"{name}: mean {now.mean:.4f} over {mode.name} steps {now.steps[0]}-"
            f"{now.steps[-1]} is above the first saved loss {start:.4f}: the loss diverged"
        )

    def _judge(
        self, name: str, mode: ModeKeys, before: Window, now: Window, reference: float
    ) -> str:
        """Why `now` counts as not decreasing after `before` ("" when it does not)."""
        if not (math.isfinite(before.mean) and math.isfinite(now.mean)):
            return ""  # reported by _non_finite
        required = before.mean - abs(before.mean) * self.diff_percent / 100.0
        if now.mean <= required if self.diff_percent > 0 else now.mean < before.mean:
            return ""
        if now.mean < self.LOSS_FLOOR:
            return ""  # converged
        noise = self.NOISE_Z * math.hypot(before.sem, now.sem)
        if now.mean <= self.LEARNED_FRACTION * reference and now.mean - before.mean <= noise:
            return ""  # learned, and flat within noise
        return (
            f"{name}: mean {now.mean:.4f} over {mode.name} steps {now.steps[0]}-{now.steps[-1]} "
            f"did not decrease by {self.diff_percent}% from mean {before.mean:.4f} over steps "
            f"{before.steps[0]}-{before.steps[-1]} ({len(now.steps)} saved losses per window; "
            f"first window {reference:.4f}, noise +/-{noise:.4f})"
        )

    def invoke_at_step(self, step: int) -> bool:
        reason = self.findings().get(step)
        if reason:
            return self.fire(step, reason)
        return False

    def summary(self) -> str:
        mode = self._mode.name if self._mode else "?"
        if self.evaluations == 0:
            return (
                f"not evaluated: fewer than {2 * self.MIN_WINDOW} {mode} losses were saved "
                "(two windows are needed); no NaN or infinite loss"
            )
        return (
            f"{self.evaluations} comparisons of {mode} loss window means "
            f"({self.window} saved losses per window); no NaN or infinite loss"
        )


@dataclass
class Window:
    """Consecutive saved losses of one mode, compared by their mean."""

    steps: list[int]
    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def sem(self) -> float:
        """Standard error of the mean (0 for a single value: no noise estimate)."""
        if len(self.values) < 2:
            return 0.0
        return float(np.std(self.values, ddof=1) / math.sqrt(len(self.values)))


def window_size(saved: int, num_steps: int) -> int:
    """num_steps saved losses per window; with fewer than two such windows, two halves of at
    least MIN_WINDOW each; 0 when there is not enough to compare."""
    if saved >= 2 * num_steps:
        return num_steps
    half = saved // 2
    return half if half >= LossNotDecreasing.MIN_WINDOW else 0


def loss_windows(steps: list[int], values: list[float], size: int) -> list[Window]:
    """Non-overlapping windows of `size`, aligned on the last saved loss (the oldest remainder
    is left out, so the end of training is always judged)."""
    start = len(steps) % size
    return [
        Window(steps[i : i + size], values[i : i + size]) for i in range(start, len(steps), size)
    ]


# ---------------------------------------------------------------------------------------------
# Gradient and activation rules
# ---------------------------------------------------------------------------------------------


class VanishingGradient(_ProjectRule):
    """Some layer's mean |gradient| is below `threshold` (AWS VanishingGradient rule) at a step
    where the model has not converged: a loss below LOSS_FLOOR leaves little to learn, and its
    small gradients are the fit, not a fault."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"threshold": 1e-7}

    def __init__(self, base_trial: Any, **parameters: Any) -> None:
        super().__init__(base_trial, **parameters)
        self.converged_steps = 0

    def check_data(self) -> None:
        if not _gradient_names(self.base_trial):
            raise RuleDataError("no gradients were saved; save the gradients collection")

    def invoke_at_step(self, step: int) -> bool:
        means = {
            name: float(self.base_trial.tensor(name).reduction_value(step, "mean", abs=True))
            for name in _gradient_names(self.base_trial, step)
        }
        if not means:
            return False
        loss = _loss_at_or_before(self.base_trial, step)
        if loss is not None and loss < LOSS_FLOOR:
            self.converged_steps += 1
            return False
        self.evaluations += 1
        name = min(means, key=lambda n: means[n])
        if means[name] < self.threshold:
            at = f" (loss {loss:.4f})" if loss is not None else ""
            return self.fire(
                step, f"mean |gradient| of {name} is {means[name]:.3g} < {self.threshold}{at}"
            )
        return False

    def summary(self) -> str:
        converged = (
            f"; {self.converged_steps} steps with a converged loss (< {LOSS_FLOOR}) not judged"
            if self.converged_steps
            else ""
        )
        return f"checked the gradients of {self.evaluations} steps{converged}"


class PoorWeightInitialization(_ProjectRule):
    """Signs of a bad initialisation in the first training steps (AWS PoorWeightInitialization)."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "activation_inputs_regex": ".*relu_input",
        "threshold": 10.0,
        "distribution_range": 0.001,
        "patience": 5,
        "steps": 10,
    }

    def __init__(self, base_trial: Any, **parameters: Any) -> None:
        super().__init__(base_trial, **parameters)
        self.loss_plateau = _Plateau(self.patience, 0.0)
        self.early_losses: list[float] = []

    def activation_names(self, step: int | None = None) -> list[str]:
        names: set[str] = set()
        for regex in _split_list(self.activation_inputs_regex):
            names.update(_tensor_names(self.base_trial, regex=regex, step=step))
        return sorted(names)

    def check_data(self) -> None:
        if not self.activation_names() and not _gradient_names(self.base_trial):
            raise RuleDataError(
                f"no activation inputs matching {self.activation_inputs_regex!r} and no gradients "
                "were saved; save the relu_input and gradients collections"
            )

    def in_window(self, step: int) -> bool:
        """Only the first `steps` training steps (global steps when no mode was set) count."""
        mode, mode_step = self.base_trial.mode_modestep(step)
        if mode == ModeKeys.TRAIN:
            return mode_step < self.steps
        return mode == ModeKeys.GLOBAL and step < self.steps

    def invoke_at_step(self, step: int) -> bool:
        if not self.in_window(step):
            return False
        for check in (self._activation_variance, self._gradient_spread, self._loss_progress):
            reason = check(step)
            if reason:
                return self.fire(step, reason)
        return False

    def _activation_variance(self, step: int) -> str:
        variances = {
            name: float(self.base_trial.tensor(name).reduction_value(step, "variance"))
            for name in self.activation_names(step)
        }
        if len(variances) < 2:
            return ""
        self.evaluations += 1
        low = min(variances, key=lambda n: variances[n])
        high = max(variances, key=lambda n: variances[n])
        ratio = math.inf if variances[low] == 0 else variances[high] / variances[low]
        if ratio > self.threshold:
            return (
                f"activation input variance ranges from {variances[low]:.3g} ({low}) to "
                f"{variances[high]:.3g} ({high}), ratio {ratio:.3g} > {self.threshold}"
            )
        return ""

    def _gradient_spread(self, step: int) -> str:
        names = _gradient_names(self.base_trial, step)
        if not names:
            return ""
        values = np.concatenate(
            [np.ravel(self.base_trial.tensor(n).value(step)) for n in names]
        ).astype(np.float64)
        self.evaluations += 1
        p5, p95 = np.percentile(values, [5, 95])
        if p95 - p5 < self.distribution_range:
            return (
                f"gradients are bunched: 5th-95th percentile range {p95 - p5:.3g} < "
                f"distribution_range {self.distribution_range}"
            )
        return ""

    def _loss_progress(self, step: int) -> str:
        losses = [
            float(np.mean(self.base_trial.tensor(n).value(step)))
            for n in _collection_tensors(self.base_trial, LOSSES)
            if step in self.base_trial.tensor(n).steps()
        ]
        if not losses:
            return ""
        self.evaluations += 1
        self.early_losses.append(losses[0])
        stalled = self.loss_plateau.update(losses[0], step)
        # Single batches are noisy: a loss that made no new minimum but fell on average (the
        # last `patience` losses against the ones before) is learning.
        recent = self.early_losses[-self.patience :]
        earlier = self.early_losses[: -self.patience]
        if stalled and not (earlier and np.mean(recent) < np.mean(earlier)):
            return (
                f"loss has not reached a new minimum for {self.loss_plateau.waited} steps "
                f"(best {self.loss_plateau.best:.4f}) and its mean did not fall, within the "
                f"first {self.steps} steps"
            )
        return ""

    def summary(self) -> str:
        return f"{self.evaluations} checks in the first {self.steps} training steps"


RULES: dict[str, type[_ProjectRule]] = {
    cls.__name__: cls
    for cls in (
        Overfit,
        Overtraining,
        PoorWeightInitialization,
        VanishingGradient,
        LossNotDecreasing,
    )
}
RULE_NAMES = tuple(RULES)


# ---------------------------------------------------------------------------------------------
# Evaluation: trial -> DebugRuleEvaluationStatuses-shaped results
# ---------------------------------------------------------------------------------------------


def status(name: str, word: str, details: str) -> dict[str, str]:
    """One entry of DescribeTrainingJob's DebugRuleEvaluationStatuses."""
    return {"RuleConfigurationName": name, "RuleEvaluationStatus": word, "StatusDetails": details}


def evaluate_rule(
    trial: Any, rule: str, parameters: dict[str, Any] | None = None, name: str | None = None
) -> dict[str, str]:
    """Run one rule over every saved step of `trial`; the status is reported under `name`."""
    name = name or rule
    if rule not in RULES:
        return status(name, ERROR, f"unknown rule {rule!r}; valid rules: {', '.join(RULE_NAMES)}")
    try:
        instance = RULES[rule](trial, **(parameters or {}))
        instance.check_data()
        invoke_rule(instance, start_step=0, end_step=max(trial.steps()) + 1, raise_eval_cond=True)
    except RuleEvaluationConditionMet:
        return status(name, ISSUES, instance.reason)
    except (RuleDataError, ValueError) as e:
        return status(name, ERROR, str(e))
    except Exception as e:  # one broken rule must not hide the statuses of the others
        return status(name, ERROR, f"rule failed: {type(e).__name__}: {e}")
    return status(name, NO_ISSUES, instance.summary())


def evaluate_rules(
    trial_dir: str | Path,
    rules: list[str] | tuple[str, ...] | None = None,
    parameters: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, str]]:
    """Evaluate `rules` (default: all five) on the trial in `trial_dir`."""
    parameters = parameters or {}
    configurations = [
        {
            "RuleConfigurationName": r,
            "RuleParameters": {"rule_to_invoke": r, **parameters.get(r, {})},
        }
        for r in (rules or RULE_NAMES)
    ]
    return evaluate_rule_configurations(trial_dir, configurations)


def evaluate_rule_configurations(
    trial_dir: str | Path, configurations: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Evaluate CreateTrainingJob `DebugRuleConfigurations` entries (RuleParameters name the
    class in `rule_to_invoke`, the rest are its parameters, as strings or values)."""
    trial, problem = _open_trial(trial_dir)
    results = []
    for configuration in configurations:
        name = configuration["RuleConfigurationName"]
        parameters = dict(configuration.get("RuleParameters") or {})
        rule = parameters.pop("rule_to_invoke", name)
        if problem:
            results.append(status(name, ERROR, problem))
        else:
            results.append(evaluate_rule(trial, rule, parameters, name))
    return results


def _open_trial(trial_dir: str | Path) -> tuple[Any, str]:
    """Return (trial, "") or (None, why the trial cannot be read)."""
    path = Path(trial_dir)
    if not path.is_dir():
        return None, f"no debugging data was saved: {path} does not exist"
    # smdebug waits (forever, while the job is not marked finished) for data that may never
    # come: look before creating the trial.
    if not any(path.glob("collections/*/*collections.json")):
        return None, f"no debugging data was saved in {path}"
    if not (path / END_OF_JOB_FILE).exists():
        return None, (
            f"the debugging data in {path} is from a job that has not finished "
            f"(no {END_OF_JOB_FILE}); the rules read finished trials"
        )
    try:
        trial = create_trial(str(path))
        steps = trial.steps()
    except Exception as e:  # smdebug raises many types for unreadable trials
        return None, f"cannot read the debugging data in {path}: {type(e).__name__}: {e}"
    if not steps:
        return None, f"no debugging data was saved in {path}"
    return trial, ""


# ---------------------------------------------------------------------------------------------
# Helpers over an smdebug trial
# ---------------------------------------------------------------------------------------------


def _coerce_parameters(
    rule: str, defaults: dict[str, Any], given: dict[str, Any]
) -> list[tuple[str, Any]]:
    """Apply AWS defaults and convert RuleParameters strings ("10", "0.1", "True") to types."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {rule}; "
            f"valid parameters: {', '.join(defaults)}"
        )
    values = []
    for name, default in defaults.items():
        value = given.get(name, default)
        if value is not None and default is not None:
            value = _convert(rule, name, value, type(default))
        values.append((name, value))
    return values


def _convert(rule: str, name: str, value: Any, kind: type) -> Any:
    if kind is bool and isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{rule}.{name} must be true or false, got {value!r}")
        return value.lower() == "true"
    try:
        return kind(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{rule}.{name} must be a {kind.__name__}, got {value!r}") from e


def _split_list(value: str | list[str] | None) -> list[str]:
    """AWS takes lists of regexes as a list or as a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


def _mode_named(name: str) -> ModeKeys:
    try:
        return ModeKeys[str(name).upper()]
    except KeyError as e:
        valid = ", ".join(m.name for m in (ModeKeys.EVAL, ModeKeys.TRAIN, ModeKeys.GLOBAL))
        raise ValueError(f"unknown mode {name!r}; valid modes: {valid}") from e


def _tensor_names(trial: Any, regex: str, step: int | None = None) -> list[str]:
    names = trial.tensor_names(regex=regex)
    if step is None:
        return names
    return [n for n in names if step in trial.tensor(n).steps()]


def _collection_tensors(trial: Any, collection: str) -> list[str]:
    """Tensors of a collection; [] when the trial never had that collection."""
    if collection not in trial.collections():
        return []
    return trial.tensor_names(collection=collection)


def _gradient_names(trial: Any, step: int | None = None) -> list[str]:
    names = _collection_tensors(trial, GRADIENTS) or trial.tensor_names(regex="^gradient")
    if step is None:
        return names
    return [n for n in names if step in trial.tensor(n).steps()]


def _loss_at_or_before(trial: Any, step: int) -> float | None:
    """The mean saved training loss at `step`, else at the last saved step before it."""
    for name in _collection_tensors(trial, LOSSES):
        tensor = trial.tensor(name)
        earlier = [s for s in tensor.steps() if s <= step and trial.mode(s) == ModeKeys.TRAIN]
        if earlier:
            return float(np.mean(tensor.value(earlier[-1])))
    return None


def _loss_passes(trial: Any, name: str) -> list[Pass]:
    """Group a loss tensor's saved values into passes: runs of consecutive steps of one mode."""
    passes: list[Pass] = []
    tensor = trial.tensor(name)
    for step in tensor.steps():
        mode = trial.mode(step) or ModeKeys.GLOBAL
        if not passes or passes[-1].mode != mode:
            passes.append(Pass(mode))
        passes[-1].steps.append(step)
        passes[-1].values.append(float(np.mean(tensor.value(step))))
    return passes


def _pass_ending_at(passes: list[Pass], step: int, mode: ModeKeys) -> int | None:
    for i, p in enumerate(passes):
        if p.mode == mode and p.last_step == step:
            return i
    return None


def _previous_pass(passes: list[Pass], index: int | None, mode: ModeKeys) -> Pass | None:
    if index is None:
        return None
    return next((p for p in reversed(passes[:index]) if p.mode == mode), None)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parse_param(text: str) -> tuple[str, str, str]:
    match = re.fullmatch(r"(\w+)\.(\w+)=(.*)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected Rule.parameter=value, got {text!r}")
    return match.group(1), match.group(2), match.group(3)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate the debugging rules on a trial.")
    parser.add_argument("trial_dir", type=str, help="folder the smdebug hook wrote (out_dir)")
    parser.add_argument("--json", action="store_true", help="print the statuses as JSON")
    parser.add_argument(
        "--rules",
        default=",".join(RULE_NAMES),
        type=str,
        help=f"comma-separated rules to run (default: all of {', '.join(RULE_NAMES)})",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=_parse_param,
        help="override a rule parameter, e.g. --param Overfit.patience=3 (repeatable)",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        print(
            f"error: unknown rule(s) {', '.join(unknown)}; valid rules: {', '.join(RULE_NAMES)}",
            file=sys.stderr,
        )
        return 2
    parameters: dict[str, dict[str, str]] = {}
    for rule, key, value in args.param:
        parameters.setdefault(rule, {})[key] = value
    results = evaluate_rules(args.trial_dir, rules, parameters)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            name, word = r["RuleConfigurationName"], r["RuleEvaluationStatus"]
            print(f"{name}: {word} - {r['StatusDetails']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
