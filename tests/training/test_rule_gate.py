"""The rule benchmark in small: healthy runs pass the gate, each kind of broken run is blocked.

The same code as `python -m bench rules` (bench/rules.py): real train.py jobs with the profiled
retrain's hook config and `--run-rules true`, judged by pipeline_common.gate with template.yaml's
default GatePolicy and the MinTestAccuracy of the configuration (the demo's: samconfig.toml).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import rules as bench_rules
from bench.common import Settings, digits


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("rule-gate")
    settings = Settings(quick=False, work_dir=work)
    found, gate = bench_rules.spaces()
    data = {
        "digits": digits(settings, bench_rules.PER_CLASS, bench_rules.DIGITS_SIZE),
        "shapes": bench_rules.shapes(settings, 4 * bench_rules.PER_CLASS, bench_rules.SHAPES_SIZE),
    }
    return work, found, gate, data


def planned(found, kind: str, dataset: str) -> bench_rules.Run:
    """The benchmark's first run of this kind on this data set."""
    runs = bench_rules.plan_runs(found, quick=False)
    return next(r for r in runs if r.kind == kind and r.dataset == dataset)


def judged(setting, run: bench_rules.Run, name: str) -> dict:
    work, _, gate, data = setting
    trained = bench_rules.train(run, data[run.dataset], Path(work) / name)
    return bench_rules.judge(run, trained, gate)


def test_gate_template_settings_are_the_ones_benchmarked(setting):
    _, found, gate, _ = setting
    assert gate.policy.startswith("block:LossNotDecreasing,VanishingGradient")
    assert found["demo"].min_test_accuracy == 0.9  # samconfig.toml's local value
    assert found["demo"].models == ("resnet18",)
    runs = bench_rules.plan_runs(found, quick=False)
    assert sum(r.healthy for r in runs) >= 20
    broken = [r.kind for r in runs if not r.healthy]
    assert all(broken.count(kind) == 3 for kind in bench_rules.BROKEN_KINDS)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_gate_approves_a_healthy_demo_run(setting, dataset):
    run = planned(setting[1], "healthy", dataset)
    outcome = judged(setting, run, f"healthy-{dataset}")
    assert not outcome["blocked"], outcome
    assert outcome["test_accuracy"] >= run.min_test_accuracy


@pytest.mark.slow
@pytest.mark.parametrize("kind", bench_rules.BROKEN_KINDS)
def test_gate_blocks_a_broken_run(setting, kind):
    run = planned(setting[1], kind, "digits")
    outcome = judged(setting, run, kind)
    assert outcome["blocked"], outcome
    assert outcome["blocked_by"], outcome
