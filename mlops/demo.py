"""`mlops demo`: the whole pipeline on the local cloud, from data to a prediction over HTTP.

It starts the local cloud, writes the digits data set (scikit-learn's, in the dog-breed layout),
uploads it (the manifest starts the execution), follows the execution, prints what the run
decided (leaderboard, best hyperparameters, rule findings, gate) and predicts held-back test
images through the API. The local cloud is stopped at the end, also when something fails.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import requests
from botocore.exceptions import ClientError
from pipeline_common.naming import class_label
from pipeline_common.records import (
    DEPLOYMENT,
    GATE,
    LEADERBOARD,
    REGISTRATION,
    REPORT,
    record_key,
)
from pipeline_report.records import read_record

from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.runs import CliError, follow, out, predict_file, print_execution, upload_dataset
from mlops.target import Target, local_target

DATASET = "digits"
PREDICTIONS_PER_CLASS = 1
REPORTS_DIR = Path("out/reports")  # where `mlops report` writes too


def run_demo(root: Path, data_dir: Path, timeout_s: float) -> int:
    started = time.time()
    if not (data_dir / "train").is_dir():
        from mlops.sample_data import write_digits

        write_digits(data_dir)
        out(f"Wrote the digits data set to {data_dir}")
    out("Starting the local cloud ...")
    process, _ = start_cloud_process(root)
    try:
        target = local_target(root)
        execution = upload_dataset(target, data_dir, DATASET)
        out(f"Execution {execution['name']} started; following it:")
        sfn = target.client("stepfunctions")
        view = follow(
            sfn,
            execution["executionArn"],
            poll_s=2.0,
            timeout_s=timeout_s,
            sagemaker=target.client("sagemaker"),
            logs=target.client("logs"),
        )
        print_execution(view)
        print_run_records(target, view.name)
        save_pipeline_report(target, view.name, REPORTS_DIR)
        gate = read_record(target, view.name, GATE)
        if view.status != "SUCCEEDED":
            raise CliError(failure_advice(view.status, view.error, view.cause, gate))
        accuracy, errors = predict_held_back_images(target, data_dir)
        required = float((gate or {}).get("min_test_accuracy") or 0.0)
        if errors or accuracy < required:
            raise CliError(
                f"the run SUCCEEDED but {errors} held-back prediction(s) failed over HTTP and "
                f"{accuracy:.0%} were correct (the gate's MinTestAccuracy is {required:.0%}): "
                "see the predictions above and the endpoint's logs (mlops report)"
            )
        out(
            f"\nDemo finished in {time.time() - started:.0f} s: execution {view.status}, "
            f"{accuracy:.0%} of the held-back images predicted correctly over HTTP."
        )
        return 0
    finally:
        out("Stopping the local cloud ...")
        stop_cloud_process(process)


def failure_advice(
    status: str, error: str | None, cause: str | None, gate: dict[str, Any] | None
) -> str:
    """Why the demo's run did not succeed, in one line, with what to change."""
    if error == "ModelRejected" and gate:
        blocking = [f for f in gate.get("findings", []) if f.get("severity") == "block"]
        names = ", ".join(f"{f['check']} {f['status']}" for f in blocking) or "the gate"
        if any(f.get("source") == "quality" for f in blocking):
            change = (
                "raise Epochs or lower MinTestAccuracy in samconfig.toml [local.deploy.parameters]"
            )
        else:
            change = (
                "move the rule to warn: in GatePolicy (samconfig.toml [local.deploy.parameters]) "
                "or try another Seed, and report it: the demo's default run should pass"
            )
        return f"the execution ended {status}: the gate rejected the model ({names}); {change}"
    if error == "DatasetInvalid":
        return (
            f"the execution ended {status}: the data set was refused ({(cause or '')[:200]}); "
            "delete data/digits so the demo writes it again"
        )
    return (
        f"the execution ended {status} with {error or 'no error name'}: "
        f"{(cause or 'see the states above')[:200]}; the run report in {REPORTS_DIR} has the "
        "details"
    )


