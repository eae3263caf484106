"""The local cloud owns its processes: one cloud per folder, `mlops down` signals only its own
cloud, nothing outlives a `kill -9` of the cloud, the Lambda pool is bounded and reaped, every
server listens on 127.0.0.1 and cloud.json (the API key) is private.

Each test starts its clouds on the toy template and stops them in a ``finally``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from mlops import cli
from mlops.local.process import CloudLockedError, start_cloud_process, stop_cloud_process
from tests.local_sagemaker import helpers as local_helpers
from tests.support.waiting import wait_for

TOY = Path(__file__).parent / "toy" / "template.yaml"


SLOW = {"Slow": "true"}  # a 30 s function timeout: a cold start on a busy machine is no timeout
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("owned-cloud")
    process, info = start_cloud_process(root, template=TOY)
    try:
        yield root, process, info
    finally:
        stop_cloud_process(process)


def client(info, service: str, config: Config = NO_RETRIES):
    return boto3.client(
        service,
        endpoint_url=info.sagemaker_url if service == "sagemaker" else info.moto_url,
        region_name=info.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- one cloud per state folder ------------------------------------------------------------------
def test_second_cloud_in_the_same_folder_is_refused_naming_the_first(toy):
    root, _, info = toy
    with pytest.raises(CloudLockedError, match=f"pid {info.pid}"):
        start_cloud_process(root, template=TOY)
    assert json.loads((root / "cloud.json").read_text())["pid"] == info.pid
    assert running(info.pid)


def test_second_server_started_directly_is_refused_by_the_lock(toy):
    """Two `mlops up` racing both pass the CLI's check: the server's flock decides."""
    root, _, info = toy
    command = [sys.executable, "-m", "mlops.local.server", "--root", str(root)]
    second = subprocess.run(
        [*command, "--template", str(TOY)], capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 1
    assert second.stdout.startswith("LOCKED ")
    assert f"pid {info.pid}" in second.stdout
    assert json.loads((root / "cloud.json").read_text())["pid"] == info.pid


def test_cloud_json_holding_the_api_key_is_private(toy):
    root, _, info = toy
    mode = stat.S_IMODE((root / "cloud.json").stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert info.api_key in (root / "cloud.json").read_text()
    assert stat.S_IMODE((root / "cloud.lock").stat().st_mode) == 0o600


def test_every_listening_socket_of_the_cloud_is_on_loopback(toy):
    _, _, info = toy
    client(info, "lambda").invoke(
        FunctionName=info.deployment["functions"]["ToyFunction"], Payload=b"{}"
    )
    processes = [psutil.Process(info.pid), *descendants(info.pid)]
    listening = [
        (process.pid, conn.laddr)
        for process in processes
        for conn in process.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert len(listening) >= 3  # moto, the local SageMaker, the API at least
    assert all(address.ip == "127.0.0.1" for _, address in listening), listening


# --- mlops down signals only its own cloud -------------------------------------------------------
def test_down_leaves_a_process_that_reused_the_pid_alone(tmp_path, capsys):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(stranger.pid).create_time()
        record = {
            "pid": stranger.pid,
            "started": started - 1000.0,  # the cloud that had this PID started earlier
            "moto_url": "http://127.0.0.1:1",
            "sagemaker_url": "http://127.0.0.1:1",
            "api_url": "http://127.0.0.1:1",
            "api_key": "stale",
            "region": "us-east-1",
            "deployment": {"outputs": {}},
        }
        (tmp_path / "cloud.json").write_text(json.dumps(record))
        assert cli.main(["status", "--root", str(tmp_path)]) == 1
        assert cli.main(["env", "--root", str(tmp_path)]) == 2
        assert cli.main(["executions", "--root", str(tmp_path)]) == 2  # no stale endpoints
        assert cli.main(["down", "--root", str(tmp_path)]) == 0
        assert "left alone" in capsys.readouterr().out
        time.sleep(0.3)
        assert running(stranger.pid)
        assert stranger.poll() is None
        assert not (tmp_path / "cloud.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_down_without_the_lock_leaves_even_a_matching_pid_alone(tmp_path):
    """A PID with the right start time is still not a cloud when nothing holds the lock."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        record = {
            "pid": stranger.pid,
            "started": psutil.Process(stranger.pid).create_time(),
            "moto_url": "",
            "sagemaker_url": "",
            "api_url": "",
            "api_key": "",
            "region": "us-east-1",
            "deployment": {"outputs": {}},
        }
        (tmp_path / "cloud.json").write_text(json.dumps(record))
        (tmp_path / "cloud.lock").write_text(json.dumps({"pid": stranger.pid}))
        assert cli.main(["down", "--root", str(tmp_path)]) == 0
        time.sleep(0.3)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_down_stops_the_cloud_it_started(tmp_path, capsys):
    process, info = start_cloud_process(tmp_path, template=TOY, exit_with_caller=False)
    try:
        assert cli.main(["down", "--root", str(tmp_path)]) == 0
        assert f"Stopped the local cloud (pid {info.pid})" in capsys.readouterr().out
        process.wait(timeout=30)
        assert not (tmp_path / "cloud.json").exists()
    finally:
        stop_cloud_process(process)


