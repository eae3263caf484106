"""Debugger and profiler rule evaluation for local training jobs.

On AWS each DebugRuleConfiguration runs as a processing job in a rule image after (and while)
the training job runs. Locally the project's own rules (docs/contracts.md, "Rules") run over
the tensors the job saved: ``python -m training.rules <tensor dir> --json --rules A,B``. The
job's own source (its ``rules.py``) is preferred, because those rules match the code that saved
the tensors; the repository's ``training`` package is the fallback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.local.sagemaker.processes import ManagedProcess

logger = logging.getLogger(__name__)

RULE_STATUS_WORDS = frozenset({"NoIssuesFound", "IssuesFound", "Error"})


@dataclass
class RuleOutcome:
    status: str
    details: str


def rule_to_invoke(configuration: dict[str, Any]) -> str | None:
    return (configuration.get("RuleParameters") or {}).get("rule_to_invoke")


def _rules_command(
    python: str, code_dir: Path, repo_root: Path, tail: list[str]
) -> tuple[list[str], Path, dict[str, str]] | None:
    """The rules CLI to run: the job's own rules.py first, then the repo's training.rules."""
    if (code_dir / "rules.py").is_file():
        return [python, "-m", "rules", *tail], code_dir, {"PYTHONPATH": str(code_dir)}
    if (repo_root / "training" / "rules.py").is_file():
        return [python, "-m", "training.rules", *tail], repo_root, {"PYTHONPATH": str(repo_root)}
    return None


def extract_json_list(text: str) -> list[Any] | None:
    """The last JSON list in mixed output (rules may log around their JSON answer)."""
    decoder = json.JSONDecoder()
    starts = [i for i in range(len(text)) if text[i] == "[" and (i == 0 or text[i - 1] == "\n")]
    for start in reversed(starts):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, list) and all(isinstance(item, dict) for item in value):
            return value
    return None


def rule_batches(configurations: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split configurations so that no batch names a rule twice (one CLI run per batch; the
    CLI answers per rule name, so two configurations of one rule need two runs)."""
    batches: list[list[dict[str, Any]]] = []
    for configuration in configurations:
        rule = rule_to_invoke(configuration)
        batch = next((b for b in batches if rule not in {rule_to_invoke(c) for c in b}), None)
        if batch is None:
            batch = []
            batches.append(batch)
        batch.append(configuration)
    return batches


def _cli_tail(tensor_dir: Path, batch: list[dict[str, Any]]) -> list[str]:
    """Arguments of one run: the rules, and every other RuleParameter as --param Rule.k=v."""
    tail = [str(tensor_dir), "--json", "--rules", ",".join(str(rule_to_invoke(c)) for c in batch)]
    for configuration in batch:
        rule = rule_to_invoke(configuration)
        for key, value in (configuration.get("RuleParameters") or {}).items():
            if key != "rule_to_invoke":
                tail += ["--param", f"{rule}.{key}={value}"]
    return tail


def evaluate_debug_rules(
    *,
    python: str,
    tensor_dir: Path,
    configurations: list[dict[str, Any]],
    code_dir: Path,
    repo_root: Path,
    base_env: dict[str, str],
    log_file: Path,
) -> dict[str, RuleOutcome]:
    """Evaluate DebugRuleConfigurations that name ``rule_to_invoke``; outcome per
    RuleConfigurationName.

    Every configuration gets an outcome: one the CLI did not answer for, or a CLI that failed,
    is an ``Error`` whose details say why, so no rule stays InProgress.
    """
    names = [c["RuleConfigurationName"] for c in configurations]
    if not tensor_dir.is_dir() or not any(tensor_dir.iterdir()):
        reason = (
            f"no tensors were saved under {tensor_dir}: the training script must create its "
            "smdebug hook from SMDEBUG_CONFIG_FILE_PATH"
        )
        return {name: RuleOutcome("Error", reason) for name in names}
    outcomes: dict[str, RuleOutcome] = {}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    for batch in rule_batches(configurations):
        command = _rules_command(python, code_dir, repo_root, _cli_tail(tensor_dir, batch))
        if command is None:
            reason = (
                f"no rules implementation: neither {code_dir / 'rules.py'} nor "
                f"{repo_root / 'training' / 'rules.py'} exists"
            )
            outcomes |= {c["RuleConfigurationName"]: RuleOutcome("Error", reason) for c in batch}
            continue
        argv, cwd, extra_env = command
        process = ManagedProcess(argv, cwd, {**base_env, **extra_env}, name="rules")
        output = "".join(process.lines())
        code = process.wait()
        with log_file.open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n{output}\n")
        answers = _outcomes_from_output(output, code, [str(rule_to_invoke(c)) for c in batch])
        for configuration in batch:
            outcomes[configuration["RuleConfigurationName"]] = answers[
                str(rule_to_invoke(configuration))
            ]
    return outcomes


def _outcomes_from_output(output: str, code: int, rule_names: list[str]) -> dict[str, RuleOutcome]:
    answers = extract_json_list(output) if code == 0 else None
    if answers is None:
        last_line = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "")
        reason = f"rule evaluation exited with code {code}: {last_line}"[:1024]
        return {name: RuleOutcome("Error", reason) for name in rule_names}
    by_name = {str(item.get("RuleConfigurationName")): item for item in answers}
    outcomes = {}
    for name in rule_names:
        item = by_name.get(name)
        if item is None:
            outcomes[name] = RuleOutcome("Error", f"the rules CLI gave no result for {name}")
            continue
        status = item.get("RuleEvaluationStatus", "Error")
        if status not in RULE_STATUS_WORDS:
            status, details = "Error", f"unknown rule status {status!r}"
        else:
            details = str(item.get("StatusDetails") or "")
        outcomes[name] = RuleOutcome(status, details[:1024])
    return outcomes


def profiler_rule_outcome(configuration: dict[str, Any]) -> RuleOutcome:
    """Profiler rules are not re-implemented locally; the one that has an honest answer here
    (no GPU, so nothing can be under-utilised) says so, the others say they were not run."""
    name = configuration.get("RuleConfigurationName", "")
    rule = (configuration.get("RuleParameters") or {}).get("rule_to_invoke", name)
    if rule == "LowGPUUtilization":
        return RuleOutcome(
            "NoIssuesFound",
            "the local cloud trains on CPU only (SM_NUM_GPUS=0): no GPU to be under-utilised",
        )
    return RuleOutcome(
        "Error",
        f"profiler rule {rule} is not evaluated by the local cloud; its CPU and memory usage "
        "is in the job's resource_usage.json",
    )
