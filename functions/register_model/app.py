"""Register the retrained model as a new version of the data set's model package group.

Every retrain that reaches the gate becomes a version, approved or not: the registry is the
list of what a project produced, and a rejected version says why it was rejected. The group
(one per project and data set) is created on first use. The version carries the inference
container, the run's gate and validation records as ModelMetrics, the gate's figures and
findings as CustomerMetadataProperties, and the data set version, tuning job, training job and
execution that made it. A retried invocation passes the same ClientToken and gets the version
the first attempt created. DeployEndpoint then serves this version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline_common.aws import ALREADY_EXISTS, aws_call, client
from pipeline_common.baseline import BASELINE_FILE
from pipeline_common.config import CommonSettings, RegistrySettings
from pipeline_common.kit import count, logger, step
from pipeline_common.models import ModelRegistered, StepModel
from pipeline_common.records import MONITORING_BASELINE, REGISTRATION, VALIDATION, record_key
from pipeline_common.registry import (
    BASELINE_ACCURACY_KEY,
    DATASET_KEY,
    EXECUTION_KEY,
    GATE_KEY,
    MANIFEST_VERSION_KEY,
    METADATA_ENTRIES_MAX,
    RESPONSE_TYPES,
    SUPPORTED_CONTENT_TYPES,
    TEST_ACCURACY_KEY,
    TRAINING_JOB_KEY,
    TUNING_JOB_KEY,
    ApprovalStatus,
    client_token,
    finding_properties,
    inference_container,
    metadata_value,
    model_package_group_name,
    package_version,
)
from pipeline_common.s3io import (
    MISSING_CODES,
    output_archive_uri,
    parse_s3_uri,
    read_tar_member,
    s3_uri,
    write_json,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
sagemaker = client("sagemaker")

JSON = "application/json"


class GateOutcome(StepModel):
    """The part of EvaluateRules' decision the registry keeps."""

    approved: bool
    summary: str
    test_accuracy: float | None = None
    baseline_accuracy: float | None = None
    findings: list[dict[str, str]] = []
    report_uri: str


class RegisterInput(StepModel):
    execution_name: str
    execution_arn: str
    dataset: str
    manifest_version: str | None = None
    tuning_job_name: str
    training_job_name: str
    gate: GateOutcome


def approval_status(gate: GateOutcome, mode: str = "auto") -> ApprovalStatus:
    """The gate rejects for good; what it approves waits for a person in ``manual`` mode."""
    if not gate.approved:
        return "Rejected"
    return "PendingManualApproval" if mode == "manual" else "Approved"


def customer_metadata(event: RegisterInput) -> dict[str, str]:
    """Where the version came from and what the gate found, readable in the console."""
    facts = {
        DATASET_KEY: event.dataset,
        MANIFEST_VERSION_KEY: event.manifest_version,
        EXECUTION_KEY: event.execution_name,
        TUNING_JOB_KEY: event.tuning_job_name,
        TRAINING_JOB_KEY: event.training_job_name,
        TEST_ACCURACY_KEY: event.gate.test_accuracy,
        BASELINE_ACCURACY_KEY: event.gate.baseline_accuracy,
        GATE_KEY: f"{'approved' if event.gate.approved else 'rejected'}: {event.gate.summary}",
    }
    properties = {key: metadata_value(value) for key, value in facts.items() if value is not None}
    room = METADATA_ENTRIES_MAX - len(properties)
    return {**properties, **finding_properties(event.gate.findings, room)}


def model_metrics(event: RegisterInput, artifacts_bucket: str) -> dict[str, Any]:
    """The run's records as the registry's metrics: the gate report is the model quality, the
    validation record the data the model was trained on."""
    validation = s3_uri(artifacts_bucket, record_key(event.execution_name, VALIDATION))
    return {
        "ModelQuality": {"Statistics": {"ContentType": JSON, "S3Uri": event.gate.report_uri}},
        "ModelDataQuality": {"Statistics": {"ContentType": JSON, "S3Uri": validation}},
    }