# --- nothing outlives the cloud ------------------------------------------------------------------
def test_kill_9_of_the_cloud_leaves_no_process_behind(tmp_path):
    process, info = start_cloud_process(tmp_path, template=TOY, parameters=SLOW)
    before: list[psutil.Process] = []
    try:
        function = info.deployment["functions"]["ToyFunction"]
        answer = client(info, "lambda").invoke(FunctionName=function, Payload=b'{"spawn": 300}')
        grandchild = json.loads(answer["Payload"].read())["child_pid"]
        s3 = client(info, "s3")
        s3.create_bucket(Bucket=local_helpers.ARTIFACTS_BUCKET)
        sm = client(info, "sagemaker")
        sm.create_endpoint(
            EndpointName="orphan-test", EndpointConfigName=local_helpers.make_config(sm, s3, "v1")
        )
        assert (
            local_helpers.wait_endpoint(sm, "orphan-test", timeout=90)["EndpointStatus"]
            == "InService"
        )
        before[:] = descendants(info.pid)
        commands = [" ".join(p.cmdline()) for p in before]
        assert any("lambda_worker" in c for c in commands), commands
        assert any("model_server" in c for c in commands), commands
        assert grandchild in {p.pid for p in before}

        os.kill(info.pid, signal.SIGKILL)
        process.wait(timeout=10)
        survivors = lambda: [(p.pid, p.cmdline()) for p in before if running(p.pid)]  # noqa: E731
        assert not wait_for(
            survivors, 10, "the killed cloud's processes to exit", done=lambda s: not s
        )
    finally:
        stop_cloud_process(process)
        for leftover in before:  # a failed test still leaves nothing running
            with contextlib.suppress(psutil.Error):
                leftover.kill()


# --- the Lambda worker pool ----------------------------------------------------------------------
def lambda_workers(info, handler: str = "app.lambda_handler") -> list[psutil.Process]:
    """The live workers of one handler (ToyFunction's by default: the cloud pre-warms the
    scheduled functions too)."""
    return [p for p in descendants(info.pid) if is_lambda_worker(p, handler)]


def is_lambda_worker(process: psutil.Process, handler: str) -> bool:
    """A live worker; one that exits while we look (a zombie until its parent waits) is not."""
    try:
        command = process.cmdline()
        return (
            "mlops.local.lambda_worker" in command and handler in command and running(process.pid)
        )
    except psutil.Error:
        return False


