"""Benchmark 3: what the pipeline's orchestration adds around the real work.

One whole pipeline run on the local cloud: the data set is uploaded with the CLI (`mlops
upload`, whose manifest starts the execution through the trigger), the execution is followed
to its end, and then

    overhead = (execution wall time - training job time - endpoint start time) / execution

where training job time is the union of every job's TrainingStartTime..TrainingEndTime (the
tuning trials and the profiled retrain; a union so parallel trials are not counted twice) and
endpoint start time is DescribeEndpoint's CreationTime..LastModifiedTime (InService). Goal
<= 5%. The overhead is then split into where it went: job provisioning (CreationTime ->
TrainingStartTime: channels copied from S3), rules evaluated after the retrain ended, Lambda
task states, and the lag of each wait loop.

Wait loops: for each loop (tuning, retrain + its rules, endpoint) the lag is the time between
the awaited thing ending and the state machine entering the state after the loop. Goal: at
most one poll interval plus the one status check that saw it (the check's own duration),
give or take a second of state transitions.
Small settings keep the run short: PollSeconds 2, MaxJobs 2 (1 in --quick), one epoch, 32-px
digits, a gate that only warns (tiny runs trip the rules) and no accuracy floor.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import Settings, at_most, digits, info, log, result, skipped

NAME = "orchestration"
TITLE = "Orchestration overhead of a whole local pipeline run"
GOAL = 0.05
POLL_SECONDS = 2
WAIT_TOLERANCE_S = 1.0  # state transitions of moto's interpreter between check and next state
RULES = "LossNotDecreasing,VanishingGradient,PoorWeightInitialization,Overfit,Overtraining"
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
# state after each wait loop -> (loop's check state, what the loop waits for)
LOOPS = {
    "FindBest": ("CheckTuning", "tuning job"),
    "EvaluateRules": ("CheckTraining", "retrain and its rules"),
    "SmokeTest": ("CheckEndpoint", "endpoint InService"),
}


@dataclass(frozen=True)
class Size:
    per_class: int
    max_jobs: int
    timeout_s: float


def size_for(quick: bool) -> Size:
    return Size(per_class=8, max_jobs=1, timeout_s=420) if quick else Size(15, 2, 600)


def parameters(size: Size) -> dict[str, str]:
    return {
        "PollSeconds": str(POLL_SECONDS),
        "MaxJobs": str(size.max_jobs),
        "MaxParallelJobs": "1",
        "Epochs": "1",
        "ImageSize": "32",
        "MinTestAccuracy": "0",
        "GatePolicy": f"warn:{RULES},LowGPUUtilization",
        # 8 images per class leave 1 in valid/ and test/: below the default minimum of 2.
        "MinEvalImagesPerClass": "1",
    }


def upload_and_start(root: Path, data: Path, name: str) -> None:
    """`mlops upload DIR --name NAME`: files, then the manifest that starts the execution."""
    from mlops import cli

    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = cli.main(["upload", str(data), "--name", name, "--root", str(root)])
    if code != 0:
        raise RuntimeError(f"mlops upload failed ({code}): {output.getvalue()[-500:]}")


def follow(target: Any, timeout_s: float) -> Any:
    """The newest execution, polled until it ends (bounded by `timeout_s`)."""
    from pipeline_report import executions

    sfn = target.client("stepfunctions")
    arn = executions.resolve_execution_arn(sfn, target.state_machine_arn, "latest")
    deadline = time.monotonic() + timeout_s
    history = executions.History(arn)
    while True:
        view = executions.describe(sfn, arn, history)
        if view.status in TERMINAL:
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {view.name} still {view.status} after {timeout_s} s")
        time.sleep(POLL_SECONDS)


def union_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Total length of the union of [start, end] intervals."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += (current_end - current_start).total_seconds()
    return total


def training_jobs(sagemaker: Any, tuning_job: str, retrain_job: str) -> list[dict[str, Any]]:
    trials = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning_job, MaxResults=100
    )["TrainingJobSummaries"]
    names = [t["TrainingJobName"] for t in trials] + [retrain_job]
    return [sagemaker.describe_training_job(TrainingJobName=name) for name in names]


def rules_end(job: dict[str, Any]) -> datetime | None:
    times = [r["LastModifiedTime"] for r in job.get("DebugRuleEvaluationStatuses", [])]
    return max(times) if times else None


def entered(view: Any, state: str) -> datetime | None:
    return next((s.started for s in view.steps if s.name == state), None)


def loop_lags(view: Any, awaited: dict[str, datetime | None]) -> dict[str, dict[str, Any]]:
    """For each wait loop: seconds from the awaited end to the next state, and the limit."""
    lags = {}
    for next_state, (check_state, _) in LOOPS.items():
        done, left = awaited.get(next_state), entered(view, next_state)
        checks = [s for s in view.steps if s.name == check_state and s.duration_s is not None]
        if done is None or left is None or not checks:
            continue
        limit = POLL_SECONDS + checks[-1].duration_s
        lag = (left - done).total_seconds()
        lags[check_state] = {
            "lag_s": lag,
            "limit_s": limit,
            "excess_s": lag - limit,
            "checks": len(checks),
        }
    return lags


def analyse(view: Any, sagemaker: Any) -> dict[str, Any]:
    """Split the execution's wall time into training, endpoint start and the rest."""
    output = view.output
    tuning_name = output["tuning"]["job_name"]
    retrain_name = output["training"]["job_name"]
    endpoint_name = output["deployment"]["endpoint_name"]
    jobs = training_jobs(sagemaker, tuning_name, retrain_name)
    tuning = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_name)
    endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    training_s = union_seconds([(j["TrainingStartTime"], j["TrainingEndTime"]) for j in jobs])
    endpoint_s = (endpoint["LastModifiedTime"] - endpoint["CreationTime"]).total_seconds()
    wall_s = view.duration_s
    retrain = jobs[-1]
    awaited = {
        "FindBest": tuning.get("HyperParameterTuningEndTime"),
        "EvaluateRules": max(filter(None, [retrain["TrainingEndTime"], rules_end(retrain)])),
        "SmokeTest": endpoint["LastModifiedTime"],
    }
    tasks = [s for s in view.steps if s.state_type == "Task" and s.duration_s is not None]
    checks = [s for s in tasks if s.name.startswith("Check")]
    lags = loop_lags(view, awaited)
    return {
        "execution_s": wall_s,
        "training_s": training_s,
        "endpoint_start_s": endpoint_s,
        "overhead": (wall_s - training_s - endpoint_s) / wall_s,
        "jobs": len(jobs),
        "where": {
            "job_provisioning_s": sum(
                (j["TrainingStartTime"] - j["CreationTime"]).total_seconds() for j in jobs
            ),
            "rules_after_retrain_s": (
                (rules_end(retrain) - retrain["TrainingEndTime"]).total_seconds()
                if rules_end(retrain)
                else 0.0
            ),
            "lambda_tasks_s": sum(s.duration_s for s in tasks),
            "lambda_task_count": len(tasks),
            # each step's function runs once per execution: in a fresh cloud, with a cold start
            "one_shot_tasks_s": sum(s.duration_s for s in tasks if s not in checks),
            "status_checks_s": sum(s.duration_s for s in checks),
            "wait_lags_s": sum(v["lag_s"] for v in lags.values()),
        },
        "wait_loops": lags,
        "states": [step.to_json() for step in view.steps],
    }


