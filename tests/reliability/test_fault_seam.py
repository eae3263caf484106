"""The local cloud's fault-injection seam (mlops/local/faults.py), SageMaker and Lambda."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops.local.faults import FAULTS_ENV, Faults, parse_faults
from mlops.local.lambda_runtime import LambdaRuntime


def test_faults_parse_names_and_arguments() -> None:
    assert parse_faults("training_fail=a|b, endpoint_start_fail,throttle=X:2") == {
        "training_fail": "a|b",
        "endpoint_start_fail": "",
        "throttle": "X:2",
    }


def test_faults_hit_any_alternative_of_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "training_fail=-001-|-retrain-")
    faults = Faults()

    assert faults.hits("training_fail", "mlops-a-tune-1234abcd-001-0f0f0f0f")
    assert faults.hits("training_fail", "mlops-c-retrain-1234abcd")
    assert not faults.hits("training_fail", "mlops-a-tune-1234abcd-002-0f0f0f0f")


def test_faults_hit_when_any_resource_name_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "endpoint_start_fail=relib")
    faults = Faults()

    assert faults.hits("endpoint_start_fail", "mlops-classifier", "mlops-relib-1234abcd")
    assert not faults.hits("endpoint_start_fail", "mlops-classifier", "mlops-relia-1234abcd")


def test_faults_without_argument_hit_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "endpoint_start_fail")

    assert Faults().hits("endpoint_start_fail", "anything")
    assert not Faults().hits("training_fail", "anything")


def test_faults_throttle_is_consumed_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "throttle=CreateHyperParameterTuningJob:2")
    faults = Faults()

    answers = [faults.should_throttle("CreateHyperParameterTuningJob") for _ in range(3)]

    assert answers == [True, True, False]
    assert not faults.should_throttle("DescribeEndpoint")


def test_faults_lambda_hang_hits_every_invocation_without_a_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "lambda_hang=ValidateDataset|start-tuning")
    faults = Faults()

    assert parse_faults("lambda_hang=ValidateDataset:1") == {"lambda_hang": "ValidateDataset:1"}
    assert all(
        faults.hits_counted("lambda_hang", "mlops-validate-dataset", "ValidateDatasetFunction")
        for _ in range(5)
    )
    assert faults.hits_counted("lambda_hang", "mlops-start-tuning", "StartTuningFunction")
    assert not faults.hits_counted("lambda_hang", "mlops-find-best", "FindBestFunction")


def test_faults_lambda_hang_count_hits_only_the_next_invocations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "lambda_hang=StartTuning:2")
    faults = Faults()

    other = faults.hits_counted("lambda_hang", "mlops-find-best", "FindBestFunction")
    answers = [faults.hits_counted("lambda_hang", "StartTuningFunction") for _ in range(3)]

    assert not other  # a function it does not name uses none of the count
    assert answers == [True, True, False]
    monkeypatch.setenv(FAULTS_ENV, "lambda_hang=StartTuning:1")  # a new spec starts afresh
    assert faults.hits_counted("lambda_hang", "StartTuningFunction")
    assert not faults.hits_counted("lambda_hang", "StartTuningFunction")


# -- lambda_hang through the real local Lambda runtime ------------------------------------------

TOY_HANDLER = """
import pathlib


def lambda_handler(event, context):
    pathlib.Path(event["marker"]).write_text(context.aws_request_id)
    return {"ran": True}
"""


class _Logs:
    """The CloudWatch Logs calls the runtime makes, kept in memory."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def ensure_log_group(self, group: str) -> None:
        pass

    def ensure_log_stream(self, group: str, stream: str) -> None:
        pass

    def put_log_events(self, group: str, stream: str, events: list[dict[str, Any]]) -> None:
        self.messages += [event["message"] for event in events]


def toy_function(name: str, timeout_s: int) -> Any:
    """What the runtime reads of a moto LambdaFunction, for a one-file handler."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as package:
        package.writestr("app.py", TOY_HANDLER)
    return SimpleNamespace(
        function_name=name,
        function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
        handler="app.lambda_handler",
        timeout=timeout_s,
        memory_size=128,
        run_time="python3.11",
        region="us-east-1",
        account_id="123456789012",
        code_bytes=archive.getvalue(),
        code_sha_256=name,
        layers=[],
        environment_vars={},
        logs_backend=_Logs(),
    )


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LambdaRuntime]:
    """A runtime that knows ToyFunction by its logical id, as the local cloud tells the real one."""
    runtime = LambdaRuntime(tmp_path, endpoint_env={})
    runtime.logical_ids = {"toy-fn": "ToyFunction"}
    try:
        yield runtime
    finally:
        runtime.shutdown()


def test_lambda_hang_times_out_through_the_runtime_and_discards_the_worker(
    runtime: LambdaRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = toy_function("toy-fn", timeout_s=1)
    marker = tmp_path / "handler-ran"
    warm, warm_failed = runtime.run(fn, {"marker": str(marker)})  # a warm worker to hang
    marker.unlink()
    monkeypatch.setenv(FAULTS_ENV, "lambda_hang=ToyFunction:1")  # read live, as in the cloud
    [worker] = runtime._all
    started = time.monotonic()
    hung, hung_failed = runtime.run(fn, {"marker": str(marker)})
    waited = time.monotonic() - started
    handler_ran_while_hung = marker.exists()
    after, after_failed = runtime.run(fn, {"marker": str(marker)})

    assert (warm, warm_failed) == ({"ran": True}, False)
    assert hung_failed
    assert hung == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": "Task timed out after 1.00 seconds",
    }
    assert 1.0 <= waited < 5.0  # the runtime waited out the function's Timeout
    assert not handler_ran_while_hung
    assert worker.process.poll() is not None  # killed by the runtime, not answering late
    assert worker not in runtime._all
    assert any("fault lambda_hang" in m for m in fn.logs_backend.messages)
    # the count was 1: a fresh environment runs the handler again
    assert (after, after_failed) == ({"ran": True}, False)


def test_lambda_hang_leaves_functions_it_does_not_name_alone(
    runtime: LambdaRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "lambda_hang=OtherFunction")
    marker = tmp_path / "handler-ran"

    result, failed = runtime.run(toy_function("toy-fn", timeout_s=1), {"marker": str(marker)})

    assert (result, failed) == ({"ran": True}, False)
    assert marker.exists()
