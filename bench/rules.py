"""Benchmark: the deploy gate's false blocks on healthy runs and its detection of broken ones.

Every run is a real train.py job under the SageMaker contract, with the hook config the
pipeline's profiled retrain gets (functions/shared's COLLECTION_SAVE_INTERVALS) and
`--run-rules true`, so the project's rules judge exactly the trial the pipeline would give them.
Each job's rule_statuses.json and test accuracy then go through the real gate
(pipeline_common.gate.decide, the builder EvaluateRules uses) with
template.yaml's default GatePolicy and RegressionTolerance, and the MinTestAccuracy of the
deploy configuration the run's hyperparameters come from.

Two search spaces, both read from the repository:
  demo     samconfig.toml [local.deploy.parameters] (what `make demo` can pick): Models,
           BatchSizes, LearningRateMin..Max, Epochs, ImageSize, MinTestAccuracy.
  default  template.yaml's defaults: Models, BatchSizes, LearningRateMin..Max and
           MinTestAccuracy. Its PretrainedWeights=true cannot load weights offline, so runs
           train from scratch; a learning rate of 1e-4 cannot train a ResNet from scratch in a
           tiny budget, so the draw is log-uniform over [FROM_SCRATCH_LR_MIN, LearningRateMax]
           and epochs/image size are the demo's (224 px would cost 50x more). Its deeper
           models need the demo's 32-px digits and 160 of them a class to converge in 12
           epochs; the demo's space trains on the cheaper 16-px, 40-a-class shortcut.
Two data sets: the demo's digits (10 classes, 32 px, grey ink on white, written as RGB) and a
generated "shapes" set (3 classes, 24 px, colour: horizontal bars, vertical bars, discs on
random colours with noise).

Healthy runs: every configuration the demo can pick (both ends of its learning-rate range;
one model and one batch size) plus draws from both spaces, over seeds and both data sets.
Broken runs: a diverging learning rate (a real flag) and train.py's test-only --inject-fault
kinds (shuffled labels, zero / constant initialisation, a frozen network, NaN losses), three
seeds each. Goals: 0 healthy runs blocked; every broken run blocked by a rule or the quality gate.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pipeline_common.gate import OWN_RULES, GatePolicy, RuleStatus, decide, expected_rules

from bench.common import (
    REPO_ROOT,
    SINGLE_THREAD_ENV,
    ChildFailed,
    Settings,
    at_least,
    at_most,
    digits,
    info,
    log,
    result,
    run_training,
)
from bench.debug_overhead import pipeline_hook_config

NAME = "rules"
TITLE = "Rule gate: false blocks on healthy runs, detection of broken runs"
RULE_NAMES = OWN_RULES
FROM_SCRATCH_LR_MIN = 0.003
DIVERGING_LR = 5.0
BROKEN_KINDS = (
    "diverging-lr",
    "shuffled-labels",
    "zero-init",
    "constant-init",
    "frozen",
    "nan-loss",
)
SHAPE_CLASSES = ("000.hbars", "001.vbars", "002.disc")
# Budget (2 shared cores): 16-px digits instead of the demo's 32 px (a quarter of the compute),
# 40 digits per class (160 shapes: 3 classes); the demo's model, batch size, learning rates and
# epochs are kept. The default space's draws train digits as the demo does, at its ImageSize
# (32 px), and with 4x the images (160 a class, as shapes; the demo's full set has about 180):
# its deeper models (resnet34/50) stay under-trained on the shortcut (at 16 px they see 1x1 maps
# after the second stage: resnet34, batch 32 reached 0.57; at 32 px with 40 a class, batch 64
# gives 5 steps an epoch: 0.52), a budget artefact, not a configuration that cannot learn.
PER_CLASS = 40
QUICK_PER_CLASS = 20
DIGITS_SIZE = 16
SHAPES_SIZE = 24
# Jobs at once, one intra-op thread each: one per core (the shared machine has 2; a third
# only waits for a core but keeps a job going while another starts up or evaluates rules).
PARALLEL = min(3, (os.cpu_count() or 1) + 1)
# Broken runs learn nothing useful however long they train: half the demo's epochs.
BROKEN_EPOCHS = 6


# ---------------------------------------------------------------------------------------------
# Configuration from template.yaml and samconfig.toml
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """One deploy configuration's search space and gate settings."""

    name: str
    models: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    lr_min: float
    lr_max: float
    epochs: int
    image_size: int
    min_test_accuracy: float


