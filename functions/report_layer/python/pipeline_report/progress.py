"""One line of progress for a running execution: the tuning job's trials, the retrain's epoch.

`mlops wait` prints it when it changes and the console shows it on a running execution. The
phase is read from the state the execution is in: the pipeline keeps the tuning job under
`$.tuning` until `$.best` is set (FindBest), and the retrain under `$.training` until `$.gate`
(EvaluateRules) — the ResultPaths of statemachine/pipeline.asl.json.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pipeline_common.jobs import decode

from pipeline_report import executions as ex
from pipeline_report.analysis import last_epoch

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
LOG_TAIL_EVENTS = 200


def tuning_progress(sagemaker: Any, name: str) -> str:
    """`tuning <job>: 1/4 trials done (1 running), best valid:loss 0.6091 (<trial>)`."""
    job = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    counters = job.get("TrainingJobStatusCounters", {})
    config = job.get("HyperParameterTuningJobConfig", {})
    total = config.get("ResourceLimits", {}).get("MaxNumberOfTrainingJobs")
    done = sum(counters.get(k, 0) for k in ("Completed", "Stopped", "NonRetryableError"))
    running = counters.get("InProgress", 0)
    line = f"tuning {name}: {done}/{total or '?'} trials done ({running} running)"
    best = job.get("BestTrainingJob") or {}
    metric = best.get("FinalHyperParameterTuningJobObjectiveMetric")
    if metric:
        line += f", best {metric['MetricName']} {metric['Value']:.4f} ({best['TrainingJobName']})"
    return line


def training_progress(sagemaker: Any, logs: Any | None, name: str) -> str:
    """`retrain <job>: Training, epoch 3/6 (valid loss 0.51, accuracy 0.82)`."""
    job = sagemaker.describe_training_job(TrainingJobName=name)
    status = job.get("SecondaryStatus") or job.get("TrainingJobStatus", "?")
    line = f"retrain {name}: {status}"
    epochs = decode((job.get("HyperParameters") or {}).get("epochs"))
    latest = last_epoch(tail_of_log(logs, name)) if logs is not None else None
    if latest:
        epoch, values = latest
        line += f", epoch {epoch}/{epochs or '?'}"
        if "valid:loss" in values:
            line += f" (valid loss {values['valid:loss']:.4f}"
            line += f", accuracy {values.get('valid:accuracy', float('nan')):.4f})"
    return line


def tail_of_log(logs: Any, job_name: str) -> list[str]:
    """The newest lines of the job's log streams (oldest first)."""
    streams = logs.describe_log_streams(
        logGroupName=TRAINING_LOG_GROUP, logStreamNamePrefix=f"{job_name}/"
    )["logStreams"]
    lines: list[str] = []
    for stream in streams:
        page = logs.get_log_events(
            logGroupName=TRAINING_LOG_GROUP,
            logStreamName=stream["logStreamName"],
            startFromHead=False,
            limit=LOG_TAIL_EVENTS,
        )
        lines.extend(event["message"] for event in page["events"])
    return lines


def execution_progress(view: ex.ExecutionView, sagemaker: Any, logs: Any | None) -> str | None:
    """The progress line for the phase the execution is in, or None outside tuning/retrain.

    Errors of the describe calls give None: progress is a courtesy and must never stop a wait.
    """
    if view.status != "RUNNING" or not view.steps:
        return None
    state = view.steps[-1].input
    if not isinstance(state, dict):
        return None
    try:
        if "tuning" in state and "best" not in state:
            return tuning_progress(sagemaker, state["tuning"]["job_name"])
        if "training" in state and "gate" not in state:
            return training_progress(sagemaker, logs, state["training"]["job_name"])
    except (ClientError, BotoCoreError, KeyError, TypeError):
        return None
    return None
