"""Start the hyperparameter tuning job for a validated data set.

The job name derives from the execution name, so a retried invocation finds its own job
(ResourceInUse) instead of paying for a second one. The metric regexes come from
``code/training/metric_definitions.json`` next to the packaged training source, so they
always match the lines that exact train.py prints. When an earlier tuning job of the same
data set completed, the new one warm-starts from it (TransferLearning: the data changed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pipeline_common.aws import (
    THROTTLING_CODES,
    client,
    create_once,
    error_code,
    translate_client_error,
)
from pipeline_common.config import CommonSettings, TrainingSettings
from pipeline_common.jobs import DATASET_TAG
from pipeline_common.kit import count, logger, step
from pipeline_common.models import StepModel, TuningStarted, ValidatedDataset
from pipeline_common.naming import tuning_job_name, tuning_job_prefix
from pipeline_common.source import load_metric_definitions, require_training_source
from pipeline_common.tuning import WARM_START_STRATEGIES, build_tuning_request

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
sagemaker = client("sagemaker")

WARM_START_CANDIDATES = 10


class StartTuningInput(StepModel):
    execution_name: str
    dataset: ValidatedDataset


def tagged_dataset(arn: str) -> str | None:
    tags = sagemaker.list_tags(ResourceArn=arn).get("Tags", [])
    return next((t["Value"] for t in tags if t["Key"] == DATASET_TAG), None)


def find_warm_start_parent(project: str, dataset: str, own_job: str) -> str | None:
    """The newest completed tuning job of this data set, if any.

    Names are shortened to fit 32 characters, so two data sets can share a name prefix;
    the ``mlops:dataset`` tag settles which job belongs to which. A failed lookup only
    costs the warm start, except throttling, which the state machine retries.
    """
    try:
        jobs = sagemaker.list_hyper_parameter_tuning_jobs(
            NameContains=tuning_job_prefix(project, dataset),
            StatusEquals="Completed",
            SortBy="CreationTime",
            SortOrder="Descending",
            MaxResults=WARM_START_CANDIDATES,
        )["HyperParameterTuningJobSummaries"]
        for job in jobs:
            name = job["HyperParameterTuningJobName"]
            if name != own_job and tagged_dataset(job["HyperParameterTuningJobArn"]) == dataset:
                return name
    except ClientError as e:
        if error_code(e) in THROTTLING_CODES:
            raise translate_client_error(e, "ListHyperParameterTuningJobs", dataset) from e
        logger.warning({"operation": "warm-start-lookup", "error_code": error_code(e)})
    return None


def create_tuning_job(request: dict[str, Any]) -> bool:
    """CreateHyperParameterTuningJob; False when this run already created it (a retry)."""
    name = request["HyperParameterTuningJobName"]
    create = sagemaker.create_hyper_parameter_tuning_job
    return create_once(create, "CreateHyperParameterTuningJob", name, request)


@step(StartTuningInput)
def lambda_handler(event: StartTuningInput, context: LambdaContext) -> TuningStarted:
    common, training = CommonSettings.from_env(), TrainingSettings.from_env()
    dataset = event.dataset.name
    job_name = tuning_job_name(common.project_name, dataset, event.execution_name)
    metric_definitions = load_metric_definitions(s3, common.artifacts_bucket)
    require_training_source(s3, common.artifacts_bucket)
    parent = None
    if training.strategy in WARM_START_STRATEGIES:
        parent = find_warm_start_parent(common.project_name, dataset, job_name)
    request = build_tuning_request(
        job_name=job_name,
        common=common,
        training=training,
        dataset=dataset,
        execution=event.execution_name,
        channel_uris=event.dataset.channels,
        metric_definitions=metric_definitions,
        warm_start_parent=parent,
    )
    created = create_tuning_job(request)
    logger.info(
        {
            "operation": "CreateHyperParameterTuningJob",
            "job": job_name,
            "created": created,
            "strategy": training.strategy,
            "warm_start_parent": parent,
        }
    )
    if created:
        count("TuningJobsStarted")
    return TuningStarted(job_name=job_name, warm_start_parent=parent, strategy=training.strategy)
