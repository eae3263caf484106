"""The rules' semantics over scripted loss sequences: windows, floors, divergence, NaN.

The trials are written by smdebug's own PyTorch hook: a one-weight model steps the hook and a
"loss" module returns the scripted value, which the hook saves in the losses collection as it
saves a real loss. So the rules read exactly the layout train.py produces, with losses chosen
to sit on each side of every threshold of docs/rules.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from smdebug.core.modes import ModeKeys
from smdebug.core.save_config import SaveConfig
from smdebug.pytorch import Hook
from torch import nn

from training import rules


class ScriptedLoss(nn.modules.loss._Loss):
    """Returns the next scripted value; the hook saves it like CrossEntropyLoss's output."""

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return value * 1.0


def scripted_trial(
    out_dir: Path,
    train: list[float] | None = None,
    valid: list[float] | None = None,
    passes: list[tuple[ModeKeys, list[float]]] | None = None,
) -> Path:
    """`passes` in order (default: TRAIN losses, then EVAL losses), one saved step each."""
    model, loss = nn.Linear(1, 1), ScriptedLoss()
    hook = Hook(
        out_dir=str(out_dir),
        save_config=SaveConfig(save_interval=1),
        include_collections=["losses"],
    )
    hook.register_module(model)
    hook.register_loss(loss)
    for mode, values in passes or ((ModeKeys.TRAIN, train or []), (ModeKeys.EVAL, valid or [])):
        hook.set_mode(mode)
        for value in values:
            model(torch.zeros(1, 1))
            loss(torch.tensor(value))
    hook.close()
    return out_dir


def loss_not_decreasing(trial: Path, **parameters: str) -> dict[str, str]:
    return rules.evaluate_rules(
        trial, rules=["LossNotDecreasing"], parameters={"LossNotDecreasing": parameters}
    )[0]


def noisy(levels: list[float], per_level: int, noise: float, seed: int = 0) -> list[float]:
    """`per_level` values around each level, with uniform batch-to-batch noise."""
    rng = np.random.default_rng(seed)
    return [float(level + rng.uniform(-noise, noise)) for level in levels for _ in range(per_level)]


def test_window_size_uses_num_steps_saved_losses_or_two_halves():
    assert rules.window_size(40, 10) == 10
    assert rules.window_size(20, 10) == 10
    assert rules.window_size(19, 10) == 9  # two halves of 9
    assert rules.window_size(6, 10) == 3
    assert rules.window_size(5, 10) == 0  # not enough to compare


def test_windows_are_aligned_on_the_last_saved_loss():
    windows = rules.loss_windows(list(range(25)), [float(i) for i in range(25)], 10)
    assert [w.steps[0] for w in windows] == [5, 15]
    assert windows[-1].steps[-1] == 24
    assert windows[0].mean == pytest.approx(9.5)


def test_a_steadily_falling_loss_passes(tmp_path):
    trial = scripted_trial(tmp_path / "t", valid=noisy([2.3, 1.5, 1.0, 0.6], 10, 0.2))
    result = loss_not_decreasing(trial)
    assert result["RuleEvaluationStatus"] == rules.NO_ISSUES, result
    assert "3 comparisons of EVAL loss window means (10 saved losses" in result["StatusDetails"]


def test_a_converged_loss_below_the_floor_passes_although_single_batches_rise(tmp_path):
    """The demo's case: 0.0012 -> 0.0056 between two batches of a 99.6% model."""
    levels = [2.3, 0.3, 0.02, 0.01, 0.012]
    trial = scripted_trial(tmp_path / "t", valid=noisy(levels, 10, 0.005))
    result = loss_not_decreasing(trial)
    assert result["RuleEvaluationStatus"] == rules.NO_ISSUES, result


def test_a_learned_loss_flat_within_noise_passes(tmp_path):
    levels = [2.3, 0.6, 0.3, 0.3, 0.3]
    trial = scripted_trial(tmp_path / "t", valid=noisy(levels, 10, 0.1, seed=3))
    assert loss_not_decreasing(trial)["RuleEvaluationStatus"] == rules.NO_ISSUES


def test_a_learned_loss_that_rises_beyond_noise_fires(tmp_path):
    levels = [2.3, 0.6, 0.3, 0.9]
    trial = scripted_trial(tmp_path / "t", valid=noisy(levels, 10, 0.02))
    result = loss_not_decreasing(trial)
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "over EVAL steps 30-39 did not decrease by 0.1%" in result["StatusDetails"]


