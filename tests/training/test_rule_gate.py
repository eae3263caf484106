"""The rule benchmark in small: healthy runs pass the gate, each kind of broken run is blocked.

The same code as `python -m bench rules` (bench/rules.py): real train.py jobs with the profiled
retrain's hook config and `--run-rules true`, judged by pipeline_common.gate with template.yaml's
default GatePolicy and the MinTestAccuracy of the configuration (the demo's: samconfig.toml).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import rules as bench_rules
from bench.common import Settings


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("rule-gate")
    settings = Settings(quick=False, work_dir=work)
    found, gate = bench_rules.spaces()
    runs = bench_rules.plan_runs(found, quick=False)
    return work, found, gate, runs, settings


def planned(setting, kind: str, dataset: str) -> bench_rules.Run:
    """The benchmark's first run of this kind on this data set."""
    return next(r for r in setting[3] if r.kind == kind and r.dataset == dataset)


def judged(setting, run: bench_rules.Run, name: str) -> dict:
    """Train and judge one run exactly as the benchmark does (same data set and image size)."""
    work, _, gate, _, settings = setting
    data = bench_rules.datasets(settings, [run])
    trained = bench_rules.train(run, data[bench_rules.data_key(run)], Path(work) / name)
    return bench_rules.judge(run, trained, gate)


def test_gate_template_settings_are_the_ones_benchmarked(setting):
    _, found, gate, runs, _ = setting
    assert gate.policy.startswith("block:LossNotDecreasing,VanishingGradient")
    assert found["demo"].min_test_accuracy == 0.9  # samconfig.toml's local value
    assert found["demo"].models == ("resnet18",)
    assert sum(r.healthy for r in runs) >= 20
    broken = [r.kind for r in runs if not r.healthy]
    assert all(broken.count(kind) == 3 for kind in bench_rules.BROKEN_KINDS)
    # The default space's digits draws train at the demo's ImageSize (32 px) on 160 a class, not
    # the demo-space shortcut (16 px, 40 a class) under which its deeper models stay under-trained.
    default_digits = [r for r in runs if r.space == "default" and r.dataset == "digits"]
    assert default_digits
    assert {r.image_size for r in default_digits} == {found["demo"].image_size} == {32}
    assert {r.per_class for r in default_digits} == {4 * bench_rules.PER_CLASS}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "shapes"])
def test_gate_approves_a_healthy_demo_run(setting, dataset):
    run = planned(setting, "healthy", dataset)
    outcome = judged(setting, run, f"healthy-{dataset}")
    assert not outcome["blocked"], outcome
    assert outcome["test_accuracy"] >= run.min_test_accuracy


@pytest.mark.slow
@pytest.mark.parametrize("kind", bench_rules.BROKEN_KINDS)
def test_gate_blocks_a_broken_run(setting, kind):
    run = planned(setting, kind, "digits")
    outcome = judged(setting, run, kind)
    assert outcome["blocked"], outcome
    assert outcome["blocked_by"], outcome
