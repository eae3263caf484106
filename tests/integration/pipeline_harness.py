"""Run statemachine/pipeline.asl.json in moto's Step Functions interpreter.

The state machine, its Lambda functions and its SNS topic are created in moto under the
names template.yaml gives them, and the definition is filled with template.yaml's own
DefinitionSubstitutions (PollSeconds set to 0). Every Lambda invocation goes through one
seam, ``moto.awslambda.models.LambdaFunction.invoke``: a test scripts each function's answer
(or error), or routes a function to its real handler. A scripted error is returned the way
Lambda returns one (``x-amz-function-error: Unhandled`` and ``{"errorType",
"errorMessage"}``), so the interpreter applies the definition's Retry and Catch as AWS does.
Retry waits are recorded instead of slept.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests.support import EVENTS
from tests.support import template as sam_template
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

EXECUTION_TIMEOUT_SECONDS = 30
# Template parameters of the test deployment: the wait loops do not wait.
PARAMETERS = {
    "TrainingImage": "training-image",
    "InferenceImage": "inference-image",
    "PollSeconds": "0",
}


class LambdaError(Exception):
    """Raised by a script: the function fails with this errorType and errorMessage."""

    def __init__(self, error_type: str, message: str = "scripted failure") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


Script = Callable[[dict[str, Any]], Any]


def event_file(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def sequence(*answers: Any) -> Script:
    """Answer each call with the next item (the last one repeats); LambdaError items raise."""
    remaining = list(answers)

    def script(_payload: dict[str, Any]) -> Any:
        answer = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(answer, LambdaError):
            raise answer
        return copy.deepcopy(answer)

    return script


def fail(error_type: str, message: str) -> Script:
    return sequence(LambdaError(error_type, message))


def status_checks(**per_kind: Script) -> Script:
    """The check_status function answers per ``kind`` (tuning, training, endpoint)."""

    def script(payload: dict[str, Any]) -> Any:
        return per_kind[payload["kind"]](payload)

    return script


TUNING_JOB = "mlops-digits-tune-1a2b3c4d"
TRAINING_JOB = "mlops-digits-retrain-1a2b3c4d"
MODEL_PACKAGE_ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/mlops-digits-models/2"
APPROVED = {
    "approved": True,
    "summary": "approved",
    "test_accuracy": 0.95,
    "baseline_accuracy": None,
    "blocking": [],
    "findings": [],
    "report_uri": "s3://artifacts/runs/x/gate.json",
}


def endpoint_check(status: str, done: bool, **overrides: Any) -> dict[str, Any]:
    """check_status's answer for the endpoint, with some keys replaced."""
    return {
        "status": status,
        "done": done,
        "endpoint_config": "mlops-digits-1a2b3c4d",
        "superseded_by": None,
        **overrides,
    }


def happy_status_checks() -> dict[str, Script]:
    """check_status answers per kind: one "still running" answer, then done."""
    return {
        "tuning": sequence(
            {"kind": "tuning", "status": "InProgress", "done": False, "counters": {}},
            {"kind": "tuning", "status": "Completed", "done": True, "counters": {"Completed": 3}},
        ),
        "training": sequence(
            {"status": "InProgress", "done": False, "pending_rules": [], "rules_timed_out": False},
            {"status": "Completed", "done": True, "pending_rules": [], "rules_timed_out": False},
        ),
        "endpoint": sequence(
            endpoint_check("Creating", done=False),
            endpoint_check("InService", done=True),
        ),
    }


def deployment(**overrides: Any) -> dict[str, Any]:
    """deploy_endpoint's answer for a blue/green update, with some keys replaced."""
    return {
        "endpoint_name": "mlops-classifier",
        "endpoint_config_name": "mlops-digits-1a2b3c4d",
        "model_name": "mlops-digits-1a2b3c4d",
        "model_package_arn": MODEL_PACKAGE_ARN,
        "operation": "updated",
        "previous_endpoint_config": "mlops-digits-00000000",
        "superseded_by": None,
        **overrides,
    }


def registered(payload: dict[str, Any]) -> dict[str, Any]:
    """register_model's answer: version 2, with the status the gate decided."""
    return {
        "model_package_group_name": "mlops-digits-models",
        "model_package_arn": MODEL_PACKAGE_ARN,
        "model_package_version": 2,
        "approval_status": "Approved" if payload["gate"]["approved"] else "Rejected",
    }


def happy_scripts() -> dict[str, Script]:
    """Answers of a run that succeeds, keyed by the function's logical id."""
    return {
        "ValidateDatasetFunction": sequence(event_file("validated_dataset.json")),
        "StartTuningFunction": sequence(
            {"job_name": TUNING_JOB, "warm_start_parent": None, "strategy": "Bayesian"}
        ),
        "CheckStatusFunction": status_checks(**happy_status_checks()),
        "FindBestFunction": sequence(
            {**event_file("best_trial.json"), "completed_trials": 3, "total_trials": 3}
        ),
        "StartProfiledTrainingFunction": sequence(
            {"job_name": TRAINING_JOB, "builtin_rules": False}
        ),
        "EvaluateRulesFunction": sequence(APPROVED),
        "RegisterModelFunction": registered,
        "DeployEndpointFunction": sequence(deployment()),
        "WriteReportFunction": lambda payload: {
            "report_uri": f"s3://artifacts/runs/{payload['execution_name']}/report.html"
        },
        "SmokeTestFunction": sequence(
            {
                "predicted_class_index": 0,
                "label": "zero",
                "expected_class_index": 0,
                "correct": True,
                "latency_ms": 12.5,
            }
        ),
    }


