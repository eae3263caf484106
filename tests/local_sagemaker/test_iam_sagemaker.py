"""The local SageMaker authorises a role session's calls with moto's IAM evaluator."""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from mlops.local.iam import PolicyEvaluator, authorize_headers

from .helpers import REGION

pytestmark = pytest.mark.timeout(60)
ACCOUNT = "123456789012"
SM = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@pytest.fixture
def role_client(moto_url: str, service_factory: Any) -> Any:
    """A SageMaker client signed as a role allowed ListTags/DescribeEndpoint on mlops-* only."""
    admin = boto3.Session(
        region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    iam = admin.client("iam", endpoint_url=moto_url)
    name = f"sm-caller-{uuid.uuid4().hex[:8]}"
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sagemaker:ListTags", "sagemaker:DescribeEndpoint"],
                "Resource": [f"{SM}:endpoint-config/mlops-*", f"{SM}:endpoint/mlops-*"],
            }
        ],
    }
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    credentials = admin.client("sts", endpoint_url=moto_url).assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}", RoleSessionName="fn"
    )["Credentials"]
    service = service_factory(
        authorizer=functools.partial(authorize_headers, PolicyEvaluator(ACCOUNT))
    )
    return boto3.client(
        "sagemaker",
        endpoint_url=service.url,
        region_name=REGION,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        config=Config(retries={"total_max_attempts": 1}),
    )


def code_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    error = raised.value.response["Error"]
    return error["Code"], error["Message"]


def test_iam_allowed_call_reaches_the_backend(role_client):
    code, _ = code_of(role_client.describe_endpoint, EndpointName="mlops-classifier")
    assert code == "ValidationException"  # not found: the call got past IAM


def test_iam_call_outside_the_roles_resources_is_access_denied(role_client):
    code, message = code_of(role_client.describe_endpoint, EndpointName="other-endpoint")
    assert code == "AccessDeniedException"
    assert "is not authorized to perform: sagemaker:DescribeEndpoint" in message
    assert f"on resource: {SM}:endpoint/other-endpoint" in message


def test_iam_action_the_role_lacks_is_access_denied(role_client):
    code, message = code_of(role_client.delete_endpoint, EndpointName="mlops-classifier")
    assert code == "AccessDeniedException"
    assert "sagemaker:DeleteEndpoint" in message
