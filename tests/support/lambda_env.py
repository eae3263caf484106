"""A handler as Lambda runs it: the runtime's environment, the template's variables, a context.

The handler tests, the state machine path tests and the inference contract all load
functions/<folder>/app.py afresh with what the Lambda runtime and template.yaml give that
function, so a variable the code reads but the template does not set fails a test.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from dataclasses import dataclass
from types import ModuleType

import pytest

from tests.support import template

# What the Lambda runtime sets, minus anything that could reach a real account.
RUNTIME_ENVIRONMENT = {
    "AWS_REGION": template.REGION,
    "AWS_DEFAULT_REGION": template.REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
# Set on a developer's machine (or by a local cloud) and never inside Lambda.
NOT_IN_LAMBDA = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
    "AWS_PROFILE",
)


def set_lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's variables set and the developer's endpoint and profile variables unset."""
    for name, value in RUNTIME_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    for name in NOT_IN_LAMBDA:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixture form of `set_lambda_environment` (conftests import it to share it)."""
    set_lambda_environment(monkeypatch)


def load_handler(
    folder: str, resolver: template.Resolver, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    """functions/<folder>/app.py imported afresh with the environment template.yaml gives it.

    Each load is a new module (its module-level clients see the current environment and
    mock); it is registered in sys.modules because pydantic resolves annotations there.
    """
    logical_id = template.function_for_folder(folder)
    for name, value in template.function_environment(logical_id, resolver).items():
        monkeypatch.setenv(name, value)
    path = template.ROOT / "functions" / folder / "app.py"
    spec = importlib.util.spec_from_file_location(f"{folder}_app_{uuid.uuid4().hex}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaContext:
    """The attributes of a LambdaContext that Powertools and the handlers read."""

    function_name: str = "test-function"
    memory_limit_in_mb: int = 256
    remaining_ms: int = 60_000
    function_version: str = "$LATEST"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    log_stream_name: str = "stream"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{template.REGION}:{template.ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
