"""Retrain the best configuration with tensors saved, system profiling and rules.

The job gets the best trial's tuned hyperparameters and ``run-rules=true``: train.py saves
tensors with its own hook settings, evaluates the project's rules over them and samples the
system profile itself, all into the job's output. Only when the account still has SageMaker
Debugger (template parameter DebuggerAvailable) does the request add a DebugHookConfig, a
ProfilerConfig and AWS's built-in Debugger rules (and the ProfilerReport / LowGPUUtilization
profiler rules), built with smdebug_rulesconfig exactly as the SageMaker Python SDK builds
them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import smdebug_rulesconfig
from pipeline_common.aws import client, create_once
from pipeline_common.config import CommonSettings, TrainingSettings
from pipeline_common.kit import count, logger, step
from pipeline_common.models import BestTrial, StepModel, TrainingStarted, ValidatedDataset
from pipeline_common.naming import training_job_name
from pipeline_common.source import load_metric_definitions, require_training_source
from pipeline_common.training import build_training_request
from smdebug_rulesconfig.profiler_rules import rules as profiler_rules

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
sagemaker = client("sagemaker")

BUILTIN_DEBUG_RULES = (
    "loss_not_decreasing",
    "vanishing_gradient",
    "poor_weight_initialization",
    "overfit",
    "overtraining",
)
BUILTIN_PROFILER_RULES = ("ProfilerReport", "LowGPUUtilization")


class StartTrainingInput(StepModel):
    execution_name: str
    dataset: ValidatedDataset
    best: BestTrial


def builtin_debug_rules(image: str) -> list[dict[str, Any]]:
    """DebugRuleConfigurations for AWS's built-in rules (RuleParameters as strings)."""
    rules = []
    for factory in BUILTIN_DEBUG_RULES:
        config = getattr(smdebug_rulesconfig, factory)()["DebugRuleConfiguration"]
        rules.append(
            {
                "RuleConfigurationName": config["RuleConfigurationName"],
                "RuleEvaluatorImage": image,
                "RuleParameters": {k: str(v) for k, v in config["RuleParameters"].items()},
            }
        )
    return rules


def builtin_profiler_rules(image: str) -> list[dict[str, Any]]:
    """ProfilerRuleConfigurations for ProfilerReport and LowGPUUtilization."""
    configs = []
    for name in BUILTIN_PROFILER_RULES:
        rule = getattr(profiler_rules, name)()
        configs.append(
            {
                "RuleConfigurationName": rule.rule_name,
                "RuleEvaluatorImage": image,
                "RuleParameters": {k: str(v) for k, v in rule.rule_parameters.items()},
            }
        )
    return configs


def create_training_job(request: dict[str, Any]) -> bool:
    """CreateTrainingJob; False when this run already created it (a retried invocation)."""
    return create_once(
        sagemaker.create_training_job, "CreateTrainingJob", request["TrainingJobName"], request
    )


@step(StartTrainingInput)
def lambda_handler(event: StartTrainingInput, context: LambdaContext) -> TrainingStarted:
    common, training = CommonSettings.from_env(), TrainingSettings.from_env()
    job_name = training_job_name(common.project_name, event.dataset.name, event.execution_name)
    metric_definitions = load_metric_definitions(s3, common.artifacts_bucket)
    require_training_source(s3, common.artifacts_bucket)
    debugger = training.debugger_available
    request = build_training_request(
        job_name=job_name,
        common=common,
        training=training,
        dataset=event.dataset.name,
        execution=event.execution_name,
        channel_uris=event.dataset.channels,
        metric_definitions=metric_definitions,
        tuned_hyperparameters=event.best.hyperparameters,
        debugger=debugger,
        debug_rules=builtin_debug_rules(training.rule_evaluator_image) if debugger else None,
        profiler_rules=builtin_profiler_rules(training.rule_evaluator_image) if debugger else None,
    )
    created = create_training_job(request)
    logger.info(
        {
            "operation": "CreateTrainingJob",
            "job": job_name,
            "created": created,
            "from_trial": event.best.training_job_name,
            "builtin_rules": debugger,
        }
    )
    if created:
        count("ProfiledTrainingsStarted")
    return TrainingStarted(job_name=job_name, builtin_rules=debugger)
