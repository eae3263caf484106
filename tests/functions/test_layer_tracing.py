"""pipeline_common.tracing and LazyClient: cold-start savings that keep tracing and clients.

A handler is traced exactly where Powertools' own Tracer would trace (Lambda runtime,
POWERTOOLS_TRACE_DISABLED unset: template.yaml's ``Tracing: Active`` on AWS), and the X-Ray
SDK is not imported where it would not. Each import check runs in a fresh interpreter, since
this one may have imported the SDK already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import template as sam_template

PROBE = """
import json, sys
from pipeline_common import tracing
from pipeline_common.aws import client
def handler(event, context):
    return event
wrapped = tracing.traced(handler, "probe")
s3 = client("s3")
print(json.dumps({
    "enabled": tracing.tracing_enabled(),
    "wrapped": wrapped is not handler,
    "xray_imported": "aws_xray_sdk.core" in sys.modules,
    "client_built": s3._client is not None,
}))
"""


def probe(**env: str | None) -> dict[str, bool]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_TRACE")}
    environment.pop("LAMBDA_TASK_ROOT", None)
    environment.update({k: v for k, v in env.items() if v is not None})
    environment["PYTHONPATH"] = os.pathsep.join([str(sam_template.layer_path()), *sys.path])
    environment.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    run = subprocess.run(
        [sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_tracing_disabled_by_env_leaves_the_handler_and_the_sdk_alone() -> None:
    seen = probe(LAMBDA_TASK_ROOT="/var/task", POWERTOOLS_TRACE_DISABLED="true")

    assert seen == {
        "enabled": False,
        "wrapped": False,
        "xray_imported": False,
        "client_built": False,
    }


def test_tracing_outside_lambda_is_off_as_powertools_decides() -> None:
    assert probe()["enabled"] is False


def test_tracing_in_lambda_wraps_the_handler_in_the_tracer() -> None:
    seen = probe(LAMBDA_TASK_ROOT="/var/task")

    assert seen["enabled"] is True
    assert seen["wrapped"] is True
    assert seen["xray_imported"] is True


def test_lazy_client_is_built_once_at_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline_common.aws import CLIENT_CONFIG, client

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    lazy = client("sagemaker")

    assert "not created" in repr(lazy)
    assert lazy.meta.service_model.service_name == "sagemaker"
    first = lazy._client
    assert lazy.meta.config.retries == CLIENT_CONFIG.retries
    assert lazy._client is first
