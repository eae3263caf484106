"""One registered, deployed model version as a pipeline run leaves it, built in moto.

The version's metadata (as RegisterModel writes it), its run's model_package.json and
deployment.json, a tuning job and a retrain, a model created from the version behind the
endpoint's config, and a versioned manifest whose version names the execution. The console's
lineage tests and the WriteReport handler test read it; user text carries HOSTILE, so every
page and report that shows it must escape it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from pipeline_common.naming import execution_name, manifest_version_token
from pipeline_common.registry import model_package_group_name

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5"
PROJECT, DATASET = "mlops", "digits"
GROUP = model_package_group_name(PROJECT, DATASET)
TUNING, RETRAIN = "mlops-digits-tune-1a2b3c4d", "mlops-digits-retrain-1a2b3c4d"
CONFIG, ENDPOINT = "mlops-digits-1a2b3c4d", "mlops-endpoint"
HOSTILE = '<script>alert("owned")</script>'


@dataclass
class RunState:
    outputs: dict[str, str]  # the stack outputs a CLI Target holds
    execution: str
    execution_arn: str
    version: int
    package_arn: str


def build_state(
    session: boto3.Session, data: str = "mlops-data", artifacts: str = "mlops-artifacts"
) -> RunState:
    """Buckets (created unless they exist), a state machine and the run's execution, its
    tuning job and retrain, the version it registered, the endpoint serving it, its records."""
    s3 = session.client("s3")
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    for bucket in {data, artifacts} - existing:
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=data, VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(
        Bucket=data,
        Key=f"datasets/{DATASET}/manifest.json",
        Body=json.dumps({"name": DATASET, "note": HOSTILE}).encode(),
    )
    token = manifest_version_token(put.get("VersionId"), put.get("ETag"))
    execution = execution_name(DATASET, token)

    sfn = session.client("stepfunctions")
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
    machine = sfn.create_state_machine(
        name=f"{PROJECT}-pipeline", definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]
    run_arn = sfn.start_execution(stateMachineArn=machine, name=execution, input="{}")[
        "executionArn"
    ]

    sagemaker = session.client("sagemaker")
    create_jobs(sagemaker)
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    package = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelPackageDescription=f"digits, a description with {HOSTILE}",
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{artifacts}/model.tar.gz"}],
            "SupportedContentTypes": ["image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus="Approved",
        CustomerMetadataProperties={
            "dataset": DATASET,
            "manifest-version": token,
            "execution": execution,
            "tuning-job": TUNING,
            "training-job": RETRAIN,
            "test-accuracy": "0.93",
            "finding:job:Overfit": f"NoIssuesFound (block): {HOSTILE}",
        },
        MetadataProperties={"GeneratedBy": run_arn},
    )["ModelPackageArn"]
    version = int(package.rsplit("/", 1)[-1])
    sagemaker.create_model(
        ModelName=CONFIG, PrimaryContainer={"ModelPackageName": package}, ExecutionRoleArn=ROLE
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=CONFIG,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": CONFIG,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=CONFIG)

    records = {
        "gate.json": {"approved": True, "summary": "approved", "test_accuracy": 0.93},
        "model_package.json": {
            "model_package_group_name": GROUP,
            "model_package_arn": package,
            "model_package_version": version,
            "approval_status": "Approved",
        },
        "deployment.json": {
            "endpoint_name": ENDPOINT,
            "endpoint_config_name": CONFIG,
            "model_name": CONFIG,
            "model_package_arn": package,
            "operation": "created",
        },
    }
    for name, record in records.items():
        s3.put_object(Bucket=artifacts, Key=f"runs/{execution}/{name}", Body=json.dumps(record))
    outputs = {
        "ProjectName": PROJECT,
        "DataBucketName": data,
        "ArtifactsBucketName": artifacts,
        "StateMachineArn": machine,
        "EndpointName": ENDPOINT,
    }
    return RunState(outputs, execution, run_arn, version, package)


def create_jobs(sagemaker: Any) -> None:
    """The run's tuning job and profiled retrain, as moto keeps them."""
    training = {
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://jobs/output/"},
        "ResourceConfig": {
            "InstanceType": "ml.m5.large",
            "InstanceCount": 1,
            "VolumeSizeInGB": 10,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    sagemaker.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=TUNING,
        HyperParameterTuningJobConfig={
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "valid:loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
        },
        TrainingJobDefinition={
            "AlgorithmSpecification": training["AlgorithmSpecification"],
            "RoleArn": ROLE,
            "OutputDataConfig": training["OutputDataConfig"],
            "ResourceConfig": training["ResourceConfig"],
            "StoppingCondition": training["StoppingCondition"],
        },
    )
    sagemaker.create_training_job(TrainingJobName=RETRAIN, **training)