def pipeline_run(settings: Settings, size: Size) -> dict[str, Any]:
    """Start a local cloud, run the pipeline once, measure; {"skipped": why} when it cannot."""
    from mlops.local.process import CloudStartError, start_cloud_process, stop_cloud_process
    from mlops.target import local_target

    data = digits(settings, size.per_class, 32)
    root = settings.scratch(f"{NAME}-cloud")
    try:
        process, _ = start_cloud_process(root, parameters=parameters(size))
    except CloudStartError as error:
        return {"skipped": f"the local cloud does not start: {str(error).splitlines()[0]}"}
    try:
        target = local_target(root)
        log(f"{NAME}: uploading {data.name}; the manifest starts the pipeline")
        upload_and_start(root, data, "bench")
        view = follow(target, size.timeout_s)
        if view.status != "SUCCEEDED":
            failed = next((s for s in reversed(view.steps) if s.error), None)
            where = f" in {failed.name}: {failed.error}: {(failed.cause or '')[:300]}"
            return {"skipped": f"the pipeline run ended {view.status}{where if failed else ''}"}
        return analyse(view, target.client("sagemaker"))
    finally:
        stop_cloud_process(process)


def run(settings: Settings) -> dict[str, Any]:
    size = size_for(settings.quick)
    try:
        measured = pipeline_run(settings, size)
    except (RuntimeError, TimeoutError, LookupError, KeyError) as error:
        measured = {"skipped": f"{type(error).__name__}: {error}"}
    if "skipped" in measured:
        return skipped(NAME, TITLE, measured["skipped"], {"size": size.__dict__})
    loops = measured["wait_loops"]
    worst = max((v["excess_s"] for v in loops.values()), default=None)
    where = measured["where"]
    checks = [
        at_most("(execution - training - endpoint start) / execution", measured["overhead"], GOAL),
        info(
            "  execution / training / endpoint start s",
            f"{measured['execution_s']:.0f} / {measured['training_s']:.0f} / "
            f"{measured['endpoint_start_s']:.0f}",
        ),
        info(
            "  one-shot Lambda tasks / status checks / wait lags s",
            f"{where['one_shot_tasks_s']:.1f} / {where['status_checks_s']:.1f} / "
            f"{where['wait_lags_s']:.1f}",
        ),
        info(
            "  job provisioning / rules after retrain s",
            f"{where['job_provisioning_s']:.1f} / {where['rules_after_retrain_s']:.1f}",
        ),
        at_most("worst wait-loop lag beyond poll + check, s", worst, WAIT_TOLERANCE_S),
    ]
    notes = [
        f"{name}: lag {v['lag_s']:.1f} s (limit {v['limit_s']:.1f} s, {v['checks']} checks)"
        for name, v in loops.items()
    ]
    return result(NAME, TITLE, checks, {"size": size.__dict__, **measured}, notes)