@dataclass(frozen=True)
class GateSettings:
    policy: str
    regression_tolerance: float


def template_parameters() -> tuple[dict[str, str], dict[str, str]]:
    """(template.yaml defaults, samconfig.toml's local overrides), read the way sam reads them."""
    from mlops.local.template import load_template, read_parameter_overrides

    template = load_template(REPO_ROOT / "template.yaml")
    defaults = {
        name: str(spec["Default"])
        for name, spec in template["Parameters"].items()
        if "Default" in spec
    }
    local = read_parameter_overrides(REPO_ROOT / "samconfig.toml", "local")
    return defaults, local


def spaces() -> tuple[dict[str, Space], GateSettings]:
    defaults, local = template_parameters()
    demo = {**defaults, **local}

    def space(name: str, values: dict[str, str], lr_min: float | None = None) -> Space:
        return Space(
            name=name,
            models=tuple(values["Models"].split(",")),
            batch_sizes=tuple(int(b) for b in values["BatchSizes"].split(",")),
            lr_min=lr_min if lr_min is not None else float(values["LearningRateMin"]),
            lr_max=float(values["LearningRateMax"]),
            epochs=int(demo["Epochs"]),
            image_size=int(demo["ImageSize"]),
            min_test_accuracy=float(values["MinTestAccuracy"]),
        )

    lr_min = max(float(defaults["LearningRateMin"]), FROM_SCRATCH_LR_MIN)
    found = {"demo": space("demo", demo), "default": space("default", defaults, lr_min)}
    gate = GateSettings(defaults["GatePolicy"], float(defaults["RegressionTolerance"]))
    return found, gate


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def shape_image(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB image of class `kind`: bars or a disc in one random colour on another, noisy."""
    background = rng.uniform(0, 255, 3)
    foreground = (background + rng.uniform(90, 165, 3)) % 256
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 2:
        cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
        radius = rng.uniform(size * 0.2, size * 0.35)
        mask = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
    else:
        period = rng.integers(4, 8)
        phase = rng.integers(0, period)
        mask = ((y if kind == 0 else x) + phase) % period < period / 2
    image = np.where(mask[..., None], foreground, background)
    image = image + rng.normal(0, 12, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def shapes(settings: Settings, per_class: int, size: int = 24, seed: int = 0) -> Path:
    """The shapes data set in the train|valid|test/NNN.label layout (cached per run)."""
    from PIL import Image

    root = settings.work_dir / "data" / f"shapes-{per_class}x{size}"
    if (root / "test").is_dir():
        return root
    rng = np.random.default_rng(seed)
    n_valid = n_test = max(2, round(per_class * 0.15))
    for kind, label in enumerate(SHAPE_CLASSES):
        for i in range(per_class):
            split = "valid" if i < n_valid else "test" if i < n_valid + n_test else "train"
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(shape_image(kind, size, rng), mode="RGB").save(folder / f"{i:04d}.png")
    return root


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training job to make and judge."""

    label: str
    healthy: bool
    kind: str  # "healthy" or one of BROKEN_KINDS
    dataset: str
    space: str
    model: str
    batch_size: int
    lr: float
    seed: int
    epochs: int
    image_size: int
    min_test_accuracy: float
    per_class: int
    outcome: dict[str, Any] = field(default_factory=dict)


def image_size_for(dataset: str, space: Space) -> int:
    """Digits at 16 px for the demo's space and at its ImageSize for the default's; shapes 24 px."""
    if dataset == "shapes":
        return SHAPES_SIZE
    return space.image_size if space.name == "default" else DIGITS_SIZE


def per_class_for(dataset: str, space: Space, quick: bool) -> int:
    """Images a class: 4x the base for shapes (3 classes) and for the default space's digits."""
    base = QUICK_PER_CLASS if quick else PER_CLASS
    return base if dataset == "digits" and space.name != "default" else 4 * base


def data_key(run: Run) -> tuple[str, int, int]:
    return run.dataset, run.image_size, run.per_class


def datasets(settings: Settings, runs: list[Run]) -> dict[tuple[str, int, int], Path]:
    """Every (data set, image size, images a class) the runs train on, written once."""
    data: dict[tuple[str, int, int], Path] = {}
    for key in sorted({data_key(r) for r in runs}):
        dataset, size, per_class = key
        if dataset == "digits":
            data[key] = digits(settings, per_class, size)
        else:
            data[key] = shapes(settings, per_class, size)
    return data


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def plan_runs(found: dict[str, Space], quick: bool) -> list[Run]:
    """Healthy: the demo's own corners, then draws from both spaces; broken: 3 seeds a kind."""
    demo, default = found["demo"], found["default"]
    rng = random.Random(11)
    runs: list[Run] = []

    def add(
        kind: str,
        dataset: str,
        space: Space,
        model: str,
        bs: int,
        lr: float,
        seed: int,
        epochs: int | None = None,
    ) -> None:
        image_size = image_size_for(dataset, space)
        runs.append(
            Run(
                label=f"{kind}/{dataset}/{space.name}/{model}/bs{bs}/lr{lr:.4g}/seed{seed}",
                healthy=kind == "healthy",
                kind=kind,
                dataset=dataset,
                space=space.name,
                model=model,
                batch_size=bs,
                lr=lr,
                seed=seed,
                epochs=epochs or space.epochs,
                image_size=image_size,
                min_test_accuracy=space.min_test_accuracy,
                per_class=per_class_for(dataset, space, quick),
            )
        )

    # Every configuration the demo can pick: its models x batch sizes at both ends of its
    # learning-rate range, on both data sets.
    seed = 0
    for dataset in ("digits", "shapes"):
        for model in demo.models:
            for bs in demo.batch_sizes:
                for lr in (demo.lr_min, demo.lr_max):
                    add("healthy", dataset, demo, model, bs, lr, seed)
                    seed += 1
    draws = 0 if quick else 8
    for i in range(draws):
        dataset = ("digits", "shapes")[i % 2]
        lr = log_uniform(rng, demo.lr_min, demo.lr_max)
        add(
            "healthy",
            dataset,
            demo,
            rng.choice(demo.models),
            rng.choice(demo.batch_sizes),
            lr,
            seed,
        )
        seed += 1
    for i in range(draws):
        dataset = ("digits", "shapes")[i % 2]
        # resnet50 costs about 3x resnet18 here: drawn, but at most once per data set
        models = [m for m in default.models if m != "resnet50"] if i >= 2 else list(default.models)
        lr = log_uniform(rng, default.lr_min, default.lr_max)
        add(
            "healthy",
            dataset,
            default,
            rng.choice(models),
            rng.choice(default.batch_sizes),
            lr,
            seed,
        )
        seed += 1
    kinds = BROKEN_KINDS[:2] if quick else BROKEN_KINDS
    for kind in kinds:
        for broken_seed in range(1 if quick else 3):
            dataset = "shapes" if broken_seed == 2 else "digits"
            model, bs = demo.models[0], demo.batch_sizes[0]
            lr = DIVERGING_LR if kind == "diverging-lr" else demo.lr_max
            add(kind, dataset, demo, model, bs, lr, 100 + broken_seed, BROKEN_EPOCHS)
    return runs


def train(run: Run, data: Path, job_dir: Path) -> dict[str, Any]:
    """Train one job as the profiled retrain would; return its rule statuses and accuracy."""
    config = job_dir / "debughookconfig.json"
    job_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(pipeline_hook_config(job_dir / "tensors")))
    arguments: dict[str, Any] = {
        "model": run.model,
        "epochs": run.epochs,
        "batch_size": run.batch_size,
        "lr": run.lr,
        "image_size": run.image_size,
        "pretrained": "false",
        "hflip": "false",
        "workers": 0,
        "seed": run.seed,
        "run_rules": "true",
    }
    if run.kind not in ("healthy", "diverging-lr"):
        arguments["inject_fault"] = run.kind
    env = {**SINGLE_THREAD_ENV, "SMDEBUG_CONFIG_FILE_PATH": str(config)}
    try:
        child = run_training(data, job_dir, arguments, timeout_s=900, **env)
    except ChildFailed as error:
        return {"failed": str(error)[-500:]}
    history = json.loads((job_dir / "output" / "history.json").read_text())
    statuses = json.loads((job_dir / "output" / "rule_statuses.json").read_text())
    # The trial (weights and ReLU inputs) and the model take about 300 MB a job: keep the
    # log and the outputs only.
    for bulky in ("tensors", "model"):
        shutil.rmtree(job_dir / bulky, ignore_errors=True)
    return {
        "seconds": child.wall_s,
        "test_accuracy": history["test"]["accuracy"],
        "statuses": statuses,
    }


