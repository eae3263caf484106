"""Fixtures for the handler unit tests.

Each test loads the handler module afresh inside moto's ``mock_aws`` with the environment
that template.yaml gives that function (Globals + its own variables, resolved with test
values), so module-level boto3 clients talk to moto and a variable the code reads but the
template does not set fails here. SageMaker answers that moto cannot give (rule statuses,
metrics, endpoint states) come from botocore's Stubber, which validates every request and
response against the service model too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from moto import mock_aws

from mlops.local.deploy import LocalDeployer
from mlops.local.iam import call_permissions, denied_resource
from tests.support import template as sam_template
from tests.support.lambda_env import LambdaContext, set_lambda_environment
from tests.support.lambda_env import load_handler as load_app

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(sam_template.layer_path()))

ECR = "763104351884.dkr.ecr.us-east-1.amazonaws.com"
TEST_PARAMETERS = {
    "TrainingImage": f"{ECR}/pytorch-training:2.6-gpu-py312",
    "InferenceImage": f"{ECR}/pytorch-inference:2.6-cpu-py312",
}


@pytest.fixture(autouse=True)
def lambda_like_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Lambda runtime sets, minus anything that could reach a real account."""
    set_lambda_environment(monkeypatch)


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def names() -> dict[str, str]:
    """Physical names template.yaml gives its resources (with the test parameters)."""
    return sam_template.physical_names(TEST_PARAMETERS)


@pytest.fixture
def buckets(aws: None, names: dict[str, str]) -> SimpleNamespace:
    """The data and artifacts buckets, created in moto under their template names."""
    s3 = boto3.client("s3")
    for logical_id in ("DataBucket", "ArtifactsBucket"):
        s3.create_bucket(Bucket=names[logical_id])
    return SimpleNamespace(s3=s3, data=names["DataBucket"], artifacts=names["ArtifactsBucket"])


@pytest.fixture
def load_handler(aws: None, monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleType]:
    """Import functions/<folder>/app.py with its template environment, inside the mock."""

    def load(folder: str, **parameters: str) -> ModuleType:
        _loaded_functions.append(sam_template.function_for_folder(folder))
        resolver = sam_template.template_resolver({**TEST_PARAMETERS, **parameters})
        return load_app(folder, resolver, monkeypatch)

    return load


# -- every AWS call a handler makes must be allowed by its role in template.yaml ----------------

_loaded_functions: list[str] = []


@pytest.fixture(scope="session")
def expanded_roles() -> dict[str, Any]:
    """The template's roles, SAM policy templates expanded by the real SAM translator."""
    deployer = LocalDeployer(
        ROOT / "template.yaml", "mlops-test", TEST_PARAMETERS, boto3.Session(), "http://unused"
    )
    deployer._assign_references()
    return deployer.expand_roles()


@pytest.fixture(autouse=True)
def calls_allowed_by_the_role(request: pytest.FixtureRequest) -> Iterator[list[tuple]]:
    """Record the boto3 calls made from functions/ code; after the test, check each against
    the role of the function the test loaded (moto's IAM evaluator over the expanded role)."""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    original = BaseClient._make_api_call
    functions_dir = str(ROOT / "functions")

    def recording(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        caller = sys._getframe(1)
        while caller is not None and not caller.f_code.co_filename.startswith(functions_dir):
            caller = caller.f_back
        if caller is not None:
            calls.append((self.meta.service_model.signing_name, operation_name, api_params))
        return original(self, operation_name, api_params)

    _loaded_functions.clear()
    BaseClient._make_api_call = recording  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]
    if not calls or len(set(_loaded_functions)) != 1:
        return  # no handler call, or several handlers in one test: nothing to attribute
    function = _loaded_functions[0]
    role = request.getfixturevalue("expanded_roles")[f"{function}Role"]
    for service, operation, params in calls:
        for needed in call_permissions(
            service, operation, params, sam_template.REGION, sam_template.ACCOUNT
        ):
            refused = denied_resource(role.documents(), needed)
            assert refused is None, (
                f"{function} calls {service}:{operation}, but its role in template.yaml does "
                f"not allow {needed.action} on {refused}"
            )
