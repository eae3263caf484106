"""`mlops`: one tool for the local cloud and for a deployed AWS stack (`--stack NAME`).

Every command prints something a person can read, and `--json` where a program reads it. Errors
end with one line that says what to do, never a stack trace.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError
from pipeline_report import executions as ex

from mlops.local.cloud_info import CloudInfo, load_info
from mlops.local.process import CloudStartError, lock_holder, start_cloud_process
from mlops.manifest import DatasetFolderError
from mlops.runs import (
    CliError,
    follow,
    out,
    predict_file,
    print_execution,
    print_validation,
    progress,
    resolve_execution,
    upload_dataset,
)
from mlops.target import DEFAULT_ROOT, TargetError, resolve_target


# -- local cloud lifecycle ---------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    holder = lock_holder(args.root)
    if holder is not None:
        out(f"The local cloud is already running (pid {holder.get('pid')}).")
        return _print_status(args)
    progress("Starting the local cloud (moto, Lambda runtime, SageMaker, API) ...")
    parameters = dict(item.split("=", 1) for item in args.parameter)
    try:
        start_cloud_process(args.root, parameters=parameters, exit_with_caller=False)
    except CloudStartError as exc:
        raise CliError(str(exc)) from None
    return _print_status(args)


def running_cloud(root: Path) -> CloudInfo | None:
    """cloud.json's cloud if it provably runs: the state folder's lock is held and the process
    with that PID has the start time recorded. A stale file (the PID reused by another
    process, or no lock) gives None."""
    info = load_info(root)
    if info is None or lock_holder(root) is None:
        return None
    return info if info.identity().alive() else None


def cmd_down(args: argparse.Namespace) -> int:
    info = load_info(args.root)
    cloud = running_cloud(args.root)
    if cloud is None:
        if info is not None:
            out(
                f"No local cloud is running: {args.root / 'cloud.json'} named pid {info.pid}, "
                "which is not a local cloud of this folder any more; it was left alone."
            )
            (args.root / "cloud.json").unlink(missing_ok=True)
        else:
            out("No local cloud is running.")
        return 0
    identity = cloud.identity()
    os.kill(identity.pid, signal.SIGTERM)
    deadline = time.time() + 60
    while identity.alive() and time.time() < deadline:
        time.sleep(0.2)
    if identity.alive():  # still the same process (start time checked): its group is ours
        os.killpg(identity.pid, signal.SIGKILL)
    out(f"Stopped the local cloud (pid {identity.pid}).")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """Start empty: delete the state `mlops up` restores (asks first unless --yes)."""
    from mlops.reset import reset_state

    running = running_cloud(args.root) is not None
    done, message = reset_state(args.root, running, args.yes)
    if not done and running:
        raise CliError(message)
    out(message)
    return 0 if done else 1


def cmd_status(args: argparse.Namespace) -> int:
    return _print_status(args)


def _print_status(args: argparse.Namespace) -> int:
    info = running_cloud(args.root)
    if info is None:
        out("No local cloud is running: `mlops up` starts one.")
        return 1
    if args.json:
        out(json.dumps(info.to_json(), indent=2))
        return 0
    outputs = info.deployment["outputs"]
    out(f"Local cloud running (pid {info.pid}), state in {args.root}/")
    out(f"  AWS endpoint (S3, Step Functions, Lambda, Logs, SNS): {info.moto_url}")
    out(f"  SageMaker endpoint:                                   {info.sagemaker_url}")
    out(f"  API:  {info.api_url}   (x-api-key: {info.api_key})")
    for key in sorted(outputs):
        out(f"  {key}: {outputs[key]}")
    if info.deployment.get("not_emulated"):
        out("  Not emulated locally: " + ", ".join(info.deployment["not_emulated"]))
    out("  `eval $(mlops env)` points the aws CLI, boto3 and the sagemaker SDK here.")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    info = running_cloud(args.root)
    if info is None:
        raise CliError("No local cloud is running: run `mlops up` first")
    for key, value in info.client_env().items():
        out(f"export {key}={value}")
    return 0


# -- schedules (local cloud only) ----------------------------------------------------------------
def cmd_schedule(args: argparse.Namespace) -> int:
    """List the local cloud's scheduled rules and schedules, or fire one now."""
    import requests

    if args.stack:
        raise CliError(
            "`mlops schedule` drives the local cloud's scheduler; on AWS, EventBridge runs the "
            "stack's schedules (aws events list-rules, aws scheduler list-schedules)"
        )
    info = running_cloud(args.root)
    if info is None:
        raise CliError("No local cloud is running: run `mlops up` first")
    base = f"{info.moto_url}/_mlops/schedules"
    try:
        if args.action == "list":
            response = requests.get(base, timeout=30)
        else:
            if not args.name:
                raise CliError("`mlops schedule run NAME`: name the rule or schedule to fire")
            response = requests.post(f"{base}/{quote(args.name, safe='')}/run", timeout=60)
    except requests.RequestException as exc:
        raise CliError(
            f"the local cloud did not answer ({exc}); check it with `mlops status`"
        ) from None
    body = response.json()
    if response.status_code != 200:
        raise CliError(body.get("message", response.text))
    if args.json:
        out(json.dumps(body, indent=2))
    elif args.action == "list":
        for item in body["schedules"]:
            out(
                f"{item['name']}  {item['kind']}  {item['expression']}  {item['state']}  "
                f"next {item['next'] or '-'}  last {item['last_fired'] or '-'}"
            )
    else:
        for invocation in body["invocations"]:
            verdict = "invoked" if invocation["accepted"] else f"NOT invoked: {invocation['error']}"
            out(f"{invocation['scheduled']} -> {invocation['target']}: {verdict}")
    failed = any(not i["accepted"] for i in body.get("invocations", []))
    return 1 if failed else 0


