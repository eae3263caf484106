"""The local cloud's Lambda runtime: moto stores functions, this runs them.

moto's Lambda needs Docker to run code. We replace exactly one method,
`moto.awslambda.models.LambdaFunction.invoke`, which serves both the Lambda Invoke API (what the
Step Functions interpreter calls for Task states) and S3 bucket notifications. Each invocation
runs the function's real handler from its deployed code package (the zip moto stores), with its
layers on the path and its Environment, in a warm worker process of its own. Errors come back the
way AWS Lambda returns them (X-Amz-Function-Error: Unhandled, errorType, errorMessage), so the
state machine's Retry and Catch see what they would see on AWS.

The fault ``lambda_hang`` (mlops/local/faults.py) makes the worker block instead of calling the
handler, so the timeout below fires for real: nothing answers Sandbox.Timedout on its behalf.

The pool is bounded per function as AWS bounds concurrency: at most ReservedConcurrentExecutions
(from the template) or MLOPS_LAMBDA_CONCURRENCY (default 32) environments run or wait warm for
one function; an invocation beyond that is answered TooManyRequestsException (HTTP 429), which
the state machine retries as Lambda.TooManyRequestsException, and an asynchronous one (an S3
event) waits for a free environment, as Lambda's event queue does. An environment idle for
MLOPS_LAMBDA_IDLE_TIMEOUT_S (default 300 s) is stopped.

Pre-warming (`prewarm`, called by the local cloud after it deploys the template): one environment
per function is started in the background, one after the other, so the handler's imports (0.3-0.5
s each, docs/performance.md) run while the data set uploads instead of inside the first execution's
steps. This is what provisioned concurrency does on AWS (an environment initialised before the
first request); the handler's init code runs exactly as on a cold start, only earlier, and the
environment is reaped after the same idle timeout as any other. MLOPS_LAMBDA_PREWARM=0 turns it
off (each function then starts cold on its first invocation, as on AWS without provisioned
concurrency).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import LambdaFunction
from moto.awslambda.utils import get_backend
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.exceptions import JsonRESTError

from mlops.local import emf
from mlops.local.faults import Faults
from mlops.local.process import forget_group, spawn

log = logging.getLogger(__name__)

# Lambda's synchronous (RequestResponse) payload limits, "6 MB" in the quotas page; the exact
# numbers are those Lambda's own errors name (docs/limits.md has the sources).
SYNC_REQUEST_LIMIT_BYTES = 6 * 1024 * 1024  # 6,291,456
SYNC_RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024 + 100  # 6,291,556
ASYNC_RETRY_ATTEMPTS = 2  # AWS retries a failed asynchronous invocation twice.
ASYNC_RETRY_DELAY_S = 1.0
ASYNC_THROTTLE_WAIT_S = 600.0  # how long an event waits for a free environment (AWS: 6 h)
DEFAULT_CONCURRENCY = 32  # per function, when the template reserves none
DEFAULT_IDLE_TIMEOUT_S = 300.0
PREWARM_ENV = "MLOPS_LAMBDA_PREWARM"  # "0" turns pre-warming off


class TooManyRequestsException(JsonRESTError):
    """What Lambda answers when a function's concurrency is used up (HTTP 429)."""

    code = 429

    def __init__(self, function_name: str, limit: int) -> None:
        super().__init__("TooManyRequestsException", "Rate Exceeded.")
        reason = "ReservedFunctionConcurrentInvocationLimitExceeded"
        self.description = json.dumps(
            {"__type": self.error_type, "message": self.message, "Reason": reason, "Type": "User"}
        )
        log.info("throttled %s: %d concurrent executions in use", function_name, limit)


class RequestEntityTooLargeException(LambdaClientError):
    """What Lambda's Invoke API answers (HTTP 413) to a synchronous request over the limit."""

    code = 413

    def __init__(self) -> None:
        super().__init__(
            "RequestEntityTooLargeException",
            f"Request must be smaller than {SYNC_REQUEST_LIMIT_BYTES} bytes for the "
            "InvokeFunction operation",
        )


def check_sync_request_size(body: bytes | str | None) -> None:
    """Refuse a RequestResponse invocation whose payload Lambda would not accept; the function
    never runs (moto checks no request size)."""
    size = len(body.encode() if isinstance(body, str) else body or b"")
    if size > SYNC_REQUEST_LIMIT_BYTES:
        raise RequestEntityTooLargeException()