@dataclass
class Execution:
    status: str
    events: list[dict[str, Any]]
    error: str | None
    cause: str | None

    @property
    def states(self) -> list[str]:
        """Names of the states entered, in order (loops repeat names)."""
        return [
            e["stateEnteredEventDetails"]["name"]
            for e in self.events
            if e["type"].endswith("StateEntered")
        ]

    def failed_tasks(self) -> list[str]:
        return [
            e["taskFailedEventDetails"]["error"] for e in self.events if e["type"] == "TaskFailed"
        ]

    def published_messages(self) -> list[str]:
        """Messages the SNS publish states sent."""
        messages = []
        for event in self.events:
            details = event.get("taskScheduledEventDetails", {})
            if details.get("resourceType") == "sns":
                messages.append(json.loads(details["parameters"])["Message"])
        return messages


@dataclass
class Pipeline:
    """moto resources of one test plus the scripts that answer the Lambda functions."""

    stepfunctions: Any
    state_machine_arn: str
    function_names: dict[str, str]
    scripts: dict[str, Script] = field(default_factory=happy_scripts)
    handlers: dict[str, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def logical_id(self, function_name: str) -> str:
        return {v: k for k, v in self.function_names.items()}[function_name]

    def invoke(self, function_name: str, payload: dict[str, Any]) -> tuple[Any, str | None]:
        """Answer one invocation: (result, None) or (error body, "Unhandled")."""
        logical_id = self.logical_id(function_name)
        self.calls.append((logical_id, payload))
        try:
            if logical_id in self.handlers:
                return self.handlers[logical_id](payload), None
            return self.scripts[logical_id](payload), None
        except LambdaError as e:
            return {"errorType": e.error_type, "errorMessage": e.message}, "Unhandled"

    def invoked(self, logical_id: str) -> list[dict[str, Any]]:
        return [payload for name, payload in self.calls if name == logical_id]

    def start(self, execution_input: dict[str, Any] | None = None, name: str = "run-1") -> str:
        document = execution_input if execution_input is not None else pipeline_input()
        return self.stepfunctions.start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(document)
        )["executionArn"]

    def wait(self, execution_arn: str) -> Execution:
        detail = wait_for(
            lambda: self.stepfunctions.describe_execution(executionArn=execution_arn),
            EXECUTION_TIMEOUT_SECONDS,
            f"{execution_arn} to end",
            done=lambda d: d["status"] != "RUNNING",
            interval=0.05,
        )
        events = self.stepfunctions.get_execution_history(
            executionArn=execution_arn, maxResults=1000
        )["events"]
        return Execution(detail["status"], events, detail.get("error"), detail.get("cause"))

    def run(self, execution_input: dict[str, Any] | None = None) -> Execution:
        return self.wait(self.start(execution_input))


def pipeline_input(dataset: str = "digits") -> dict[str, str]:
    """What the trigger function passes to StartExecution."""
    return {
        "bucket": "mlops-data-123456789012-us-east-1",
        "manifest_key": f"datasets/{dataset}/manifest.json",
        "dataset": dataset,
        "manifest_version": "v:1",
    }


def deploy_resources(parameters: dict[str, str]) -> tuple[Any, str, dict[str, str]]:
    """Create the template's functions, topic and state machine in moto (inside mock_aws)."""
    names = sam_template.physical_names(parameters)
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="pipeline-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lambda_client = boto3.client("lambda")
    function_names = {}
    attributes: dict[tuple[str, str], str] = {}
    for logical_id in sam_template.functions():
        name = names[logical_id]
        arn = lambda_client.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role,
            Handler="app.lambda_handler",
            Code={"ZipFile": b"code lives in functions/"},
        )["FunctionArn"]
        function_names[logical_id] = name
        attributes[(logical_id, "Arn")] = arn
    topic = boto3.client("sns").create_topic(Name=names["FailureTopic"])["TopicArn"]
    resolver = sam_template.template_resolver(parameters, FailureTopic=topic)
    resolver.attributes.update(attributes)
    definition = sam_template.substitute(
        sam_template.ASL_PATH.read_text(), sam_template.definition_substitutions(resolver)
    )
    stepfunctions = boto3.client("stepfunctions")
    arn = stepfunctions.create_state_machine(
        name=names["PipelineStateMachine"], definition=definition, roleArn=role
    )["stateMachineArn"]
    return stepfunctions, arn, function_names


def record_retry_waits(sleeps: list[float]) -> Any:
    """A stand-in for the interpreter's ``time`` module: retry waits are recorded, not slept."""

    class RecordingClock:
        @staticmethod
        def sleep(seconds: float) -> None:
            sleeps.append(seconds)

    return RecordingClock


def patched_invoke(current: list[Pipeline]) -> Callable[..., bytes]:
    """The replacement of LambdaFunction.invoke, answering from the active Pipeline."""

    def invoke(self: Any, body: Any, request_headers: Any, response_headers: Any) -> bytes:
        payload = json.loads(body) if body else {}
        result, function_error = current[-1].invoke(self.function_name, payload)
        if function_error:
            response_headers["x-amz-function-error"] = function_error
        return json.dumps(result).encode("utf-8")

    return invoke


def count_by_state(execution: Execution) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for state in execution.states:
        counts[state] += 1
    return dict(counts)