# -- data ----------------------------------------------------------------------------------------
def cmd_sample_data(args: argparse.Namespace) -> int:
    from mlops.sample_data import write_digits

    summary = write_digits(args.directory, max_per_class=args.per_class, seed=args.seed)
    counts = {split: sum(per_class.values()) for split, per_class in summary["splits"].items()}
    out(f"Wrote the digits data set to {args.directory}: {counts} images in 10 classes")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    target = resolve_target(args.stack, args.root)
    execution = upload_dataset(
        target, args.directory, args.name, not args.no_checksums, args.start_timeout
    )
    out(f"Started execution {execution['name']}")
    valid = print_validation(target, execution, args.start_timeout)
    out(f"  follow it with: mlops wait {execution['name']}")
    return 0 if valid is not False else 1


# -- executions ----------------------------------------------------------------------------------
def cmd_executions(args: argparse.Namespace) -> int:
    target = resolve_target(args.stack, args.root)
    items = ex.list_executions(target.client("stepfunctions"), target.state_machine_arn)
    if args.json:
        out(json.dumps(items, default=str, indent=2))
        return 0
    if not items:
        out("No executions yet: `mlops upload DIR --name NAME` starts one.")
        return 0
    out(f"{'NAME':48} {'STATUS':10} {'STARTED':20} DURATION")
    for item in items:
        stop = item.get("stopDate")
        duration = f"{(stop - item['startDate']).total_seconds():.0f}s" if stop else "-"
        started = item["startDate"].strftime("%Y-%m-%d %H:%M:%S")
        out(f"{item['name']:48} {item['status']:10} {started:20} {duration}")
    return 0


def cmd_execution(args: argparse.Namespace) -> int:
    target = resolve_target(args.stack, args.root)
    view = ex.describe(target.client("stepfunctions"), resolve_execution(target, args.execution))
    if args.json:
        out(json.dumps(view.to_json(), default=str, indent=2))
        return 0
    print_execution(view)
    return 0 if view.status != "FAILED" else 1


