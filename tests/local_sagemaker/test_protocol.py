"""The local SageMaker's wire contract: validation, AWS error codes and wording, unknown ops."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from mlops.local.sagemaker import protocol

from .helpers import REGION, training_request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def raw_sm(service: Any) -> Any:
    """A client that skips botocore's own checks, so the server's validation is what answers."""
    return boto3.client(
        "sagemaker",
        endpoint_url=service.url,
        region_name=REGION,
        config=Config(parameter_validation=False, retries={"total_max_attempts": 1}),
    )


def error_of(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    return raised.value.response


def post(service: Any, operation: str, body: dict[str, Any]) -> requests.Response:
    """A raw json-protocol call, for requests boto3 would refuse to serialise."""
    return requests.post(
        service.url,
        data=json.dumps(body).encode(),
        headers={
            "X-Amz-Target": f"SageMaker.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
        },
        timeout=10,
    )


def test_create_training_job_with_unknown_field_is_a_validation_exception(service: Any) -> None:
    request = training_request("tj-bad-field")
    request["TrainingJobNme"] = request.pop("TrainingJobName")
    response = post(service, "CreateTrainingJob", request)
    assert response.status_code == 400
    body = response.json()
    assert body["__type"] == "ValidationException"
    assert 'Missing required parameter in input: "TrainingJobName"' in body["message"]
    assert 'Unknown parameter in input: "TrainingJobNme"' in body["message"]


def test_wrong_type_is_a_validation_exception(raw_sm: Any) -> None:
    request = training_request("tj-bad-type")
    request["ResourceConfig"]["InstanceCount"] = "one"
    response = error_of(raw_sm.create_training_job, **request)
    assert response["Error"]["Code"] == "ValidationException"
    assert "ResourceConfig.InstanceCount" in response["Error"]["Message"]


def test_server_side_constraints_pattern_length_and_enum(raw_sm: Any) -> None:
    request = training_request("bad_name_with_underscores")
    request["AlgorithmSpecification"]["TrainingInputMode"] = "Floppy"
    message = error_of(raw_sm.create_training_job, **request)["Error"]["Message"]
    assert message.startswith("2 validation errors detected: ")
    assert "Value 'bad_name_with_underscores' at 'trainingJobName' failed to satisfy" in message
    assert "Member must satisfy regular expression pattern" in message
    assert "at 'algorithmSpecification.trainingInputMode'" in message
    assert "Member must satisfy enum value set" in message


def test_tuning_job_name_longer_than_32_characters_is_refused(sm: Any) -> None:
    request = {
        "HyperParameterTuningJobName": "x" * 33,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 1, "MaxParallelTrainingJobs": 1},
        },
    }
    message = error_of(sm.create_hyper_parameter_tuning_job, **request)["Error"]["Message"]
    assert "Member must have length less than or equal to 32" in message


def test_describe_missing_resources_uses_aws_codes_and_wording(sm: Any) -> None:
    training = error_of(sm.describe_training_job, TrainingJobName="nope")["Error"]
    assert training == {"Code": "ValidationException", "Message": "Requested resource not found."}
    tuning = error_of(sm.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName="nope")
    assert tuning["Error"]["Code"] == "ResourceNotFound"
    assert "can't find a tuning job with name nope" in tuning["Error"]["Message"]
    endpoint = error_of(sm.describe_endpoint, EndpointName="nope")["Error"]
    assert endpoint["Code"] == "ValidationException"
    assert endpoint["Message"] == (
        'Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/nope".'
    )
    config = error_of(sm.describe_endpoint_config, EndpointConfigName="nope")["Error"]
    assert config["Message"].startswith('Could not find endpoint configuration "arn:aws:')


def test_duplicate_training_job_is_resource_in_use(sm: Any) -> None:
    sm.create_training_job(**training_request("tj-dup"))
    response = error_of(sm.create_training_job, **training_request("tj-dup"))
    assert response["Error"]["Code"] == "ResourceInUse"
    assert "training-job/tj-dup" in response["Error"]["Message"]


def test_unknown_operation_is_named(service: Any) -> None:
    response = post(service, "CreateNotebookInstance", {})
    assert response.status_code == 400
    body = response.json()
    assert body["__type"] == "UnknownOperationException"
    assert "CreateNotebookInstance" in body["message"]


def test_unknown_operation_through_boto3(sm: Any) -> None:
    response = error_of(sm.list_training_jobs)
    assert response["Error"]["Code"] == "UnknownOperationException"
    assert "ListTrainingJobs" in response["Error"]["Message"]


def test_invalid_json_body_is_a_validation_exception(service: Any) -> None:
    response = requests.post(
        service.url,
        data=b"{not json",
        headers={"X-Amz-Target": "SageMaker.ListEndpoints"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["__type"] == "ValidationException"


def test_timestamps_are_epoch_numbers_on_the_wire(service: Any, sm: Any) -> None:
    sm.create_training_job(**training_request("tj-wire"))
    body = post(service, "DescribeTrainingJob", {"TrainingJobName": "tj-wire"}).json()
    assert isinstance(body["CreationTime"], float)
    assert isinstance(body["SecondaryStatusTransitions"][0]["StartTime"], float)


def test_throttle_fault_answers_throttling_exception(
    sm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LOCAL_FAULTS", "throttle=ListEndpoints:2")
    for _ in range(2):
        assert error_of(sm.list_endpoints)["Error"]["Code"] == "ThrottlingException"
    assert sm.list_endpoints()["Endpoints"] == []


def test_quota_fault_answers_resource_limit_exceeded(
    sm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LOCAL_FAULTS", "quota=ListEndpoints:1")
    error = error_of(sm.list_endpoints)["Error"]
    assert (error["Code"], "injected fault quota" in error["Message"]) == (
        "ResourceLimitExceeded",
        True,
    )
    assert sm.list_endpoints()["Endpoints"] == []


def test_supported_operations_exist_in_the_service_model() -> None:
    names = set(protocol.sagemaker_model().operation_names)
    assert names >= protocol.CONTROL_PLANE_OPERATIONS


def test_tags_round_trip_and_unknown_arn(sm: Any) -> None:
    arn = sm.create_training_job(**training_request("tj-tags"))["TrainingJobArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "1"}])
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "a", "Value": "2"},
        {"Key": "b", "Value": "3"},
    ]
    missing = arn.replace("tj-tags", "tj-missing")
    assert error_of(sm.list_tags, ResourceArn=missing)["Error"]["Code"] == "ValidationException"


@pytest.mark.parametrize(
    "name, problem",
    [
        ("e" * 64, "Member must have length less than or equal to 63"),
        ("mlops_classifier", "Member must satisfy regular expression pattern"),
        ("-mlops", "Member must satisfy regular expression pattern"),
    ],
)
def test_endpoint_name_length_and_pattern_from_the_service_model(
    raw_sm: Any, name, problem
) -> None:
    """The names the pipeline builds (endpoint, config, model) are held to AWS's constraints."""
    response = error_of(raw_sm.create_endpoint, EndpointName=name, EndpointConfigName="cfg")
    assert response["Error"]["Code"] == "ValidationException"
    message = response["Error"]["Message"]
    assert f"Value '{name}' at 'endpointName' failed to satisfy constraint: {problem}" in message
