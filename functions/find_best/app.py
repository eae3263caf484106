"""Pick the tuning job's best training job and record the whole leaderboard.

The leaderboard (every trial: name, status, objective, hyperparameters, failure reason)
goes to ``s3://<artifacts>/runs/<execution>/leaderboard.json`` for the run report; the state
only carries the best trial's name, objective and tuned hyperparameters. A tuning job that
finished without one completed trial fails here, naming how the trials ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline_common.aws import aws_call, client
from pipeline_common.config import CommonSettings
from pipeline_common.errors import NoCompletedTrainingJob
from pipeline_common.jobs import OBJECTIVE_METRIC, OBJECTIVE_TYPE, decode
from pipeline_common.kit import count, logger, step
from pipeline_common.models import FoundBest, StepModel
from pipeline_common.records import LEADERBOARD, record_key
from pipeline_common.s3io import s3_uri, write_json

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
sagemaker = client("sagemaker")

FAILURES_SHOWN = 3


class FindBestInput(StepModel):
    execution_name: str
    tuning_job_name: str


def list_trials(tuning_job: str) -> list[dict[str, Any]]:
    """Every training job the tuning job launched (all pages)."""
    paginator = sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
    trials: list[dict[str, Any]] = []
    with aws_call("ListTrainingJobsForHyperParameterTuningJob", tuning_job):
        for page in paginator.paginate(HyperParameterTuningJobName=tuning_job, MaxResults=100):
            trials.extend(page["TrainingJobSummaries"])
    return trials


def objective_of(trial: dict[str, Any]) -> float | None:
    metric = trial.get("FinalHyperParameterTuningJobObjectiveMetric")
    return float(metric["Value"]) if metric else None


def leaderboard_row(trial: dict[str, Any], output_path: str) -> dict[str, Any]:
    name = trial["TrainingJobName"]
    return {
        "training_job_name": name,
        "status": trial["TrainingJobStatus"],
        "objective": objective_of(trial),
        "hyperparameters": {k: decode(v) for k, v in trial.get("TunedHyperParameters", {}).items()},
        "failure_reason": trial.get("FailureReason"),
        "started": trial.get("TrainingStartTime"),
        "ended": trial.get("TrainingEndTime"),
        "model_uri": f"{output_path.rstrip('/')}/{name}/output/model.tar.gz"
        if output_path
        else None,
    }


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed trials with an objective first, best (lowest valid:loss) on top."""
    sign = 1 if OBJECTIVE_TYPE == "Minimize" else -1

    def key(row: dict[str, Any]) -> tuple[int, float, str]:
        scored = row["status"] == "Completed" and row["objective"] is not None
        return (
            0 if scored else 1,
            sign * row["objective"] if scored else 0.0,
            row["training_job_name"],
        )

    return sorted(rows, key=key)


def no_completed_error(tuning_job: str, rows: list[dict[str, Any]]) -> NoCompletedTrainingJob:
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    reasons = [
        f"{r['training_job_name']}: {r['failure_reason']}" for r in rows if r["failure_reason"]
    ]
    return NoCompletedTrainingJob(
        f"tuning job {tuning_job} finished without a completed training job with a "
        f"{OBJECTIVE_METRIC} value ({len(rows)} trials: "
        f"{', '.join(f'{n} {s}' for s, n in sorted(statuses.items())) or 'none'}). "
        f"First failures: {'; '.join(reasons[:FAILURES_SHOWN]) or 'none reported'}. "
        f"Check the trials' logs in CloudWatch Logs (/aws/sagemaker/TrainingJobs) and that "
        f"train.py prints the lines metric_definitions.json matches"
    )


def choose_best(job: dict[str, Any], ranked: list[dict[str, Any]]) -> dict[str, Any]:
    """SageMaker's BestTrainingJob when it is among the completed trials, else the top row."""
    best_name = job.get("BestTrainingJob", {}).get("TrainingJobName")
    return next((r for r in ranked if r["training_job_name"] == best_name), ranked[0])


@step(FindBestInput)
def lambda_handler(event: FindBestInput, context: LambdaContext) -> FoundBest:
    common = CommonSettings.from_env()
    with aws_call("DescribeHyperParameterTuningJob", event.tuning_job_name):
        job = sagemaker.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=event.tuning_job_name
        )
    trials = list_trials(event.tuning_job_name)
    output_path = (
        job.get("TrainingJobDefinition", {}).get("OutputDataConfig", {}).get("S3OutputPath", "")
    )
    rows = rank([leaderboard_row(t, output_path) for t in trials])
    completed = [r for r in rows if r["status"] == "Completed" and r["objective"] is not None]
    if not completed:
        raise no_completed_error(event.tuning_job_name, rows)
    best = choose_best(job, completed)
    raw_best = next(t for t in trials if t["TrainingJobName"] == best["training_job_name"])
    key = record_key(event.execution_name, LEADERBOARD)
    document = {
        "tuning_job_name": event.tuning_job_name,
        "objective": {"metric": OBJECTIVE_METRIC, "type": OBJECTIVE_TYPE},
        "strategy": job["HyperParameterTuningJobConfig"]["Strategy"],
        "counters": job.get("TrainingJobStatusCounters", {}),
        "best_training_job_name": best["training_job_name"],
        "trials": rows,
    }
    with aws_call("PutObject", s3_uri(common.artifacts_bucket, key)):
        uri = write_json(s3, common.artifacts_bucket, key, document)
    logger.info(
        {
            "operation": "find-best",
            "best": best["training_job_name"],
            "objective": best["objective"],
            "completed": len(completed),
            "trials": len(rows),
        }
    )
    count("CompletedTrials", len(completed))
    return FoundBest(
        training_job_name=best["training_job_name"],
        objective_value=best["objective"],
        hyperparameters=raw_best.get("TunedHyperParameters", {}),
        model_uri=best["model_uri"],
        leaderboard_uri=uri,
        completed_trials=len(completed),
        total_trials=len(rows),
    )