def cmd_wait(args: argparse.Namespace) -> int:
    target = resolve_target(args.stack, args.root)
    sfn = target.client("stepfunctions")
    view = follow(
        sfn,
        resolve_execution(target, args.execution),
        args.poll,
        args.timeout,
        target.client("sagemaker"),
        target.client("logs"),
    )
    print_execution(view)
    return 0 if view.status == "SUCCEEDED" else 1


# -- the model registry -------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from mlops.models import list_versions, print_versions

    versions = list_versions(resolve_target(args.stack, args.root), args.dataset)
    if args.json:
        out(json.dumps([v.to_json() for v in versions], indent=2))
        return 0
    for line in print_versions(versions):
        out(line)
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from mlops.models import decide

    approved = args.command == "approve"
    if not approved and not args.reason:
        raise CliError("Say why with --reason: it is kept on the version and ends its run")
    target = resolve_target(args.stack, args.root)
    decision = decide(target, args.dataset, args.version, approved, args.reason)
    if args.json:
        out(decision.model_dump_json(indent=2))
        return 0
    then = "its run deploys it now" if approved else "its run ends ModelRejected"
    out(f"Version {args.version} of {args.dataset}: {decision.summary}; {then}.")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """The chain of one version; against a stack each element's AWS console page too (the local
    cloud's pages are `mlops console`'s, whose address this command does not know)."""
    from pipeline_report.lineage import link_region, link_url

    from mlops.models import lineage

    target = resolve_target(args.stack, args.root)
    links = lineage(target, args.dataset, args.version)
    region = link_region(target)
    if args.json:
        rows = [{**vars(link), "url": link_url(link, region)} for link in links]
        out(json.dumps(rows, indent=2))
        return 0
    for depth, link in enumerate(links):
        arrow = "  " * depth + ("-> " if depth else "")
        out(f"{arrow}{link.kind}: {link.name}" + (f"  ({link.detail})" if link.detail else ""))
        url = link_url(link, region) if region else None
        if url:
            out(f"{'  ' * depth}   {url}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from mlops.monitoring import latest_findings, print_findings, run_monitor

    target = resolve_target(args.stack, args.root)
    if args.action == "run":
        result = run_monitor(target)
        if args.json:
            out(json.dumps(result, indent=2))
            return 0
        out(
            f"{result.get('endpoint_name')}: {result.get('status')} ({result.get('requests', 0)} "
            f"answers checked){' - ' + result['detail'] if result.get('detail') else ''}"
        )
        if result.get("retrain_execution"):
            out(f"Started a retrain: {result['retrain_execution']}")
        return 0
    records = latest_findings(target, args.limit)
    if args.json:
        out(json.dumps(records, indent=2))
        return 0
    for line in print_findings(records):
        out(line)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from mlops.models import deploy_version, rollback

    target = resolve_target(args.stack, args.root)
    if args.command == "rollback":
        arn, package = rollback(target)
        out(f"Rolling back to {package['ModelPackageArn']}")
    else:
        arn = deploy_version(target, args.dataset, args.version)
    out(f"Started execution {arn.rsplit(':', 1)[-1]} (blue/green update, smoke test, report)")
    if args.no_wait:
        return 0
    view = follow(target.client("stepfunctions"), arn, args.poll, args.timeout)
    print_execution(view)
    return 0 if view.status == "SUCCEEDED" else 1


# -- reports and the console ---------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from pipeline_report.build import write_report

    target = resolve_target(args.stack, args.root)
    try:
        path, report = write_report(target, args.execution, args.out)
    except LookupError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        out(json.dumps({"path": str(path), **report.to_json()}, default=str, indent=2))
    else:
        out(str(path))
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from mlops.console import serve

    target = resolve_target(args.stack, args.root)
    try:
        serve(target, args.host, args.port, out)
    except OSError as exc:
        raise CliError(
            f"Cannot serve the console on {args.host}:{args.port} ({exc}): pick another --port "
            "(0 picks a free one)"
        ) from None
    return 0


# -- predictions ---------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    import requests

    target = resolve_target(args.stack, args.root)
    results = []
    for image in args.images:
        results.append(predict_file(target, image, requests))
    if args.json:
        out(json.dumps(results, indent=2))
    else:
        for result in results:
            if "error" in result:
                out(f"{result['image']}: HTTP {result['status']}: {result['error']}")
            else:
                top = result["top_k"][0]["probability"] if result.get("top_k") else float("nan")
                out(f"{result['image']}: {result['class_index']} {result['label']} ({top:.3f})")
    return 0 if all("error" not in r for r in results) else 1


# -- the demo ------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from mlops.demo import run_demo

    return run_demo(args.root, args.data_dir, args.timeout)


# -- publishing (AWS) ----------------------------------------------------------------------------
def cmd_publish_training(args: argparse.Namespace) -> int:
    from mlops.packaging import publish_training_source

    target = resolve_target(args.stack, args.root)
    uris = publish_training_source(target.client("s3"), target.artifacts_bucket)
    out(f"Published the training source to {uris['source']} and {uris['metrics']}")
    return 0


def cmd_image_parameters(args: argparse.Namespace) -> int:
    from mlops.images import image_parameters

    images = image_parameters(
        args.region,
        training_instance_type=args.training_instance_type,
        inference_instance_type=args.inference_instance_type,
    )
    out(" ".join(f"{key}={value}" for key, value in images.items()))
    return 0


# -- argument parsing ----------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="local cloud state folder")
    common.add_argument("--stack", help="a deployed AWS stack instead of the local cloud")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    class Commands:
        @staticmethod
        def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
            return subparsers.add_parser(name, parents=[common], **kwargs)

    commands = Commands()

    up = commands.add_parser("up", help="start the local cloud in the background")
    up.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter override for the local deployment (repeatable)",
    )
    up.set_defaults(func=cmd_up)
    commands.add_parser("down", help="stop the local cloud").set_defaults(func=cmd_down)
    reset = commands.add_parser(
        "reset", help="delete the local cloud's saved state (the next `up` starts empty)"
    )
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(func=cmd_reset)
    commands.add_parser("status", help="where the local cloud answers").set_defaults(
        func=cmd_status
    )
    commands.add_parser(
        "env", help="shell exports for the aws CLI / boto3 / sagemaker SDK"
    ).set_defaults(func=cmd_env)

    schedule = commands.add_parser(
        "schedule", help="the local cloud's scheduled rules and schedules: list, or run one now"
    )
    schedule.add_argument("action", choices=["list", "run"])
    schedule.add_argument("name", nargs="?", help="run: the rule's or schedule's name")
    schedule.set_defaults(func=cmd_schedule)

    sample = commands.add_parser("sample-data", help="write the digits data set (dog-breed layout)")
    sample.add_argument("directory", type=Path)
    sample.add_argument("--per-class", type=int, default=None, help="cap images per class")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_sample_data)

    upload = commands.add_parser("upload", help="upload a data set; the manifest starts a run")
    upload.add_argument("directory", type=Path)
    upload.add_argument("--name", required=True, help="data set name (lowercase, digits, '-')")
    upload.add_argument("--no-checksums", action="store_true", help="leave sha256 out")
    upload.add_argument("--start-timeout", type=float, default=60.0)
    upload.set_defaults(func=cmd_upload)

    commands.add_parser("executions", help="list executions, newest first").set_defaults(
        func=cmd_executions
    )
    execution = commands.add_parser("execution", help="one execution, state by state")
    execution.add_argument("execution", help="name, ARN or 'latest'")
    execution.set_defaults(func=cmd_execution)
    wait = commands.add_parser("wait", help="follow an execution until it ends")
    wait.add_argument("execution", help="name, ARN or 'latest'")
    wait.add_argument("--poll", type=float, default=2.0, help="seconds between checks")
    wait.add_argument("--timeout", type=float, default=3600.0)
    wait.set_defaults(func=cmd_wait)

    models = commands.add_parser(
        "models", help="the registered model versions, newest first, and which one serves"
    )
    models.add_argument("--dataset", help="only this data set's versions")
    models.set_defaults(func=cmd_models)
    for verb in ("approve", "reject"):
        decide = commands.add_parser(
            verb, help=f"{verb} a model version that waits for a decision (ApprovalMode manual)"
        )
        decide.add_argument("version", type=int, help="the version number `mlops models` shows")
        decide.add_argument("--dataset", required=True, help="the data set the version is of")
        decide.add_argument("--reason", help="why (required to reject); kept on the version")
        decide.set_defaults(func=cmd_decide)
    deploy = commands.add_parser(
        "deploy", help="put an Approved model version on the endpoint (blue/green, smoke test)"
    )
    deploy.add_argument("version", type=int, help="the version number `mlops models` shows")
    deploy.add_argument("--dataset", required=True, help="the data set the version is of")
    lineage = commands.add_parser(
        "lineage", help="where a model version came from and where it is deployed"
    )
    lineage.add_argument("version", type=int, help="the version number `mlops models` shows")
    lineage.add_argument("--dataset", required=True, help="the data set the version is of")
    lineage.set_defaults(func=cmd_lineage)
    back = commands.add_parser(
        "rollback", help="put back the model version the endpoint served before its current one"
    )
    for command in (deploy, back):
        command.add_argument("--no-wait", action="store_true", help="start it and return")
        command.add_argument("--poll", type=float, default=2.0, help="seconds between checks")
        command.add_argument("--timeout", type=float, default=3600, help="give up after this")
        command.set_defaults(func=cmd_deploy)
    monitor = commands.add_parser(
        "monitor", help="drift findings of the endpoint (`monitor run`: check now)"
    )
    monitor.add_argument("action", nargs="?", choices=["show", "run"], default="show")
    monitor.add_argument("--limit", type=int, default=5, help="how many findings to show")
    monitor.set_defaults(func=cmd_monitor)
    report = commands.add_parser("report", help="write one execution's HTML report")
    report.add_argument("execution", help="name, ARN or 'latest'")
    report.add_argument(
        "--out", type=Path, default=Path("out/reports"), help="folder to write the file to"
    )
    report.set_defaults(func=cmd_report)
    console = commands.add_parser("console", help="serve the executions console over HTTP")
    console.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    console.add_argument("--host", default="127.0.0.1", help="address to listen on")
    console.set_defaults(func=cmd_console)

    predict = commands.add_parser("predict", help="POST images to the API")
    predict.add_argument("images", type=Path, nargs="+")
    predict.set_defaults(func=cmd_predict)

    demo = commands.add_parser("demo", help="the whole pipeline locally, ending in predictions")
    demo.add_argument("--data-dir", type=Path, default=Path("data/digits"))
    demo.add_argument("--timeout", type=float, default=1800.0, help="seconds for the execution")
    demo.set_defaults(func=cmd_demo)

    publish = commands.add_parser(
        "publish-training", help="upload the training source and metric definitions"
    )
    publish.set_defaults(func=cmd_publish_training)
    images = commands.add_parser(
        "image-parameters",
        help="TrainingImage/InferenceImage/RuleEvaluatorImage overrides for sam deploy",
    )
    images.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    images.add_argument("--training-instance-type", default="ml.g4dn.xlarge")
    images.add_argument("--inference-instance-type", default="ml.m5.large")
    images.set_defaults(func=cmd_image_parameters)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, TargetError, DatasetFolderError, CloudStartError) as exc:
        print(f"mlops: error: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        # An AWS (or local cloud) call failed after botocore's retries: one line that names the
        # call and what to check, never a stack trace.
        print(f"mlops: error: {exc}; check the cloud with `mlops status`", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