def burst(info, function: str, count: int, event: dict) -> list[str]:
    """`count` concurrent invocations; each answers 'ok' or its error code."""
    lam = client(info, "lambda")

    def one(_: int) -> str:
        try:
            response = lam.invoke(FunctionName=function, Payload=json.dumps(event).encode())
        except ClientError as error:
            status = error.response["ResponseMetadata"]["HTTPStatusCode"]
            return f"{error.response['Error']['Code']}/{status}"
        if "FunctionError" in response:
            return json.loads(response["Payload"].read())["errorType"]
        return "ok"

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_worker_pool_is_bounded_per_function_and_idle_workers_are_reaped(tmp_path):
    env = {"MLOPS_LAMBDA_CONCURRENCY": "2", "MLOPS_LAMBDA_IDLE_TIMEOUT_S": "2"}
    process, info = start_cloud_process(tmp_path, template=TOY, parameters=SLOW, extra_env=env)
    try:
        function = info.deployment["functions"]["ToyFunction"]
        # The pre-warmed environment holds a slot while it starts: let it finish first.
        wait_for(lambda: lambda_workers(info), 60, "the pre-warmed worker", done=bool)
        answers = burst(info, function, 6, {"sleep": 1.0})
        assert answers.count("ok") >= 2, answers
        assert "TooManyRequestsException/429" in answers, answers
        assert set(answers) <= {"ok", "TooManyRequestsException/429"}, answers
        assert 1 <= len(lambda_workers(info)) <= 2

        # ReservedConcurrentExecutions (what the template sets) takes precedence
        client(info, "lambda").put_function_concurrency(
            FunctionName=function, ReservedConcurrentExecutions=1
        )
        answers = burst(info, function, 3, {"sleep": 1.0})
        assert answers.count("ok") == 1, answers
        assert answers.count("TooManyRequestsException/429") == 2, answers

        assert not wait_for(
            lambda: lambda_workers(info), 15, "idle workers reaped", done=lambda w: not w
        )
        assert burst(info, function, 1, {}) == ["ok"]  # a fresh environment after reaping
    finally:
        stop_cloud_process(process)


def test_a_throttled_task_fails_as_lambda_too_many_requests_in_step_functions(toy):
    """What the pipeline's Retry on Lambda.TooManyRequestsException sees (no Retry in the toy)."""
    _, _, info = toy
    function = info.deployment["functions"]["ToyFunction"]
    lam = client(info, "lambda")
    lam.put_function_concurrency(FunctionName=function, ReservedConcurrentExecutions=0)
    try:
        sfn = client(info, "stepfunctions")
        arn = sfn.start_execution(
            stateMachineArn=info.deployment["outputs"]["StateMachineArn"], name="throttled"
        )["executionArn"]
        execution = wait_for(
            lambda: sfn.describe_execution(executionArn=arn),
            90,
            "the throttled execution to end",
            done=lambda d: d["status"] != "RUNNING",
            interval=0.5,
        )
        assert execution["status"] != "RUNNING"
        assert execution["status"] == "FAILED"
        assert execution["error"] == "Lambda.TooManyRequestsException"
    finally:
        lam.delete_function_concurrency(FunctionName=function)


def test_deploy_prewarms_one_worker_that_serves_the_first_invocation(tmp_path):
    """Provisioned concurrency's effect: the handler is imported before the first request."""
    process, info = start_cloud_process(tmp_path, template=TOY, parameters=SLOW)
    try:
        warm = wait_for(lambda: lambda_workers(info), 60, "a pre-warmed worker", done=bool)
        assert len(warm) == 1, warm  # one environment of ToyFunction
        function = info.deployment["functions"]["ToyFunction"]
        answer = client(info, "lambda").invoke(FunctionName=function, Payload=b'{"spawn": 60}')
        child = psutil.Process(json.loads(answer["Payload"].read())["child_pid"])
        assert child.ppid() == warm[0].pid  # the handler ran in the pre-warmed environment
        assert [p.pid for p in lambda_workers(info)] == [warm[0].pid]
    finally:
        stop_cloud_process(process)
