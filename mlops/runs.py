"""What the CLI and the demo do with a run: upload a data set, follow its execution, print it,
predict over the API.

The CLI names the execution its upload starts instead of searching for it: the trigger names
every execution `execution_name(data set, manifest version)` (pipeline_common.naming), and the
PutObject response of manifest.json carries that version. So `upload` then `wait` follows
exactly the run of this upload, even while another data set ("hotdogs" beside "dogs") uploads.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError, HTTPClientError
from pipeline_common import records
from pipeline_common.aws import error_code
from pipeline_common.naming import (
    dataset_prefix,
    execution_arn,
    execution_name,
    manifest_key,
    manifest_version_token,
)
from pipeline_report import executions as ex

from mlops.manifest import build_manifest, check_dataset_name, list_dataset_files
from mlops.target import Target
from mlops.upload import upload_client_config, upload_files

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


class CliError(RuntimeError):
    """An error the user can fix; printed as one line."""


def out(text: str = "") -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    """Progress on stderr, so that stdout stays clean for --json."""
    print(text, file=sys.stderr, flush=True)


# -- uploads and the execution they start ------------------------------------------------------
def upload_dataset(
    target: Target, directory: Path, name: str, checksums: bool = True, timeout_s: float = 60
) -> dict[str, Any]:
    """Upload every file, then manifest.json (which starts a run); return that execution."""
    name = check_dataset_name(name)
    links: list[Path] = []
    files = list_dataset_files(directory, skipped=links)
    if links:
        shown = ", ".join(str(link.relative_to(directory)) for link in links[:5])
        more = f" and {len(links) - 5} more" if len(links) > 5 else ""
        progress(f"Skipped {len(links)} symbolic link(s), not uploaded: {shown}{more}")
    s3 = target.client("s3", config=upload_client_config())
    prefix = dataset_prefix(name)
    sent = upload_files(s3, target.data_bucket, prefix, files, checksums=checksums)
    if sent.strays:
        shown = ", ".join(sent.strays[:5])
        more = f" and {len(sent.strays) - 5} more" if len(sent.strays) > 5 else ""
        progress(
            f"s3://{target.data_bucket}/{prefix} also holds {len(sent.strays)} object(s) that "
            f"{directory} does not: {shown}{more}; validation will name them (delete them "
            f"with `aws s3 rm` if they are left from an older upload)"
        )
    manifest = build_manifest(name, files, checksums=checksums, sha256=sent.sha256)
    execution = put_manifest(target, name, manifest)
    already = f" ({sent.skipped} already there)" if sent.skipped else ""
    out(
        f"Uploaded {len(files)} files{already} and manifest.json to "
        f"s3://{target.data_bucket}/{prefix} in {sent.seconds:.1f} s "
        f"({sent.files_per_s:.0f} files/s)"
    )
    return started_execution(target, execution, timeout_s)


def start_run(
    target: Target, dataset: str, manifest: dict[str, Any], timeout_s: float = 60
) -> dict[str, Any]:
    """Put `manifest` (any content: a test may send a broken one) as the data set's
    manifest.json and return DescribeExecution of the run that this very version starts."""
    return started_execution(target, put_manifest(target, dataset, manifest), timeout_s)


def put_manifest(target: Target, dataset: str, manifest: dict[str, Any]) -> str:
    """Upload manifest.json (which starts a run) and return the name of that run's execution:
    the trigger's name for this manifest version (pipeline_common.naming.execution_name)."""
    response = target.client("s3").put_object(
        Bucket=target.data_bucket,
        Key=manifest_key(dataset),
        Body=json.dumps(manifest, indent=1).encode(),
        ContentType="application/json",
    )
    token = manifest_version_token(response.get("VersionId"), response.get("ETag"))
    if token is None:
        raise CliError(
            f"S3 answered the upload of {manifest_key(dataset)} with neither a version id nor "
            "an ETag, so the run it starts cannot be named: check the data bucket's versioning"
        )
    return execution_name(dataset, token)


def started_execution(target: Target, name: str, timeout_s: float) -> dict[str, Any]:
    """DescribeExecution of `name` once the trigger has started it (S3 notifies it within
    seconds; until then Step Functions answers ExecutionDoesNotExist)."""
    sfn = target.client("stepfunctions")
    arn = execution_arn(target.state_machine_arn, name)
    deadline = time.time() + timeout_s
    while True:
        try:
            return sfn.describe_execution(executionArn=arn)
        except ClientError as exc:
            if error_code(exc) != "ExecutionDoesNotExist":
                raise
        if time.time() > deadline:
            raise CliError(
                f"Execution {name} did not start within {timeout_s:.0f} s of the upload: check "
                "the trigger function's logs"
            )
        time.sleep(0.5)


def resolve_execution(target: Target, ident: str) -> str:
    """The ARN of `ident`: 'latest', an ARN, or an execution name (its ARN is computed, never
    searched for, so "dogs-..." cannot match a "hotdogs-..." run)."""
    sfn = target.client("stepfunctions")
    if ident == "latest":
        try:
            return ex.resolve_execution_arn(sfn, target.state_machine_arn, ident)
        except LookupError as exc:
            raise CliError(str(exc)) from None
    arn = ident if ident.startswith("arn:") else execution_arn(target.state_machine_arn, ident)
    try:
        sfn.describe_execution(executionArn=arn)
    except ClientError as exc:
        if error_code(exc) != "ExecutionDoesNotExist":
            raise
        raise CliError(f"No execution named {ident!r}; `mlops executions` lists them") from None
    return arn


