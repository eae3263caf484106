"""train.py data-parallel: two processes under torchrun (Gloo on the CPU), as the training
toolkit starts it on two instances for torch_distributed (docs/training-at-scale.md)."""

from __future__ import annotations

import json
import math
import re

import pytest
from pipeline_common import metrics
from smdebug.core.modes import ModeKeys
from smdebug.trials import create_trial

from training.train import scaled_lr

from .conftest import FAST_ARGS


def worker_steps(stdout: str, rank: int) -> list[int]:
    return [int(s) for s in re.findall(rf"\[worker\] rank={rank} split=train steps=(\d+)", stdout)]


def test_scaled_lr_is_linear_for_sgd_and_square_root_for_adamw():
    assert scaled_lr(0.05, "sgd", 1) == scaled_lr(0.05, "adamw", 1) == 0.05
    assert scaled_lr(0.05, "sgd", 4) == pytest.approx(0.2)
    assert scaled_lr(0.05, "adamw", 4) == pytest.approx(0.1)


def test_train_two_processes_share_the_steps_and_print_one_set_of_metrics(
    tmp_path, digits_dir, train_runner
):
    run = train_runner(tmp_path, digits_dir, processes=2)
    shown = f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"

    assert run.returncode == 0, shown
    lines = re.findall(r"^\[metric\] .*$", run.stdout, re.MULTILINE)
    assert len(lines) == 5, shown  # 2 epochs x train/valid + test, once (rank 0)
    for definition in metrics.METRIC_DEFINITIONS:
        assert re.search(definition["Regex"], run.stdout), definition
    # 60 training images, batch 16: 4 steps alone, 2 for each of the two processes.
    batch = int(FAST_ARGS["batch-size"])
    each = math.ceil(30 / batch)
    assert worker_steps(run.stdout, 0) == worker_steps(run.stdout, 1) == [each, each], shown
    # --lr 0.02 x 2 processes (the linear rule, sgd), in both processes
    assert len(re.findall(r"^\[worker\] rank=\d .* lr=0.04$", run.stdout, re.MULTILINE)) == 2, shown
    history = json.loads((run.output_dir / "history.json").read_text())
    assert [e["processes"] for e in history["epochs"]] == [2, 2]
    assert history["epochs"][0]["train"]["samples"] == 60  # the whole split, reduced
    assert history["test"]["samples"] == 20
    confusion = json.loads((run.output_dir / metrics.CONFUSION_FILE).read_text())
    assert confusion["images"] == 20
    assert (run.model_dir / "model.pth").is_file()
    # The monitoring baseline is the whole validation split's (20 images), not rank 0's 10.
    assert json.loads((run.model_dir / "baseline.json").read_text())["count"] == 20
    # The hook ran in rank 0 only: one trial, rank 0's 2 steps per epoch.
    trial = create_trial(str(run.debug_dir))
    loss = trial.tensor("CrossEntropyLoss_output_0")
    assert loss.steps(mode=ModeKeys.TRAIN) == list(range(2 * each))
    statuses = json.loads((run.output_dir / "rule_statuses.json").read_text())
    assert len(statuses) == 5


def test_train_two_processes_resume_from_a_checkpoint(tmp_path, digits_dir, train_runner):
    first = train_runner(
        tmp_path / "a", digits_dir, args={"epochs": "1"}, checkpoints=True, processes=2
    )
    assert first.returncode == 0, first.stderr[-3000:]

    second = train_runner(
        tmp_path / "a",
        digits_dir,
        args={"epochs": "2", "checkpoint-dir": str(first.checkpoint_dir)},
        processes=2,
    )

    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("resumed from") == 1 and "at epoch 2" in second.stdout
    assert re.findall(r"epoch=(\d+) split=train", second.stdout) == ["2"]
    assert len(worker_steps(second.stdout, 1)) == 1  # rank 1 resumed at epoch 2 as well
    history = json.loads((second.output_dir / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