def limit_sync_response(payload: bytes, failed: bool) -> tuple[bytes, bool]:
    """A function answer over the limit becomes Lambda's Function.ResponseSizeTooLarge error
    (the Invoke call itself still succeeds, with X-Amz-Function-Error set)."""
    if len(payload) <= SYNC_RESPONSE_LIMIT_BYTES:
        return payload, failed
    error = {
        "errorMessage": "Response payload size exceeded maximum allowed payload size "
        f"({SYNC_RESPONSE_LIMIT_BYTES} bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
    return json.dumps(error).encode(), True


@dataclass
class Worker:
    """A warm execution environment for one function version."""

    process: subprocess.Popen
    requests: Any
    responses: Any
    log_stream: str
    function_name: str = ""
    last_used: float = 0.0  # time.monotonic() when it last finished an invocation

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill the worker and whatever it started (its own process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        forget_group(self.process.pid)
        for pipe in (self.requests, self.responses):
            with contextlib.suppress(OSError):
                pipe.close()


class LambdaRuntime:
    """Runs Lambda invocations in worker processes; one instance per local cloud."""

    def __init__(self, root: Path, endpoint_env: dict[str, str]) -> None:
        self.root = root
        self.endpoint_env = endpoint_env
        self._idle: dict[str, list[Worker]] = {}
        self._all: list[Worker] = []
        self._busy: dict[str, int] = {}  # function name -> invocations running now
        self._lock = threading.Lock()
        self.default_concurrency = int(
            os.environ.get("MLOPS_LAMBDA_CONCURRENCY", DEFAULT_CONCURRENCY)
        )
        self.idle_timeout_s = float(
            os.environ.get("MLOPS_LAMBDA_IDLE_TIMEOUT_S", DEFAULT_IDLE_TIMEOUT_S)
        )
        self._stopping = threading.Event()
        self._original_invoke = None
        self.invocation_count = 0
        self.faults = Faults()
        # function name -> template logical id; the local cloud fills it in after deploying
        self.logical_ids: dict[str, str] = {}
        # Execution role ARN -> AWS_ACCESS_KEY_ID/SECRET/SESSION_TOKEN of a session on it
        # (mlops.local.iam.RoleSessions); None keeps the endpoint_env's credentials.
        self.role_environment: Callable[[str], dict[str, str]] | None = None

    # -- installing the seam -------------------------------------------------------------------
    def install(self) -> None:
        runtime = self
        self._original_invoke = LambdaFunction.invoke

        def invoke(fn: LambdaFunction, body: Any, request_headers: Any, response_headers: Any):
            return runtime.invoke(fn, body, request_headers, response_headers)

        LambdaFunction.invoke = invoke  # type: ignore[method-assign]
        threading.Thread(target=self._reap_idle, name="lambda-reaper", daemon=True).start()

    def uninstall(self) -> None:
        if self._original_invoke is not None:
            LambdaFunction.invoke = self._original_invoke  # type: ignore[method-assign]
            self._original_invoke = None

    def shutdown(self) -> None:
        self._stopping.set()
        self.uninstall()
        with self._lock:
            workers, self._all, self._idle = self._all, [], {}
        for worker in workers:
            worker.stop()

    # -- invocation ----------------------------------------------------------------------------
    def invoke(
        self, fn: LambdaFunction, body: Any, request_headers: Any, response_headers: Any
    ) -> bytes:
        """Synchronous invocations answer now; asynchronous ones (S3 events) run in a thread."""
        invocation_type = request_headers.get("x-amz-invocation-type", "RequestResponse")
        # moto's S3 notifications call invoke with empty headers: that is an async event on AWS.
        from_s3_notification = isinstance(request_headers, dict) and not request_headers
        if invocation_type == "Event" or from_s3_notification:
            event = json.loads(body) if body else {}
            threading.Thread(target=self._invoke_async, args=(fn, event), daemon=True).start()
            return b""
        check_sync_request_size(body)
        result, failed = self.run(fn, json.loads(body) if body else {})
        payload, failed = limit_sync_response(json.dumps(result).encode(), failed)
        if failed:
            response_headers["x-amz-function-error"] = "Unhandled"
        return payload

    def _invoke_async(self, fn: LambdaFunction, event: Any) -> None:
        for attempt in range(1 + ASYNC_RETRY_ATTEMPTS):
            result, failed = self._run_when_free(fn, event)
            if not failed:
                return
            log.warning(
                "async invocation of %s failed (attempt %d): %s",
                fn.function_name,
                attempt + 1,
                result.get("errorMessage"),
            )
            time.sleep(ASYNC_RETRY_DELAY_S)

    def _run_when_free(self, fn: LambdaFunction, event: Any) -> tuple[Any, bool]:
        """An event waits for a free environment instead of failing, as Lambda's queue does."""
        deadline = time.monotonic() + ASYNC_THROTTLE_WAIT_S
        delay = 0.1
        while True:
            try:
                return self.run(fn, event)
            except TooManyRequestsException:
                if self._stopping.is_set() or time.monotonic() > deadline:
                    message = f"throttled for {ASYNC_THROTTLE_WAIT_S:.0f} s: event dropped"
                    return {"errorType": "TooManyRequestsException", "errorMessage": message}, True
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def run(self, fn: LambdaFunction, event: Any) -> tuple[Any, bool]:
        """Run one invocation to completion; returns (payload, failed).

        Raises TooManyRequestsException when the function's concurrency is used up."""
        self.invocation_count += 1
        key = self._worker_key(fn)
        worker = self._acquire(fn, key)
        request_id = str(uuid.uuid4())
        timeout_s = float(fn.timeout)
        request = {
            "event": event,
            "context": {
                "function_name": fn.function_name,
                "function_version": "$LATEST",
                "invoked_function_arn": fn.function_arn,
                "memory_limit_in_mb": int(fn.memory_size),
                "aws_request_id": request_id,
                "log_group_name": f"/aws/lambda/{fn.function_name}",
                "log_stream_name": worker.log_stream,
                "deadline_epoch_s": time.time() + timeout_s,
            },
        }
        if self._hangs(fn):
            request["hang"] = True  # the worker blocks; the select below times out for real
        ready: list[Any] = []
        try:
            worker.requests.write(json.dumps(request) + "\n")
            worker.requests.flush()
            ready, _, _ = select.select([worker.responses], [], [], timeout_s)
            line = worker.responses.readline() if ready else ""
        except (BrokenPipeError, ValueError):
            line = ""
        if not line:
            return self._fail_and_discard(fn, worker, timed_out=not ready, timeout_s=timeout_s)
        self._release(key, worker)
        response = json.loads(line)
        return response["result"], response["failed"]

    def _hangs(self, fn: LambdaFunction) -> bool:
        """Whether the fault ``lambda_hang`` names this function (by FunctionName or logical id)."""
        logical_id = self.logical_ids.get(fn.function_name, "")
        names = [name for name in (fn.function_name, logical_id) if name]
        return self.faults.hits_counted("lambda_hang", *names)

    def _fail_and_discard(
        self, fn: LambdaFunction, worker: Worker, timed_out: bool, timeout_s: float
    ) -> tuple[dict[str, str], bool]:
        """A timed-out or crashed environment is thrown away, as Lambda does."""
        code = worker.process.poll()
        with self._lock:
            self._busy[fn.function_name] -= 1
            self._forget(worker)
        worker.stop()
        if timed_out:
            message = f"Task timed out after {timeout_s:.2f} seconds"
            return {"errorType": "Sandbox.Timedout", "errorMessage": message}, True
        message = f"RequestId: worker exited with code {code} before answering ({fn.function_name})"
        return {"errorType": "Runtime.ExitError", "errorMessage": message}, True

    # -- pre-warming ---------------------------------------------------------------------------
    def prewarm(self, functions: list[LambdaFunction]) -> threading.Thread | None:
        """Start one warm environment per function in a background thread (see the module's
        docstring); None when MLOPS_LAMBDA_PREWARM=0."""
        if os.environ.get(PREWARM_ENV, "1") == "0":
            return None
        thread = threading.Thread(
            target=self._prewarm_all, args=(list(functions),), name="lambda-prewarm", daemon=True
        )
        thread.start()
        return thread

    def _prewarm_all(self, functions: list[LambdaFunction]) -> None:
        """One function at a time: on a small machine starting them all at once would only make
        each start slower (they share the cores with the upload)."""
        for fn in functions:
            if self._stopping.is_set():
                return
            try:
                self._prewarm_one(fn)
            except Exception as exc:  # a warm start is an optimisation; the invoke path reports
                log.warning("could not pre-warm %s: %s", fn.function_name, exc)

    def _prewarm_one(self, fn: LambdaFunction) -> None:
        """An idle environment for ``fn`` unless it has one, or its concurrency leaves no room."""
        key, name = self._worker_key(fn), fn.function_name
        with self._lock:
            warm = sum(1 for ws in self._idle.values() for w in ws if w.function_name == name)
            if self._idle.get(key) or self._busy.get(name, 0) + warm >= self.concurrency_limit(fn):
                return
            # The starting environment holds one of the function's slots, as an invocation's
            # would: invocations meanwhile cannot start more environments than the limit.
            self._busy[name] = self._busy.get(name, 0) + 1
        try:
            worker = self._start_worker(fn)
        except BaseException:
            with self._lock:
                self._busy[name] -= 1
            raise
        with self._lock:  # slot and idle environment change hands in one step
            self._busy[name] -= 1
            if not self._stopping.is_set():
                worker.last_used = time.monotonic()
                self._idle.setdefault(key, []).append(worker)
                return
            self._forget(worker)  # shut down while it started
        worker.stop()

    # -- workers -------------------------------------------------------------------------------
    def _worker_key(self, fn: LambdaFunction) -> str:
        env = json.dumps(fn.environment_vars, sort_keys=True)
        layers = ",".join(layer["Arn"] for layer in fn.layers)
        return (
            f"{fn.function_arn}|{fn.code_sha_256}|{layers}|{hashlib.sha1(env.encode()).hexdigest()}"
        )

    def concurrency_limit(self, fn: LambdaFunction) -> int:
        """ReservedConcurrentExecutions when the function has it, else the local default."""
        reserved = getattr(fn, "reserved_concurrency", None)
        return int(reserved) if reserved is not None else self.default_concurrency

    def _acquire(self, fn: LambdaFunction, key: str) -> Worker:
        """A warm worker for ``key`` or a new one, within the function's concurrency."""
        name, limit = fn.function_name, self.concurrency_limit(fn)
        evicted: list[Worker] = []
        with self._lock:
            if self._busy.get(name, 0) >= limit:
                raise TooManyRequestsException(name, limit)
            self._busy[name] = self._busy.get(name, 0) + 1
            idle = self._idle.setdefault(key, [])
            while idle:
                worker = idle.pop()
                if worker.alive():
                    return worker
                evicted.append(worker)
                self._forget(worker)
            # No warm worker for this version: make room among the function's idle ones.
            warm = [w for k, ws in self._idle.items() for w in ws if w.function_name == name]
            while warm and self._busy[name] - 1 + len(warm) >= limit:
                worker = warm.pop(0)
                evicted.append(worker)
                self._forget(worker)
        for worker in evicted:
            worker.stop()
        try:
            return self._start_worker(fn)
        except BaseException:
            with self._lock:
                self._busy[name] -= 1
            raise

    def _release(self, key: str, worker: Worker) -> None:
        with self._lock:
            self._busy[worker.function_name] -= 1
            worker.last_used = time.monotonic()
            self._idle.setdefault(key, []).append(worker)

    def _forget(self, worker: Worker) -> None:
        """Drop a worker from the pool's books (the caller holds the lock and stops it)."""
        for workers in self._idle.values():
            if worker in workers:
                workers.remove(worker)
        if worker in self._all:
            self._all.remove(worker)

    def _reap_idle(self) -> None:
        """Stop environments idle for longer than idle_timeout_s, as Lambda recycles them."""
        interval = min(max(self.idle_timeout_s / 4, 0.2), 10.0)
        while not self._stopping.wait(interval):
            cutoff = time.monotonic() - self.idle_timeout_s
            with self._lock:
                stale = [w for ws in self._idle.values() for w in ws if w.last_used < cutoff]
                for worker in stale:
                    self._forget(worker)
            for worker in stale:
                log.info("stopping idle Lambda environment of %s", worker.function_name)
                worker.stop()

    def _start_worker(self, fn: LambdaFunction) -> Worker:
        code_dir = self._unpack(fn.code_bytes, "code")
        layer_dirs = [
            self._unpack(self._layer_bytes(fn, layer["Arn"]), "layers") for layer in fn.layers
        ]
        python_path = [str(code_dir)] + [str(d / "python") for d in layer_dirs]
        log_stream = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        env = self._environment(fn, python_path, code_dir, log_stream)
        request_r, request_w = os.pipe()
        response_r, response_w = os.pipe()
        process = spawn(
            [
                sys.executable,
                "-m",
                "mlops.local.lambda_worker",
                "--handler",
                fn.handler,
                "--in-fd",
                str(request_r),
                "--out-fd",
                str(response_w),
            ],
            cwd=code_dir,
            env=env,
            pass_fds=(request_r, response_w),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        os.close(request_r)
        os.close(response_w)
        worker = Worker(
            process=process,
            requests=os.fdopen(request_w, "w"),
            responses=os.fdopen(response_r, "r"),
            log_stream=log_stream,
            function_name=fn.function_name,
        )
        threading.Thread(
            target=self._forward_logs, args=(fn, worker), daemon=True, name="lambda-logs"
        ).start()
        with self._lock:
            self._all.append(worker)
        return worker

    def _environment(
        self, fn: LambdaFunction, python_path: list[str], code_dir: Path, log_stream: str
    ) -> dict[str, str]:
        """What a Lambda sandbox sees: AWS's reserved variables, the function's, the endpoints."""
        repo_root = str(Path(__file__).resolve().parents[2])  # for mlops.local.lambda_worker
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join([*python_path, repo_root]),
            "PYTHONUNBUFFERED": "1",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "_HANDLER": fn.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(fn.timeout),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
            "AWS_REGION": fn.region,
            "AWS_DEFAULT_REGION": fn.region,
            # There is no X-Ray daemon locally; Powertools Tracer would otherwise try to reach one.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        env.update(self.endpoint_env)
        if self.role_environment is not None and fn.role:
            env.update(self.role_environment(fn.role))  # the function's execution role, as on AWS
        env.update({k: str(v) for k, v in fn.environment_vars.items()})
        return env

    def _unpack(self, zip_bytes: bytes, kind: str) -> Path:
        """Extract a deployment package once per content hash, like Lambda caching a package."""
        digest = hashlib.sha256(zip_bytes).hexdigest()[:16]
        target = self.root / "lambda" / kind / digest
        if not target.exists():
            partial = target.with_suffix(f".{uuid.uuid4().hex}.partial")
            with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
                archive.extractall(partial)
            with contextlib.suppress(OSError):  # another worker unpacked it first
                partial.rename(target)
        return target

    @staticmethod
    def _layer_bytes(fn: LambdaFunction, layer_arn: str) -> bytes:
        layer = get_backend(fn.account_id, fn.region).layers_versions_by_arn(layer_arn)
        return layer.code_bytes

    def _forward_logs(self, fn: LambdaFunction, worker: Worker) -> None:
        """Copy the worker's stdout/stderr into CloudWatch Logs, one stream per environment;
        an EMF line (Powertools Metrics) also becomes metrics, as CloudWatch Logs does it."""
        group = f"/aws/lambda/{fn.function_name}"
        logs = fn.logs_backend
        logs.ensure_log_group(group)
        logs.ensure_log_stream(group, worker.log_stream)
        for line in iter(worker.process.stdout.readline, b""):
            message = line.decode("utf-8", "replace").rstrip("\n")
            event = {"timestamp": int(time.time() * 1000), "message": message}
            try:
                logs.put_log_events(group, worker.log_stream, [event])
                put_emf_metrics(fn.account_id, fn.region, message)
            except Exception as exc:  # logging must never break an invocation
                log.debug("could not store a log line of %s: %s", fn.function_name, exc)


def put_emf_metrics(account_id: str, region: str, message: str) -> int:
    """Put the metrics of one EMF log line into moto's CloudWatch; how many data points."""
    extracted = emf.metric_data(message)
    backend = cloudwatch_backends[account_id][region] if extracted else None
    for namespace, data in extracted:
        backend.put_metric_data(namespace, data)
    return sum(len(data) for _, data in extracted)