def judge(run: Run, trained: dict[str, Any], gate: GateSettings) -> dict[str, Any]:
    """The pipeline's gate over one job's rule statuses and test accuracy."""
    if "failed" in trained:  # a job that fails never reaches the gate: nothing is deployed
        return {"blocked": True, "fired": [], "blocked_by": ["TrainingJobFailed"], **trained}
    policy = GatePolicy.parse(gate.policy)
    statuses = [
        RuleStatus(s["RuleConfigurationName"], s["RuleEvaluationStatus"], s["StatusDetails"], "job")
        for s in trained["statuses"]
    ]
    accuracy = trained["test_accuracy"]
    # The bench's jobs run without SageMaker Debugger: train.py's own rules only, no baseline.
    verdict = decide(
        statuses,
        policy,
        expected_rules(debugger_available=False),
        accuracy,
        run.min_test_accuracy,
        None,
        gate.regression_tolerance,
    )
    return {
        "blocked": not verdict.approved,
        "fired": [s.rule for s in statuses if s.status != "NoIssuesFound"],
        "blocked_by": verdict.blocking,
        "test_accuracy": accuracy,
        "seconds": trained["seconds"],
        "summary": verdict.summary[:400],
        "details": {s.rule: s.details[:300] for s in statuses if s.status != "NoIssuesFound"},
    }


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------