def publish_baseline(model_uri: str, bucket: str, execution: str) -> str | None:
    """The retrain's monitoring baseline, out of its output.tar.gz and next to the run's
    records, where the version's DriftCheckBaselines can name it; None if it wrote none."""
    archive_uri = output_archive_uri(model_uri)
    archive_bucket, archive_key = parse_s3_uri(archive_uri)
    with aws_call("GetObject", archive_uri, ok=MISSING_CODES) as call:
        archive = s3.get_object(Bucket=archive_bucket, Key=archive_key)["Body"].read()
    if not call.succeeded:
        return None
    baseline = read_tar_member(archive, BASELINE_FILE)
    if baseline is None:
        return None
    key = record_key(execution, MONITORING_BASELINE)
    with aws_call("PutObject", s3_uri(bucket, key)):
        s3.put_object(Bucket=bucket, Key=key, Body=baseline, ContentType=JSON)
    return s3_uri(bucket, key)


def drift_check_baselines(baseline_uri: str | None) -> dict[str, Any]:
    """What monitoring compares the served model's traffic with (pipeline_common.baseline)."""
    if baseline_uri is None:
        return {}
    statistics = {"ContentType": JSON, "S3Uri": baseline_uri}
    return {"DriftCheckBaselines": {"ModelDataQuality": {"Statistics": statistics}}}


def model_data(training_job: str) -> str:
    with aws_call("DescribeTrainingJob", training_job):
        job = sagemaker.describe_training_job(TrainingJobName=training_job)
    return job["ModelArtifacts"]["S3ModelArtifacts"]


def ensure_group(name: str, dataset: str) -> None:
    """Created by the data set's first registered run; later runs meet it ("already exists")."""
    with aws_call("CreateModelPackageGroup", name, ok=ALREADY_EXISTS):
        sagemaker.create_model_package_group(
            ModelPackageGroupName=name,
            ModelPackageGroupDescription=f"Models trained on the data set {dataset}",
        )


def register(
    event: RegisterInput, common: CommonSettings, settings: RegistrySettings
) -> ModelRegistered:
    group = model_package_group_name(common.project_name, event.dataset)
    ensure_group(group, event.dataset)
    model_uri = model_data(event.training_job_name)
    container = inference_container(settings.inference_image, model_uri, common.region)
    baseline = publish_baseline(model_uri, common.artifacts_bucket, event.execution_name)
    status = approval_status(event.gate, settings.approval_mode)
    with aws_call("CreateModelPackage", group):
        arn = sagemaker.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=metadata_value(
                f"{event.dataset} (manifest {event.manifest_version}), execution "
                f"{event.execution_name}, tuning job {event.tuning_job_name}, training job "
                f"{event.training_job_name}"
            ),
            InferenceSpecification={
                "Containers": [container],
                "SupportedContentTypes": list(SUPPORTED_CONTENT_TYPES),
                "SupportedResponseMIMETypes": list(RESPONSE_TYPES),
                "SupportedRealtimeInferenceInstanceTypes": [settings.instance_type],
            },
            ModelApprovalStatus=status,
            ModelMetrics=model_metrics(event, common.artifacts_bucket),
            CustomerMetadataProperties=customer_metadata(event),
            MetadataProperties={"GeneratedBy": event.execution_arn},
            **drift_check_baselines(baseline),
            ClientToken=client_token(event.execution_name),
        )["ModelPackageArn"]
    registered = ModelRegistered(
        model_package_group_name=group,
        model_package_arn=arn,
        model_package_version=package_version(arn),
        approval_status=status,
    )
    key = record_key(event.execution_name, REGISTRATION)
    with aws_call("PutObject", s3_uri(common.artifacts_bucket, key)):
        write_json(s3, common.artifacts_bucket, key, registered.model_dump())
    count(f"ModelVersions{status}")
    return registered


@step(RegisterInput)
def lambda_handler(event: RegisterInput, context: LambdaContext) -> ModelRegistered:
    result = register(event, CommonSettings.from_env(), RegistrySettings.from_env())
    logger.info({"operation": "register-model", **result.model_dump()})
    return result
