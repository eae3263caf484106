"""The roles template.yaml gives the functions, expanded by the real SAM translator and judged
by moto's IAM policy evaluator (mlops.local.iam), without starting a cloud."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from mlops.local.deploy import LocalDeployer
from mlops.local.iam import Request, call_permissions, denied_resource

ROOT = Path(__file__).resolve().parents[2]
SM = "arn:aws:sagemaker:us-east-1:123456789012"


@pytest.fixture(scope="module")
def roles():
    images = {"TrainingImage": "train:1", "InferenceImage": "infer:1"}
    deployer = LocalDeployer(
        ROOT / "template.yaml", "mlops-test", images, boto3.Session(), "http://unused"
    )
    deployer._assign_references()
    return deployer.expand_roles()


def needs(operation: str, **params) -> list[Request]:
    return call_permissions("sagemaker", operation, params, "us-east-1", "123456789012")


def test_iam_deploy_endpoint_may_read_the_serving_configs_tags(roles):
    """Finding 1: the update path's ListTags on the serving endpoint config is allowed."""
    documents = roles["DeployEndpointFunctionRole"].documents()
    [request] = needs("ListTags", ResourceArn=f"{SM}:endpoint-config/mlops-digits-1")
    assert denied_resource(documents, request) is None


def test_iam_a_role_without_list_tags_is_refused_it(roles):
    documents = roles["DeployEndpointFunctionRole"].documents()
    for document in documents:
        for statement in document["Statement"]:
            actions = statement.get("Action")
            if isinstance(actions, list) and "sagemaker:ListTags" in actions:
                actions.remove("sagemaker:ListTags")
    [request] = needs("ListTags", ResourceArn=f"{SM}:endpoint-config/mlops-digits-1")
    assert denied_resource(documents, request) == f"{SM}:endpoint-config/mlops-digits-1"


def test_iam_create_endpoint_needs_the_endpoint_its_config_and_tagging(roles):
    documents = roles["DeployEndpointFunctionRole"].documents()
    requests = needs(
        "CreateEndpoint",
        EndpointName="mlops-classifier",
        EndpointConfigName="mlops-digits-1",
        Tags=[{"Key": "k", "Value": "v"}],
    )
    assert [r.action for r in requests] == ["sagemaker:CreateEndpoint", "sagemaker:AddTags"]
    assert all(denied_resource(documents, r) is None for r in requests)
    foreign = needs("CreateEndpoint", EndpointName="other", EndpointConfigName="mlops-x")
    assert denied_resource(documents, foreign[0]) == f"{SM}:endpoint/other"


def test_iam_pass_role_only_to_sagemaker_and_only_the_pipelines_role(roles):
    documents = roles["StartProfiledTrainingFunctionRole"].documents()
    role = "arn:aws:iam::123456789012:role/mlops-sagemaker-us-east-1"
    requests = needs("CreateTrainingJob", TrainingJobName="mlops-retrain-1", RoleArn=role)
    assert [r.action for r in requests] == ["sagemaker:CreateTrainingJob", "iam:PassRole"]
    assert all(denied_resource(documents, r) is None for r in requests)
    other = needs("CreateTrainingJob", TrainingJobName="mlops-r", RoleArn=role + "-admin")
    assert denied_resource(documents, other[1]) == role + "-admin"


def test_iam_sam_policy_templates_are_expanded_scoped_to_the_buckets(roles):
    documents = roles["ValidateDatasetFunctionRole"].documents()
    data = "arn:aws:s3:::mlops-data-123456789012-us-east-1"
    read = call_permissions("s3", "GetObject", {"Bucket": data[13:], "Key": "datasets/x"}, "", "")
    assert denied_resource(documents, read[0]) is None
    write = call_permissions("s3", "PutObject", {"Bucket": data[13:], "Key": "datasets/x"}, "", "")
    assert denied_resource(documents, write[0]) == f"{data}/datasets/x"


def test_iam_sagemaker_role_may_write_data_capture_and_nothing_beside_the_artifacts(roles):
    """SageMaker writes an endpoint's captures with its execution role (capture.CAPTURE_PREFIX)."""
    from pipeline_common.capture import CAPTURE_PREFIX

    documents = roles["SageMakerExecutionRole"].documents()
    key = f"{CAPTURE_PREFIX}/mlops-classifier/AllTraffic/2026/12/03/10/01-02-003-x.jsonl"

    def put(bucket: str) -> Request:
        return call_permissions("s3", "PutObject", {"Bucket": bucket, "Key": key}, "", "")[0]

    assert denied_resource(documents, put("mlops-artifacts-123456789012-us-east-1")) is None
    assert denied_resource(documents, put("mlops-data-123456789012-us-east-1")) is not None
