"""Ask a person to approve a model version, and keep the run's task token until they decide.

With ApprovalMode=manual the state machine invokes this function with ``.waitForTaskToken``
and waits. The token goes to ``runs/<execution>/approval_request.json`` (the registry's
metadata values are limited to 256 characters; a token is longer), where ``mlops approve`` and
``mlops reject`` find it from the version's execution, update the version's status and hand
the decision back to the run. The notification says which version waits and how to decide.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pipeline_common.aws import aws_call, client
from pipeline_common.config import CommonSettings, env_str
from pipeline_common.kit import count, logger, step
from pipeline_common.models import ApprovalRequested, StepModel
from pipeline_common.records import APPROVAL_REQUEST, record_key
from pipeline_common.s3io import s3_uri, write_json

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
sns = client("sns")


class ApprovalInput(StepModel):
    task_token: str
    execution_name: str
    dataset: str
    model_package_arn: str
    model_package_version: int | None
    test_accuracy: float | None = None
    report_uri: str
    timeout_seconds: int


def message(event: ApprovalInput, deadline: datetime) -> str:
    version = event.model_package_version
    accuracy = f"{event.test_accuracy:.4f}" if event.test_accuracy is not None else "unknown"
    return (
        f"Model package version {version} of data set {event.dataset} passed the gate (test "
        f"accuracy {accuracy}) and waits for a decision until {deadline:%Y-%m-%d %H:%M} UTC; "
        f"execution {event.execution_name} deploys it once approved.\n"
        f"Approve: mlops approve {version} --dataset {event.dataset}\n"
        f"Reject:  mlops reject {version} --dataset {event.dataset} --reason '...'\n"
        f"(add --stack NAME for a deployed stack). Gate report: {event.report_uri}\n"
        f"Model package: {event.model_package_arn}"
    )


def request_approval(event: ApprovalInput, common: CommonSettings, topic: str) -> ApprovalRequested:
    requested = datetime.now(UTC)
    deadline = requested + timedelta(seconds=event.timeout_seconds)
    key = record_key(event.execution_name, APPROVAL_REQUEST)
    record = ApprovalRequested(
        model_package_arn=event.model_package_arn,
        task_token=event.task_token,
        requested_at=requested.isoformat(),
        deadline=deadline.isoformat(),
    )
    with aws_call("PutObject", s3_uri(common.artifacts_bucket, key)):
        write_json(s3, common.artifacts_bucket, key, record.model_dump())
    with aws_call("Publish", topic):
        sns.publish(
            TopicArn=topic,
            Subject=f"MLOps pipeline: model version {event.model_package_version} waits",
            Message=message(event, deadline),
        )
    count("ApprovalsRequested")
    return record


@step(ApprovalInput)
def lambda_handler(event: ApprovalInput, context: LambdaContext) -> ApprovalRequested:
    record = request_approval(event, CommonSettings.from_env(), env_str("NOTIFICATION_TOPIC_ARN"))
    logger.info({"operation": "request-approval", "model_package_arn": record.model_package_arn})
    return record
