"""Write the run's report to the artifacts bucket: the pipeline's last step, on every outcome.

The report is the one `mlops report` writes (pipeline_report, installed with matplotlib in
the report layer by pip), so a run on AWS has its report without anyone running the CLI. It is
written while the execution is still in this step: its timeline ends here, and `mlops report` run
later adds the final state. A report that cannot be built is the state machine's concern
(its Catch keeps the run's outcome); the handler only says why.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import boto3
from pipeline_common.aws import aws_call, client
from pipeline_common.config import CommonSettings
from pipeline_common.kit import count, logger, step
from pipeline_common.models import ReportWritten, StepModel
from pipeline_common.records import REPORT, record_key
from pipeline_common.s3io import s3_uri
from pipeline_report.build import build_report
from pipeline_report.target import Target

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")


class WriteReportInput(StepModel):
    execution_arn: str
    execution_name: str


def pipeline_target(common: CommonSettings) -> Target:
    """What the report reads, from this function's environment (endpoints: AWS_ENDPOINT_URL*).

    Only the local cloud sets AWS_ENDPOINT_URL for its functions (mlops/local/cloud.py): there
    the report's links lead to `mlops console`'s pages, since the AWS console knows nothing of
    the local resources; on AWS they lead to the AWS console's.
    """
    return Target(
        name=common.project_name,
        session=boto3.Session(region_name=common.region),
        outputs={
            "DataBucketName": common.data_bucket,
            "ArtifactsBucketName": common.artifacts_bucket,
        },
        local=bool(os.environ.get("AWS_ENDPOINT_URL")),
    )


def store(html: str, bucket: str, key: str) -> str:
    with aws_call("PutObject", s3_uri(bucket, key)):
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=html.encode("utf-8"),
            ContentType="text/html; charset=utf-8",
        )
    return s3_uri(bucket, key)


@step(WriteReportInput)
def lambda_handler(event: WriteReportInput, context: LambdaContext) -> ReportWritten:
    common = CommonSettings.from_env()
    report = build_report(pipeline_target(common), event.execution_arn)
    key = record_key(event.execution_name, REPORT)
    uri = store(report.html, common.artifacts_bucket, key)
    logger.info(
        {
            "operation": "write-report",
            "report_uri": uri,
            "plots": sorted(report.plots),
            "notes": report.data.notes,
        }
    )
    count("ReportsWritten")
    return ReportWritten(report_uri=uri, plots=sorted(report.plots), notes=len(report.data.notes))
