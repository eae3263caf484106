"""One warm Lambda execution environment: imports a handler once and serves invocations.

The local Lambda runtime starts one of these per concurrent invocation of a function, the way
AWS keeps a container warm between invocations. Invocations arrive as JSON lines on one pipe and
results leave on another, so that whatever the handler prints (Powertools logs) stays on
stdout/stderr, which the runtime forwards to CloudWatch Logs.

A request marked ``"hang": true`` (the fault ``lambda_hang``, mlops/local/faults.py) is never
handed to the handler: the worker blocks until the runtime's timeout kills it, like a handler
stuck on a call that never answers.

Run as: python -m mlops.local.lambda_worker --handler app.lambda_handler --in-fd N --out-fd M
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LocalLambdaContext:
    """The attributes of AWS's LambdaContext that handlers and Powertools read."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_epoch_s: float
    identity: Any = None
    client_context: Any = None
    _start: float = field(default_factory=time.time)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline_epoch_s - time.time()) * 1000))


def load_handler(spec: str) -> Any:
    """Import `module.function` from the code directory (the worker's working directory)."""
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        raise ValueError(f"Handler {spec!r} must look like 'module.function'")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    return getattr(module, function_name)


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The body AWS Lambda returns for an unhandled error (errorType drives Retry/Catch)."""
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        # Like AWS, the trace starts at the handler: the worker's own frame is left out.
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:]),
    }


def hang(requests: Any, context: LocalLambdaContext) -> None:
    """Block without answering until the runtime kills this worker (or goes away itself).

    Reading the request pipe to its end blocks: the runtime sends nothing more to a worker that
    has not answered, and the pipe ends only when the runtime closes it, so a worker whose
    runtime died does not outlive it.
    """
    print(
        f"fault lambda_hang: RequestId {context.aws_request_id} blocks until the timeout",
        flush=True,
    )
    requests.read()


def serve(handler_spec: str, requests: Any, responses: Any) -> None:
    try:
        handler = load_handler(handler_spec)
    except Exception as exc:  # an import error is reported per invocation, as AWS does
        handler = None
        import_error = {**error_payload(exc), "errorType": "Runtime.ImportModuleError"}
    for line in requests:
        request = json.loads(line)
        context = LocalLambdaContext(**request["context"])
        print(f"START RequestId: {context.aws_request_id} Version: $LATEST", flush=True)
        started = time.perf_counter()
        if request.get("hang"):
            hang(requests, context)
            return
        if handler is None:
            result, failed = import_error, True
            traceback.print_exception(ImportError(import_error["errorMessage"]), file=sys.stderr)
        else:
            try:
                result, failed = handler(request["event"], context), False
            except Exception as exc:
                traceback.print_exc()
                result, failed = error_payload(exc), True
        sys.stdout.flush()
        sys.stderr.flush()
        duration_ms = (time.perf_counter() - started) * 1000
        print(f"END RequestId: {context.aws_request_id}", flush=True)
        print(
            f"REPORT RequestId: {context.aws_request_id}\tDuration: {duration_ms:.2f} ms",
            flush=True,
        )
        responses.write(json.dumps({"result": result, "failed": failed}, default=str) + "\n")
        responses.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--handler", required=True, help="module.function")
    parser.add_argument("--in-fd", type=int, required=True, help="pipe carrying invocations")
    parser.add_argument("--out-fd", type=int, required=True, help="pipe carrying results")
    args = parser.parse_args()
    with os.fdopen(args.in_fd, "r") as requests, os.fdopen(args.out_fd, "w") as responses:
        serve(args.handler, requests, responses)


if __name__ == "__main__":
    main()
