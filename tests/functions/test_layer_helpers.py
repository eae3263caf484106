"""pipeline_common.s3io and .aws: URIs, archives and the error translation."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from pipeline_common.aws import aws_call, translate_client_error
from pipeline_common.errors import AwsCallFailed, ResourceLimitExceeded, SageMakerThrottled
from pipeline_common.manifest import describe_problems
from pipeline_common.s3io import parse_s3_uri, read_tar_member

from tests.functions.handler_helpers import tar_gz


def client_error(code: str, message: str = "details") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "CreateTrainingJob")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("ThrottlingException", SageMakerThrottled),
        ("TooManyRequestsException", SageMakerThrottled),
        ("ResourceLimitExceeded", ResourceLimitExceeded),
        ("AccessDeniedException", AwsCallFailed),
    ],
)
def test_helpers_client_errors_become_project_errors(code, error):
    translated = translate_client_error(client_error(code), "CreateTrainingJob", "job-1")

    assert isinstance(translated, error)
    assert "CreateTrainingJob on job-1" in str(translated)


def test_helpers_aws_call_chains_the_original_error():
    with pytest.raises(AwsCallFailed) as raised, aws_call("PutObject", "s3://b/k"):
        raise client_error("AccessDenied", "no")

    assert isinstance(raised.value.__cause__, ClientError)


def test_helpers_parse_s3_uri():
    assert parse_s3_uri("s3://bucket/a/b.json") == ("bucket", "a/b.json")
    with pytest.raises(ValueError, match="not an s3"):
        parse_s3_uri("https://bucket/a")


@pytest.mark.parametrize("name", ["rule_statuses.json", "./rule_statuses.json"])
def test_helpers_read_tar_member(name):
    archive = tar_gz({name: b"[]", "./history.json": b"{}"})

    assert read_tar_member(archive, "rule_statuses.json") == b"[]"
    assert read_tar_member(archive, "missing.json") is None


def test_helpers_problem_list_is_bounded():
    text = describe_problems([f"problem {i}" for i in range(30)], limit=3)

    assert text == "30 problem(s): problem 0; problem 1; problem 2; and 27 more"
