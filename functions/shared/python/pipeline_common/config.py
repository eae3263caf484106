"""Configuration of the functions, read from environment variables set by template.yaml.

Each handler loads only the settings it needs, inside the invocation, so that a missing or
malformed variable fails that one step with a :class:`ConfigurationError` naming the
variable and the template parameter behind it, instead of breaking the import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline_common.errors import ConfigurationError

TUNING_STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
MODELS = ("resnet18", "resnet34", "resnet50")
APPROVAL_MODES = ("auto", "manual")
# Template parameter DeploymentStrategy -> SageMaker's TrafficRoutingConfiguration Type.
DEPLOYMENT_STRATEGIES = {"AllAtOnce": "ALL_AT_ONCE", "Canary": "CANARY", "Linear": "LINEAR"}
# SageMaker's default quota "Number of instances per training job" (adjustable in Service
# Quotas); the template's TrainingInstanceCount has the same MaxValue.
MAX_TRAINING_INSTANCES = 20
# How a training job reads its channels (template parameter InputMode): File copies each
# channel to the instance before the script starts; FastFile shows the S3 objects as files that
# are streamed as they are read (docs/training-at-scale.md). Pipe is left out: train.py reads
# files, and a Pipe channel is a FIFO of records.
INPUT_MODES = ("File", "FastFile")


def env_str(name: str, default: str | None = None) -> str:
    """Return a non-empty variable, or ``default``; raise when neither exists."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is not None:
        return default
    raise ConfigurationError(
        f"environment variable {name} is not set; it comes from template.yaml "
        f"(redeploy the stack, or export it when running the function by hand)"
    )


def env_int(name: str, default: int | None = None, minimum: int | None = None) -> int:
    """Return an integer variable, checked against ``minimum``."""
    raw = env_str(name, None if default is None else str(default))
    try:
        value = int(raw)
    except ValueError as e:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from e
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name}={value} is below the minimum of {minimum}")
    return value


