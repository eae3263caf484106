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
    python: str, code_dir: Path, repo_root: Path, tensor_dir: Path, names: list[str]
) -> tuple[list[str], Path, dict[str, str]] | None:
    """The rules CLI to run: the job's own rules.py first, then the repo's training.rules."""
    tail = [str(tensor_dir), "--json", "--rules", ",".join(names)]
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


def evaluate_debug_rules(
    *,
    python: str,
    tensor_dir: Path,
    rule_names: list[str],
    code_dir: Path,
    repo_root: Path,
    base_env: dict[str, str],
    log_file: Path,
    on_process: Any = None,
) -> dict[str, RuleOutcome]:
    """Run the rules CLI once for all rules; map each rule name to its outcome.

    Every rule gets an outcome: a rule the CLI did not answer for, or a CLI that failed, is an
    ``Error`` whose details say why, so the job never shows a rule stuck InProgress.
    """
    if not tensor_dir.is_dir() or not any(tensor_dir.iterdir()):
        reason = (
            f"no tensors were saved under {tensor_dir}: the training script must create its "
            "smdebug hook from SMDEBUG_CONFIG_FILE_PATH"
        )
        return {name: RuleOutcome("Error", reason) for name in rule_names}
    command = _rules_command(python, code_dir, repo_root, tensor_dir, rule_names)
    if command is None:
        reason = (
            f"no rules implementation: neither {code_dir / 'rules.py'} nor "
            f"{repo_root / 'training' / 'rules.py'} exists"
        )
        return {name: RuleOutcome("Error", reason) for name in rule_names}
    argv, cwd, extra_env = command
    env = {**base_env, **extra_env}
    process = ManagedProcess(argv, cwd, env, name=f"rules {','.join(rule_names)}")
    if on_process is not None:
        on_process(process)
    output_lines = list(process.lines())
    code = process.wait()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("".join(output_lines))
    return _outcomes_from_output("".join(output_lines), code, rule_names)


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
