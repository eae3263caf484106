"""Debugger and Profiler rules of a training job, evaluated once the job ended.

On AWS each rule runs as its own processing job beside the training job and finishes after it;
here the debug rules named by RuleParameters.rule_to_invoke run over the saved tensors
(rules.py) after the job, and their statuses land in DescribeTrainingJob and describe.json.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mlops.local.faults import Faults
from mlops.local.sagemaker.aws import aws_env_for_children
from mlops.local.sagemaker.rules import (
    RuleOutcome,
    evaluate_debug_rules,
    profiler_rule_outcome,
    rule_to_invoke,
)
from mlops.local.sagemaker.training_container import JobContainer
from mlops.local.sagemaker.training_outputs import write_description

logger = logging.getLogger(__name__)


class RuleEvaluation:
    """The rules of one job that ended (only with Debugger in the account, as on AWS)."""

    def __init__(self, container: JobContainer, faults: Faults, shutting_down: bool) -> None:
        self.container = container
        self.job = container.job
        self.config = container.config
        self.faults = faults
        self.shutting_down = shutting_down

    def run(self) -> None:
        """Debug rules over the saved tensors (after the job, as AWS's rule jobs finish later)."""
        job = self.job
        if not job.debugger_available:
            return
        for configuration in job.request.get("ProfilerRuleConfigurations", []):
            outcome = profiler_rule_outcome(configuration)
            job.set_rule_status(
                "profiler", configuration["RuleConfigurationName"], outcome.status, outcome.details
            )
        configurations = job.request.get("DebugRuleConfigurations", [])
        if not configurations:
            return
        if job.status == "Failed" or self.shutting_down:
            reason = (
                "the training job failed; the rule was not evaluated"
                if job.status == "Failed"
                else "the local SageMaker shut down before the rule was evaluated"
            )
            for configuration in configurations:
                job.set_rule_status(
                    "debug", configuration["RuleConfigurationName"], "Stopped", reason
                )
            write_description(job)
            return
        runnable = []
        for configuration in configurations:
            name = configuration["RuleConfigurationName"]
            if self.faults.hits("rule_error", f"{job.name}/{name}"):
                job.set_rule_status(
                    "debug",
                    name,
                    "Error",
                    "InternalServerError: the rule's evaluation job exited before reporting "
                    "(injected fault rule_error)",
                )
            elif rule_to_invoke(configuration) is None:
                job.set_rule_status(
                    "debug",
                    configuration["RuleConfigurationName"],
                    "Error",
                    "the local cloud evaluates rules named by RuleParameters.rule_to_invoke "
                    "only (AWS's built-in rule images do not run locally)",
                )
            else:
                runnable.append(configuration)
        if runnable:
            self._run_rules(runnable)
        write_description(job)

    def _run_rules(self, configurations: list[dict[str, Any]]) -> None:
        job = self.job
        try:
            outcomes = evaluate_debug_rules(
                python=self.config.python,
                tensor_dir=self.container.tensor_dir(),
                configurations=configurations,
                code_dir=self.container.dirs["code"],
                repo_root=self.config.repo_root,
                base_env={**os.environ, **aws_env_for_children(self.container.clients)},
                log_file=job.job_dir / "logs" / "rules.log",
            )
        except OSError as error:
            logger.exception("rules of %s could not run", job.name)
            outcomes = {
                c["RuleConfigurationName"]: RuleOutcome("Error", f"rules could not run: {error}")
                for c in configurations
            }
        for name, outcome in outcomes.items():
            job.set_rule_status("debug", name, outcome.status, outcome.details)