def env_float(
    name: str,
    default: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Return a float variable, checked against ``minimum`` and ``maximum``."""
    raw = env_str(name, None if default is None else repr(default))
    try:
        value = float(raw)
    except ValueError as e:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from e
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name}={value} is below the minimum of {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name}={value} is above the maximum of {maximum}")
    return value


def env_bool(name: str, default: bool | None = None) -> bool:
    """Return a boolean variable written as true/false (any case), yes/no or 1/0."""
    raw = env_str(name, None if default is None else str(default).lower()).lower()
    if raw in ("true", "yes", "1"):
        return True
    if raw in ("false", "no", "0"):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean; use true or false")


def env_choice_list(name: str, choices: tuple[str, ...], default: str) -> list[str]:
    """A comma-separated subset of ``choices`` (e.g. ``MODELS=resnet18,resnet34``)."""
    values = [v.strip() for v in env_str(name, default).split(",") if v.strip()]
    unknown = [v for v in values if v not in choices]
    if not values or unknown:
        raise ConfigurationError(
            f"{name}={env_str(name, default)!r} must list some of {', '.join(choices)}"
        )
    return values


def env_int_list(name: str, default: str | None = None) -> list[int]:
    """Return a comma-separated list of positive integers (e.g. ``BATCH_SIZES=32,64``)."""
    raw = env_str(name, default)
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError as e:
        raise ConfigurationError(f"{name}={raw!r} is not a comma-separated list of integers") from e
    if not values or any(v <= 0 for v in values):
        raise ConfigurationError(f"{name}={raw!r} must list at least one positive integer")
    return values


@dataclass(frozen=True)
class CommonSettings:
    """Names every step needs: the project prefix and the two buckets."""

    project_name: str
    data_bucket: str
    artifacts_bucket: str
    region: str

    @classmethod
    def from_env(cls) -> CommonSettings:
        return cls(
            project_name=env_str("PROJECT_NAME"),
            data_bucket=env_str("DATA_BUCKET"),
            artifacts_bucket=env_str("ARTIFACTS_BUCKET"),
            region=env_str("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
        )


@dataclass(frozen=True)
class TrainingSettings:
    """What a training job looks like: image, instances, limits, the search space."""

    role_arn: str
    training_image: str
    instance_type: str
    epochs: int
    image_size: int
    models: list[str]
    batch_sizes: list[int]
    learning_rate_min: float
    learning_rate_max: float
    pretrained: bool
    use_spot_instances: bool
    max_runtime_seconds: int
    max_jobs: int
    max_parallel_jobs: int
    strategy: str
    debugger_available: bool
    rule_evaluator_image: str
    seed: int = 0
    # Instances per training job (trials and retrain); above 1 train.py runs data-parallel
    # under the container's torchrun (docs/training-at-scale.md).
    instance_count: int = 1
    # AlgorithmSpecification.TrainingInputMode and every channel's InputMode.
    input_mode: str = "File"

    @classmethod
    def from_env(cls) -> TrainingSettings:
        strategy = env_str("TUNING_STRATEGY", "Bayesian")
        if strategy not in TUNING_STRATEGIES:
            raise ConfigurationError(
                f"TUNING_STRATEGY={strategy!r} is not one of {', '.join(TUNING_STRATEGIES)} "
                f"(template parameter TuningStrategy)"
            )
        lr_min = env_float("LEARNING_RATE_MIN", minimum=1e-12)
        lr_max = env_float("LEARNING_RATE_MAX", minimum=1e-12)
        if lr_min >= lr_max:
            raise ConfigurationError(
                f"LEARNING_RATE_MIN={lr_min} must be below LEARNING_RATE_MAX={lr_max} "
                f"(template parameters LearningRateMin / LearningRateMax)"
            )
        max_jobs = env_int("MAX_JOBS", 6, minimum=1)
        max_parallel = env_int("MAX_PARALLEL_JOBS", 2, minimum=1)
        if max_parallel > max_jobs:
            raise ConfigurationError(
                f"MAX_PARALLEL_JOBS={max_parallel} exceeds MAX_JOBS={max_jobs}; "
                f"lower MaxParallelJobs or raise MaxJobs"
            )
        debugger = env_bool("DEBUGGER_AVAILABLE", False)
        rule_image = os.environ.get("RULE_EVALUATOR_IMAGE", "").strip()
        if debugger and not rule_image:
            raise ConfigurationError(
                "DEBUGGER_AVAILABLE is true but RULE_EVALUATOR_IMAGE is empty; set the "
                "RuleEvaluatorImage parameter (see docs/deploy.md) or DebuggerAvailable=false"
            )
        instance_count = env_int("TRAINING_INSTANCE_COUNT", 1, minimum=1)
        if instance_count > MAX_TRAINING_INSTANCES:
            raise ConfigurationError(
                f"TRAINING_INSTANCE_COUNT={instance_count} is above SageMaker's default quota of "
                f"{MAX_TRAINING_INSTANCES} instances per training job (template parameter "
                "TrainingInstanceCount; raise the quota in Service Quotas first)"
            )
        input_mode = env_str("INPUT_MODE", "File")
        if input_mode not in INPUT_MODES:
            raise ConfigurationError(
                f"INPUT_MODE={input_mode!r} is not one of {', '.join(INPUT_MODES)} "
                "(template parameter InputMode)"
            )
        return cls(
            role_arn=env_str("SAGEMAKER_ROLE_ARN"),
            training_image=env_str("TRAINING_IMAGE"),
            instance_type=env_str("TRAINING_INSTANCE_TYPE"),
            epochs=env_int("EPOCHS", 10, minimum=1),
            image_size=env_int("IMAGE_SIZE", 224, minimum=8),
            models=env_choice_list("MODELS", MODELS, ",".join(MODELS)),
            batch_sizes=env_int_list("BATCH_SIZES", "32,64"),
            learning_rate_min=lr_min,
            learning_rate_max=lr_max,
            pretrained=env_bool("PRETRAINED", True),
            use_spot_instances=env_bool("USE_SPOT_INSTANCES", False),
            max_runtime_seconds=env_int("MAX_RUNTIME_SECONDS", 7200, minimum=60),
            max_jobs=max_jobs,
            max_parallel_jobs=max_parallel,
            strategy=strategy,
            debugger_available=debugger,
            rule_evaluator_image=rule_image,
            seed=env_int("SEED", 0, minimum=0),
            instance_count=instance_count,
            input_mode=input_mode,
        )


@dataclass(frozen=True)
class GateSettings:
    """The deploy gate: which rules block, the accuracy threshold and the tolerance."""

    policy_text: str
    min_test_accuracy: float
    regression_tolerance: float
    debugger_available: bool
    endpoint_name: str

    @classmethod
    def from_env(cls) -> GateSettings:
        return cls(
            policy_text=env_str("GATE_POLICY"),
            min_test_accuracy=env_float("MIN_TEST_ACCURACY", minimum=0.0, maximum=1.0),
            regression_tolerance=env_float("REGRESSION_TOLERANCE", 0.0, minimum=0.0, maximum=1.0),
            debugger_available=env_bool("DEBUGGER_AVAILABLE", False),
            endpoint_name=env_str("ENDPOINT_NAME"),
        )


def capture_percent() -> int:
    """DATA_CAPTURE_PERCENT (template parameter DataCaptureSamplingPercentage), 0-100."""
    percent = env_int("DATA_CAPTURE_PERCENT", 0, minimum=0)
    if percent > 100:
        raise ConfigurationError(f"DATA_CAPTURE_PERCENT={percent} is above 100")
    return percent


@dataclass(frozen=True)
class DeploySettings:
    """How the endpoint is (re)deployed: the blue/green traffic shifting and its alarms.

    ``strategy`` is the template's DeploymentStrategy (AllAtOnce, Canary, Linear); SageMaker
    limits a canary to 50 % of the new fleet and a linear step to 10-50 %, which the template
    parameters' ranges repeat. AutoRollbackConfiguration names ``error_alarm_name`` (the
    template's 5XX alarm) and, when the replaced model has a baseline, ``quality_alarm_name``,
    which the function puts for each update (pipeline_common.quality)."""

    role_arn: str
    instance_type: str
    endpoint_name: str
    error_alarm_name: str
    quality_alarm_name: str
    metrics_namespace: str
    bake_seconds: int
    strategy: str = "AllAtOnce"
    canary_percent: int = 20
    linear_step_percent: int = 25
    traffic_wait_seconds: int = 120
    low_confidence_increase: float = 0.25
    capture_percent: int = 0  # DataCaptureConfig's InitialSamplingPercentage; 0 captures nothing

    @classmethod
    def from_env(cls) -> DeploySettings:
        strategy = env_str("DEPLOYMENT_STRATEGY", "AllAtOnce")
        if strategy not in DEPLOYMENT_STRATEGIES:
            raise ConfigurationError(
                f"DEPLOYMENT_STRATEGY={strategy!r} is not one of "
                f"{', '.join(DEPLOYMENT_STRATEGIES)} (template parameter DeploymentStrategy)"
            )
        canary = env_int("CANARY_TRAFFIC_PERCENT", 20, minimum=1)
        if canary > 50:
            raise ConfigurationError(f"CANARY_TRAFFIC_PERCENT={canary} is above SageMaker's 50")
        step = env_int("LINEAR_STEP_PERCENT", 25, minimum=10)
        if step > 50:
            raise ConfigurationError(f"LINEAR_STEP_PERCENT={step} is above SageMaker's 50")
        wait = env_int("TRAFFIC_SHIFT_WAIT_SECONDS", 120, minimum=0)
        if wait > 3600:
            raise ConfigurationError(f"TRAFFIC_SHIFT_WAIT_SECONDS={wait} is above 3600")
        input_mode = env_str("INPUT_MODE", "File")
        if input_mode not in INPUT_MODES:
            raise ConfigurationError(
                f"INPUT_MODE={input_mode!r} is not one of {', '.join(INPUT_MODES)} "
                "(template parameter InputMode)"
            )
        return cls(
            role_arn=env_str("SAGEMAKER_ROLE_ARN"),
            instance_type=env_str("INFERENCE_INSTANCE_TYPE"),
            endpoint_name=env_str("ENDPOINT_NAME"),
            error_alarm_name=env_str("ROLLBACK_ALARM_NAME"),
            quality_alarm_name=env_str("QUALITY_ALARM_NAME"),
            metrics_namespace=env_str("POWERTOOLS_METRICS_NAMESPACE"),
            bake_seconds=env_int("DEPLOY_BAKE_SECONDS", 300, minimum=0),
            strategy=strategy,
            canary_percent=canary,
            linear_step_percent=step,
            traffic_wait_seconds=wait,
            low_confidence_increase=env_float(
                "LOW_CONFIDENCE_INCREASE", 0.25, minimum=0.0, maximum=1.0
            ),
            capture_percent=capture_percent(),
        )


RETRAIN_POLICIES = ("off", "notify", "retrain")


@dataclass(frozen=True)
class MonitorSettings:
    """What the drift monitor watches and what it does about drift (RetrainOnDrift)."""

    endpoint_name: str
    state_machine_arn: str
    topic_arn: str
    retrain_on_drift: str = "notify"
    retrain_min_interval_hours: float = 24.0
    settle_seconds: int = 300  # captures reach S3 this late; a check stops that far before now

    @classmethod
    def from_env(cls) -> MonitorSettings:
        policy = env_str("RETRAIN_ON_DRIFT", "notify")
        if policy not in RETRAIN_POLICIES:
            raise ConfigurationError(
                f"RETRAIN_ON_DRIFT={policy!r} is not one of {', '.join(RETRAIN_POLICIES)} "
                "(template parameter RetrainOnDrift)"
            )
        return cls(
            endpoint_name=env_str("ENDPOINT_NAME"),
            state_machine_arn=env_str("STATE_MACHINE_ARN"),
            topic_arn=env_str("NOTIFICATION_TOPIC_ARN"),
            retrain_on_drift=policy,
            retrain_min_interval_hours=env_float("RETRAIN_MIN_INTERVAL_HOURS", 24.0, minimum=0.0),
            settle_seconds=env_int("CAPTURE_SETTLE_SECONDS", 300, minimum=0),
        )


@dataclass(frozen=True)
class RegistrySettings:
    """What a registered model version serves with (the inference image and instance type)
    and who approves it: the gate alone (``auto``) or a person after the gate (``manual``)."""

    inference_image: str
    instance_type: str
    approval_mode: str = "auto"

    @classmethod
    def from_env(cls) -> RegistrySettings:
        mode = env_str("APPROVAL_MODE", "auto")
        if mode not in APPROVAL_MODES:
            raise ConfigurationError(f"APPROVAL_MODE={mode!r} must be one of {APPROVAL_MODES}")
        return cls(
            inference_image=env_str("INFERENCE_IMAGE"),
            instance_type=env_str("INFERENCE_INSTANCE_TYPE"),
            approval_mode=mode,
        )


@dataclass(frozen=True)
class ValidationSettings:
    """How many readable images a class needs per split (template parameters
    MinTrainImagesPerClass / MinEvalImagesPerClass)."""

    min_train_images: int
    min_eval_images: int

    @classmethod
    def from_env(cls) -> ValidationSettings:
        return cls(
            min_train_images=env_int("MIN_TRAIN_IMAGES_PER_CLASS", 5, minimum=1),
            min_eval_images=env_int("MIN_EVAL_IMAGES_PER_CLASS", 2, minimum=1),
        )

    def minimum(self, split: str) -> int:
        return self.min_train_images if split == "train" else self.min_eval_images
