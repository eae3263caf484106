"""Each rule fires on a run built to trigger it and stays quiet on a healthy run.

The trials are real training runs of a small network on the 8x8 digits, recorded by smdebug's
own PyTorch hook (the same hook train.py uses); the rules read them through create_trial.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from smdebug.trials import create_trial

from training import rules

REPO_ROOT = Path(__file__).resolve().parents[2]


def statuses(trial_dir: Path, **kwargs) -> dict[str, dict[str, str]]:
    return {r["RuleConfigurationName"]: r for r in rules.evaluate_rules(trial_dir, **kwargs)}


def zero_init(model: torch.nn.Module) -> None:
    for parameter in model.parameters():
        torch.nn.init.zeros_(parameter)


def oversized_layer(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.block2.fc.weight.mul_(100.0)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, trial_recorder) -> Path:
    """A run that learns steadily: losses fall every pass, valid tracks train."""
    return trial_recorder(tmp_path_factory.mktemp("healthy") / "trial", lr=0.01, epochs=12)


def test_rules_stay_quiet_on_a_healthy_run(healthy):
    results = statuses(healthy)
    assert list(results) == list(rules.RULE_NAMES)
    for name, result in results.items():
        assert result["RuleEvaluationStatus"] == rules.NO_ISSUES, (name, result)
    # quiet because each rule looked, not because it had nothing to look at
    overfit = results["Overfit"]["StatusDetails"]
    assert "validation passes" in overfit
    # every one of the 12 passes was looked at: compared, or skipped as warm-up
    compared = int(re.search(r"compared (\d+) validation", overfit).group(1))
    warming = re.search(r"\((\d+) before the training loss had halved", overfit)
    assert compared >= 1 and compared + (int(warming.group(1)) if warming else 0) == 12
    assert "comparisons of EVAL loss window means" in results["LossNotDecreasing"]["StatusDetails"]


def test_loss_not_decreasing_fires_on_a_huge_learning_rate(tmp_path, trial_recorder):
    """The training loss jumps from 2.3 to tens within ten steps. (The EVAL losses, one pass
    per epoch here, are broken from the first pass on, so the TRAIN losses show it.)"""
    trial = trial_recorder(tmp_path / "trial", lr=50.0, epochs=1)
    result = statuses(
        trial, rules=["LossNotDecreasing"], parameters={"LossNotDecreasing": {"mode": "TRAIN"}}
    )["LossNotDecreasing"]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    details = result["StatusDetails"]
    assert "over TRAIN steps" in details or "is nan at TRAIN step" in details, details


def test_loss_not_decreasing_fires_when_training_stands_still(tmp_path, trial_recorder):
    """Default mode: the EVAL losses (they were saved). 12 validation passes are fewer than two
    windows of 10, so the two halves of 6 are compared: flat at the starting loss."""
    trial = trial_recorder(tmp_path / "trial", lr=0.0, epochs=12)
    result = statuses(trial, rules=["LossNotDecreasing"])["LossNotDecreasing"]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "over EVAL steps 6-11 did not decrease by 0.1%" in result["StatusDetails"]


def test_vanishing_gradient_fires_on_zero_initialised_layers(tmp_path, trial_recorder):
    trial = trial_recorder(tmp_path / "trial", init=zero_init, epochs=1)
    result = statuses(trial, rules=["VanishingGradient"])["VanishingGradient"]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert result["StatusDetails"].startswith("step 0: mean |gradient| of gradient/")


def test_poor_weight_initialization_fires_on_an_oversized_layer(tmp_path, trial_recorder):
    trial = trial_recorder(tmp_path / "trial", init=oversized_layer, epochs=1)
    result = statuses(trial, rules=["PoorWeightInitialization"])["PoorWeightInitialization"]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "activation input variance" in result["StatusDetails"]
    assert "block2.relu_input_0" in result["StatusDetails"]


def test_poor_weight_initialization_fires_on_bunched_gradients(tmp_path, trial_recorder):
    def tiny_weights(model):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(1e-4)

    trial = trial_recorder(tmp_path / "trial", init=tiny_weights, epochs=1)
    only_gradients = {"activation_inputs_regex": "no-such-tensor"}
    result = statuses(
        trial,
        rules=["PoorWeightInitialization"],
        parameters={"PoorWeightInitialization": only_gradients},
    )["PoorWeightInitialization"]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "gradients are bunched" in result["StatusDetails"]


def test_poor_weight_initialization_fires_when_the_loss_does_not_move(tmp_path, trial_recorder):
    trial = trial_recorder(tmp_path / "trial", lr=0.0, epochs=1, collections=("losses",))
    result = statuses(trial, rules=["PoorWeightInitialization"])
    # no activations or gradients were saved at all: the rule cannot judge the run
    assert result["PoorWeightInitialization"]["RuleEvaluationStatus"] == rules.ERROR
    # full-batch steps with a learning rate of 0: the same loss at every step
    trial = trial_recorder(
        tmp_path / "trial2",
        lr=0.0,
        epochs=10,
        train_samples=200,
        batch_size=200,
        collections=("losses", "gradients"),
    )
    result = statuses(
        trial,
        rules=["PoorWeightInitialization"],
        parameters={"PoorWeightInitialization": {"distribution_range": "0"}},
    )["PoorWeightInitialization"]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "loss has not reached a new minimum for 5 steps" in result["StatusDetails"]


def test_overfit_fires_on_a_tiny_training_set(tmp_path, trial_recorder):
    trial = trial_recorder(tmp_path / "trial", train_samples=20, batch_size=20, lr=0.1, epochs=40)
    result = statuses(trial, rules=["Overfit"])["Overfit"]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert "above mean train loss" in result["StatusDetails"]


def test_overtraining_fires_when_training_goes_far_past_the_best_validation_loss(
    tmp_path, trial_recorder
):
    trial = trial_recorder(tmp_path / "trial", train_samples=20, batch_size=20, lr=0.1, epochs=40)
    result = statuses(
        trial,
        rules=["Overtraining"],
        parameters={"Overtraining": {"patience_train": "1000"}},  # only the validation side
    )["Overtraining"]
    assert result["RuleEvaluationStatus"] == rules.ISSUES
    assert (
        "validation loss has not improved by more than 0.01 for 10 passes"
        in (result["StatusDetails"])
    )


def test_rules_report_error_when_no_data_was_saved(tmp_path):
    for trial_dir in (tmp_path / "absent", tmp_path):
        results = rules.evaluate_rules(trial_dir)
        assert [r["RuleEvaluationStatus"] for r in results] == [rules.ERROR] * 5
        assert all("no debugging data was saved" in r["StatusDetails"] for r in results)


def test_rules_report_error_for_an_unfinished_trial(tmp_path, healthy):
    """smdebug would wait for more steps forever; the rules refuse a trial still being written."""
    copy = tmp_path / "trial"
    shutil.copytree(healthy, copy)
    (copy / rules.END_OF_JOB_FILE).unlink()
    results = rules.evaluate_rules(copy, rules=["Overfit"])
    assert results[0]["RuleEvaluationStatus"] == rules.ERROR
    assert "has not finished" in results[0]["StatusDetails"]


def test_rules_report_error_for_missing_collections(tmp_path, trial_recorder):
    """A trial with losses only: the gradient and activation rules cannot judge it."""
    trial = trial_recorder(tmp_path / "trial", epochs=2, collections=("losses",))
    results = statuses(trial)
    assert results["VanishingGradient"]["RuleEvaluationStatus"] == rules.ERROR
    assert "no gradients were saved" in results["VanishingGradient"]["StatusDetails"]
    assert results["PoorWeightInitialization"]["RuleEvaluationStatus"] == rules.ERROR
    assert results["Overfit"]["RuleEvaluationStatus"] == rules.NO_ISSUES


def test_rule_parameters_come_as_strings_and_unknown_ones_are_errors(healthy):
    results = rules.evaluate_rule_configurations(
        healthy,
        [
            {
                "RuleConfigurationName": "StrictOvertraining",
                "RuleParameters": {
                    "rule_to_invoke": "Overtraining",
                    "delta": "10",
                    "patience_train": "1",
                },
            },
            {
                "RuleConfigurationName": "Typo",
                "RuleParameters": {"rule_to_invoke": "Overfit", "patiense": "1"},
            },
            {"RuleConfigurationName": "Other", "RuleParameters": {"rule_to_invoke": "DeadRelu"}},
        ],
    )
    strict, typo, other = results
    assert strict["RuleConfigurationName"] == "StrictOvertraining"
    assert strict["RuleEvaluationStatus"] == rules.ISSUES
    assert typo["RuleEvaluationStatus"] == rules.ERROR
    assert "patiense" in typo["StatusDetails"] and "ratio_threshold" in typo["StatusDetails"]
    assert other["RuleEvaluationStatus"] == rules.ERROR
    assert "DeadRelu" in other["StatusDetails"] and "Overfit" in other["StatusDetails"]


def test_rules_command_prints_json(healthy):
    done = subprocess.run(
        [sys.executable, "-m", "training.rules", str(healthy), "--json", "--rules", "Overfit"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    printed = json.loads(done.stdout)
    assert printed == [
        {
            "RuleConfigurationName": "Overfit",
            "RuleEvaluationStatus": rules.NO_ISSUES,
            "StatusDetails": rules.evaluate_rules(healthy, rules=["Overfit"])[0]["StatusDetails"],
        }
    ]


def test_healthy_trial_is_readable_with_create_trial(healthy):
    trial = create_trial(str(healthy))
    assert "block1.relu_input_0" in trial.tensor_names(regex=".*relu_input")