def test_a_flat_loss_that_never_learned_fires_even_within_noise(tmp_path):
    """A frozen network: flat within noise, but at the starting loss, not converged."""
    trial = scripted_trial(tmp_path / "t", valid=noisy([2.3] * 4, 10, 0.05))
    result = loss_not_decreasing(trial)
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "did not decrease by 0.1%" in result["StatusDetails"]
    assert "first window 2.3" in result["StatusDetails"]


def test_single_noisy_batches_do_not_fire_a_falling_loss(tmp_path):
    """Every other batch is worse than the one before (AWS's literal check fires at once)."""
    values = [2.3 - 0.02 * i + (0.3 if i % 2 else 0.0) for i in range(40)]
    trial = scripted_trial(tmp_path / "t", train=values)
    assert loss_not_decreasing(trial)["RuleEvaluationStatus"] == rules.NO_ISSUES


def test_a_loss_above_where_it_started_fires_as_diverged(tmp_path):
    """A blow-up in the first window makes the second look like a decrease; it is not."""
    blow_up = [2.3, 15.0, 3e4, 1e4, 35.0, 43.0, 56.0, 59.0, 84.0, 63.0]
    values = [*blow_up, *noisy([55.0], 10, 10)]
    trial = scripted_trial(tmp_path / "t", train=values)
    result = loss_not_decreasing(trial)
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "above the first saved loss 2.3000: the loss diverged" in result["StatusDetails"]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_fires_in_any_mode_however_short_the_run(tmp_path, bad):
    trial = scripted_trial(tmp_path / "t", train=[2.3, 2.2, bad], valid=[2.0])
    result = loss_not_decreasing(trial)
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert f"is {bad} at TRAIN step 2" in result["StatusDetails"]


def test_too_few_losses_are_not_judged_and_say_so(tmp_path):
    trial = scripted_trial(tmp_path / "t", train=[2.3, 2.3, 2.3, 2.3, 2.3])
    result = loss_not_decreasing(trial)
    assert result["RuleEvaluationStatus"] == rules.NO_ISSUES
    assert result["StatusDetails"].startswith("not evaluated: fewer than 6 TRAIN losses")


def test_mode_falls_back_to_train_when_eval_has_too_few_losses(tmp_path):
    trial = scripted_trial(tmp_path / "t", train=[2.3] * 20, valid=[0.5, 0.4])
    result = loss_not_decreasing(trial)
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "over TRAIN steps" in result["StatusDetails"]
    # asking for EVAL explicitly judges EVAL (too few there: not evaluated)
    assert loss_not_decreasing(trial, mode="EVAL")["RuleEvaluationStatus"] == rules.NO_ISSUES


def test_diff_percent_is_required_between_windows(tmp_path):
    """A 2% drop per window passes diff_percent 1 and fails diff_percent 5."""
    values = [2.3 * 0.98**level for level in range(4) for _ in range(10)]
    trial = scripted_trial(tmp_path / "t", train=values)
    assert loss_not_decreasing(trial, diff_percent="1")["RuleEvaluationStatus"] == rules.NO_ISSUES
    assert loss_not_decreasing(trial, diff_percent="5")["RuleEvaluationStatus"] == rules.ISSUES


def test_overfit_needs_an_absolute_gap_and_a_learned_training_loss(tmp_path):
    """Converged: 0.02 vs 0.001 is a ratio of 19 but no gap. Warm-up: nothing learned yet."""
    train, valid = ModeKeys.TRAIN, ModeKeys.EVAL
    start = [(train, [2.3] * 3), (valid, [2.2])]
    converged = scripted_trial(
        tmp_path / "a", passes=[*start, (train, [0.001] * 3), (valid, [0.02])]
    )
    warm_up = scripted_trial(tmp_path / "b", passes=[(train, [2.3] * 3), (valid, [4.4])])
    overfit = scripted_trial(tmp_path / "c", passes=[*start, (train, [0.05] * 3), (valid, [0.9])])
    for trial in (converged, warm_up):
        result = rules.evaluate_rules(trial, rules=["Overfit"])[0]
        assert result["RuleEvaluationStatus"] == rules.NO_ISSUES, result
    result = rules.evaluate_rules(overfit, rules=["Overfit"])[0]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "mean valid loss 0.9000" in result["StatusDetails"]