def print_validation(target: Target, execution: dict[str, Any], timeout_s: float) -> bool | None:
    """Wait for the run's ValidateDataset step and print what it found.

    The pipeline's own validation (every image read, per-class minimums from the template) is
    the one definition; the CLI only shows its verdict: the unreadable files training will
    skip and the warnings from validation.json, or the DatasetInvalid error. Returns True
    (valid), False (rejected) or None (no verdict within `timeout_s`).
    """
    from pipeline_report.records import read_record

    sfn = target.client("stepfunctions")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        record = read_record(target, execution["name"], records.VALIDATION)
        if record is not None:
            images = record.get("images") or {}
            count = int(images.get("unreadable_count") or 0)
            out(
                f"Validation passed: {count} unreadable image(s) will be skipped"
                if count
                else "Validation passed: every image is readable"
            )
            for warning in record.get("warnings") or []:
                out(f"  warning: {warning}")
            return True
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING":
            view = ex.describe(sfn, execution["executionArn"])
            error = view.error or described["status"]
            out(f"Validation failed: {error}: {short_cause(view.cause)}")
            return False
        time.sleep(1.0)
    out(f"No validation result within {timeout_s:.0f} s; see `mlops wait {execution['name']}`")
    return None


# -- following and printing an execution ---------------------------------------------------------
def print_execution(view: ex.ExecutionView) -> None:
    duration = f"{view.duration_s:.0f}s" if view.duration_s is not None else "running"
    out(f"Execution {view.name}: {view.status} ({duration})")
    out(f"  {'STATE':28} {'STATUS':10} {'START':9} {'VISITS':>6} {'DURATION':>9}")
    for row in ex.summarize_steps(view.steps):
        took = f"{row.duration_s:.1f}s" if row.duration_s is not None else "-"
        out(
            f"  {row.name:28} {row.status:10} {row.started.strftime('%H:%M:%S'):9} "
            f"{row.visits:>6} {took:>9}"
        )
        if row.error:
            out(f"      error: {row.error}: {short_cause(row.cause)}")
    if view.error:
        out(f"  Failed with {view.error}: {short_cause(view.cause)}")


def short_cause(cause: str | None, limit: int = 400) -> str:
    if not cause:
        return ""
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            cause = parsed["errorMessage"]
    except ValueError:
        pass
    return cause if len(cause) <= limit else cause[:limit] + " ..."


def follow(
    sfn: Any,
    arn: str,
    poll_s: float,
    timeout_s: float,
    sagemaker: Any = None,
    logs: Any = None,
) -> ex.ExecutionView:
    """Print each state as the execution enters it (a wait loop once), until it stops.

    With a SageMaker client, also one line whenever the tuning job's trials or best objective
    change, or the retrain's status or epoch (its log stream's metric lines, with `logs`).
    """
    from pipeline_report.progress import execution_progress

    deadline = time.time() + timeout_s
    started = time.time()
    printed: list[str] = []
    last_progress: str | None = None
    history = ex.History(arn)
    while True:
        view = _describe_when_answered(sfn, arn, history, deadline, started)
        if view is None:
            time.sleep(poll_s)
            continue
        for row in ex.summarize_steps(view.steps):
            if row.name in printed or row.state_type in ("Wait", "Choice", "Pass"):
                continue
            printed.append(row.name)
            progress(f"[{time.time() - started:5.0f}s] {row.name}")
        line = execution_progress(view, sagemaker, logs) if sagemaker is not None else None
        if line and line != last_progress:
            progress(f"[{time.time() - started:5.0f}s]   {line}")
        last_progress = line or last_progress
        if view.status in TERMINAL:
            return view
        if time.time() > deadline:
            raise CliError(f"Execution {view.name} still {view.status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _describe_when_answered(
    sfn: Any, arn: str, history: ex.History, deadline: float, started: float
) -> ex.ExecutionView | None:
    """The execution's view, or None when the cloud did not answer this time.

    A busy machine can keep the local cloud from answering within botocore's read timeout
    (60 s, retried); a run that is still going must not end the CLI with a stack trace, so
    following goes on until its own deadline and then says what happened.
    """
    try:
        return ex.describe(sfn, arn, history)
    except (HTTPClientError, EndpointConnectionError) as exc:
        if time.time() > deadline:
            raise CliError(
                f"The cloud did not answer about {arn.rsplit(':', 1)[-1]} ({exc}); "
                "check it with `mlops status` and follow the run again with `mlops wait`"
            ) from None
        progress(
            f"[{time.time() - started:5.0f}s] the cloud did not answer ({type(exc).__name__}); "
            "still following"
        )
        return None


# -- predictions ---------------------------------------------------------------------------------
def predict_file(target: Target, image: Path, requests: Any) -> dict[str, Any]:
    content_type = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
    headers = {"Content-Type": content_type}
    if target.api_key:
        headers["x-api-key"] = target.api_key
    response = requests.post(
        f"{target.api_url}/predict", data=image.read_bytes(), headers=headers, timeout=60
    )
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text[:200]}
    if response.status_code != 200:
        message = body.get("message") or body.get("error") or str(body)
        return {"image": str(image), "status": response.status_code, "error": message}
    return {"image": str(image), **body}