def tally(runs: list[Run]) -> dict[str, dict[str, int]]:
    """Per rule (and for the quality gate and the gate as a whole): fired / blocked counts."""
    table: dict[str, dict[str, int]] = {}
    for group, members in (
        ("healthy", [r for r in runs if r.healthy]),
        ("broken", [r for r in runs if not r.healthy]),
    ):
        for rule in (*RULE_NAMES, "MinTestAccuracy"):
            fired = sum(
                rule in r.outcome["fired"]
                or (rule == "MinTestAccuracy" and rule in r.outcome["blocked_by"])
                for r in members
            )
            table.setdefault(rule, {})[group] = fired
        table.setdefault("gate blocked", {})[group] = sum(r.outcome["blocked"] for r in members)
        table.setdefault("runs", {})[group] = len(members)
    return table


def by_kind(runs: list[Run]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for run in runs:
        entry = kinds.setdefault(run.kind, {"runs": 0, "blocked": 0, "blocked_by": {}})
        entry["runs"] += 1
        entry["blocked"] += int(run.outcome["blocked"])
        for check in run.outcome["blocked_by"]:
            entry["blocked_by"][check] = entry["blocked_by"].get(check, 0) + 1
    return kinds


def format_rule_table(table: dict[str, dict[str, int]], kinds: dict[str, dict[str, Any]]) -> str:
    healthy, broken = table["runs"]["healthy"], table["runs"]["broken"]
    lines = [
        f"| check              | healthy fired (of {healthy}) | broken fired (of {broken}) |",
        "|--------------------|------------------|-----------------|",
    ]
    for rule, counts in table.items():
        if rule != "runs":
            lines.append(f"| {rule:<18} | {counts['healthy']:>16} | {counts['broken']:>15} |")
    lines += [
        "",
        "| broken kind     | blocked | by (runs)                                  |",
        "|-----------------|---------|--------------------------------------------|",
    ]
    for kind, entry in kinds.items():
        if kind == "healthy":
            continue
        by = ", ".join(f"{k} {v}" for k, v in sorted(entry["blocked_by"].items()))
        lines.append(f"| {kind:<15} | {entry['blocked']}/{entry['runs']:<5} | {by:<42} |")
    return "\n".join(lines)


def run(settings: Settings) -> dict[str, Any]:
    found, gate = spaces()
    runs = plan_runs(found, settings.quick)
    data = datasets(settings, runs)
    work = settings.scratch(NAME)

    def one(i: int) -> None:
        planned = runs[i]
        trained = train(planned, data[data_key(planned)], work / f"run-{i:02d}")
        planned.outcome = judge(planned, trained, gate)
        verdict = "BLOCKED" if planned.outcome["blocked"] else "approved"
        log(
            f"{NAME}: {i + 1}/{len(runs)} {planned.label}: {verdict} "
            f"acc={planned.outcome.get('test_accuracy')} "
            f"blocked_by={planned.outcome['blocked_by']} fired={planned.outcome['fired']}"
        )

    # Each job has one intra-op thread (SINGLE_THREAD_ENV): PARALLEL of them fill the cores.
    # The default space's draws (deeper models, 32-px digits) cost most: start them first so
    # the pool does not end waiting on one long job.
    order = sorted(range(len(runs)), key=lambda i: runs[i].space != "default")
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        list(pool.map(one, order))
    table, kinds = tally(runs), by_kind(runs)
    printed = format_rule_table(table, kinds)
    print(printed, file=sys.stderr, flush=True)
    healthy = [r for r in runs if r.healthy]
    broken = [r for r in runs if not r.healthy]
    checks = [
        at_most("healthy runs blocked by the gate", table["gate blocked"]["healthy"], 0),
        info("  healthy runs", len(healthy)),
        *(
            info(f"  healthy runs where {rule} fired", table[rule]["healthy"])
            for rule in RULE_NAMES
        ),
        at_least(
            "broken runs blocked / broken runs",
            table["gate blocked"]["broken"] / len(broken) if broken else None,
            1.0,
        ),
        info("  broken runs", len(broken)),
        *(
            info(f"  broken runs where {rule} fired", table[rule]["broken"])
            for rule in (*RULE_NAMES, "MinTestAccuracy")
        ),
    ]
    measurements = {
        "spaces": {name: asdict(space) for name, space in found.items()},
        "gate": asdict(gate),
        "per_class": {
            f"{dataset}/{size}px": per_class for dataset, size, per_class in sorted(data)
        },
        "table": table,
        "by_kind": kinds,
        "runs": [asdict(r) for r in runs],
    }
    notes = [
        "table (rule x healthy/broken: runs where the rule fired; gate blocked counts):",
        *printed.splitlines(),
        f"default space from scratch: lr drawn over [{found['default'].lr_min}, "
        f"{found['default'].lr_max}] (template LearningRateMin assumes pretrained weights)",
    ]
    return result(NAME, TITLE, checks, measurements, notes)