def save_pipeline_report(target: Target, execution: str, out_dir: Path) -> None:
    """Copy the report the pipeline wrote (its WriteReport step) out of the local cloud, whose
    buckets go away when the demo stops it."""
    key = record_key(execution, REPORT)
    try:
        body = target.client("s3").get_object(Bucket=target.artifacts_bucket, Key=key)["Body"]
    except ClientError as exc:
        out(f"\nNo report in s3://{target.artifacts_bucket}/{key} ({exc}); see the states above")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{execution}.html"
    path.write_bytes(body.read())
    out(f"\nRun report (written by the pipeline's WriteReport step): {path}")


def print_run_records(target: Target, execution: str) -> None:
    leaderboard = read_record(target, execution, LEADERBOARD)
    if leaderboard:
        print_leaderboard(leaderboard)
    gate = read_record(target, execution, GATE)
    if gate:
        print_gate(gate)
    registered = read_record(target, execution, REGISTRATION)
    if registered:
        out(
            f"\nModel registry: version {registered.get('model_package_version')} of "
            f"{registered.get('model_package_group_name')}, {registered.get('approval_status')} "
            "(`mlops models` lists the versions)"
        )
    deployment = read_record(target, execution, DEPLOYMENT)
    if deployment:
        out(
            f"Endpoint {deployment.get('endpoint_name')}: {deployment.get('operation')} with "
            f"model {deployment.get('model_name')}"
        )


def print_leaderboard(leaderboard: dict[str, Any]) -> None:
    objective = leaderboard.get("objective", {})
    out(
        f"\nTuning job {leaderboard.get('tuning_job_name')} ({leaderboard.get('strategy')}, "
        f"objective {objective.get('metric')} {objective.get('type')}):"
    )
    trials = sorted(
        leaderboard.get("trials", []),
        key=lambda t: (t.get("objective") is None, t.get("objective") or 0.0),
    )
    out(f"  {'TRAINING JOB':44} {'STATUS':10} {'OBJECTIVE':>10}  HYPERPARAMETERS")
    for trial in trials:
        value = trial.get("objective")
        shown = f"{value:.4f}" if isinstance(value, int | float) else "-"
        params = ", ".join(f"{k}={v}" for k, v in sorted(trial.get("hyperparameters", {}).items()))
        out(f"  {trial['training_job_name']:44} {trial['status']:10} {shown:>10}  {params}")
    best = next(
        (t for t in trials if t["training_job_name"] == leaderboard.get("best_training_job_name")),
        None,
    )
    if best:
        out(f"  best hyperparameters: {json.dumps(best.get('hyperparameters', {}))}")


def print_gate(gate: dict[str, Any]) -> None:
    decision = "APPROVED" if gate.get("approved") else "REJECTED"
    out(f"\nRules and gate: {decision}")
    for finding in gate.get("findings", []):
        out(
            f"  {finding['check']:26} {finding['status']:14} {finding['severity']:6} "
            f"({finding['source']}) {finding.get('details', '')[:90]}"
        )


def held_back_images(data_dir: Path) -> list[tuple[Path, str]]:
    """A few images per class from the test split: never trained or tuned on."""
    chosen = []
    for class_dir in sorted((data_dir / "test").iterdir()):
        images = sorted(p for p in class_dir.iterdir() if p.is_file())
        chosen.extend((image, class_dir.name) for image in images[:PREDICTIONS_PER_CLASS])
    return chosen


def predict_held_back_images(target: Target, data_dir: Path) -> tuple[float, int]:
    """Share of correct answers and the number of requests that failed."""
    out("\nPredictions through the HTTP API (POST /predict):")
    correct = errors = 0
    images = held_back_images(data_dir)
    for image, true_class in images:
        result = predict_file(target, image, requests)
        if "error" in result:
            errors += 1
            out(f"  {image.name}: HTTP {result['status']}: {result['error']}")
            continue
        ok = result.get("class_name") == true_class
        correct += ok
        probability = result["top_k"][0]["probability"] if result.get("top_k") else 0.0
        out(
            f"  {image.parent.name}/{image.name}: predicted {result['label']!r} "
            f"({probability:.2f}), true {class_label(true_class)!r} {'ok' if ok else 'WRONG'}"
        )
    return (correct / len(images) if images else 0.0), errors
