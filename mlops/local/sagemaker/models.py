"""The local SageMaker backend: state of every resource and the behaviour of each operation.

One method per operation of docs/contracts.md, named as boto3 names it (snake_case); each takes
the validated request (a dict shaped like the operation's input) and returns a dict shaped like
its output. The wire layer (responses.py) never holds state; this module never sees HTTP.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from typing import Any

from mlops.local.faults import Faults
from mlops.local.paths import PathEscapeError, contained
from mlops.local.sagemaker.aws import AwsClients
from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.endpoint_records import EndpointConfigRecord, ModelRecord
from mlops.local.sagemaker.endpoint_state import Endpoint
from mlops.local.sagemaker.endpoints import EndpointManager
from mlops.local.sagemaker.errors import (
    ResourceInUse,
    ResourceLimitExceeded,
    ResourceNotFound,
    ValidationException,
    already_exists,
    not_found_by_arn,
)
from mlops.local.sagemaker.listing import paginate, sort_items, time_filters
from mlops.local.sagemaker.registry import ModelRegistry
from mlops.local.sagemaker.runtime import Invocation, invoke_endpoint
from mlops.local.sagemaker.traffic import traffic_policy
from mlops.local.sagemaker.training import TrainingRunner
from mlops.local.sagemaker.training_job import TrainingJob, now
from mlops.local.sagemaker.tuning import TuningJob

logger = logging.getLogger(__name__)

# SageMaker's default quota "Number of instances per training job" (adjustable; the template's
# TrainingInstanceCount stops at the same number).
MAX_INSTANCES_PER_TRAINING_JOB = 20
ARN_RESOURCE = re.compile(r"^arn:aws[a-z-]*:sagemaker:[^:]*:[0-9]{12}:([a-z-]+)/(.+)$")


class SageMakerBackend:
    """All resources of one local SageMaker (one account, one region)."""

    def __init__(self, config: SageMakerConfig) -> None:
        self.config = config
        self.faults = Faults(config.faults)
        self.clients = AwsClients(
            config.region, config.aws_endpoint_urls, role_credentials=config.role_credentials
        )
        self.training_jobs: dict[str, TrainingJob] = {}
        self.tuning_jobs: dict[str, TuningJob] = {}
        self.models: dict[str, ModelRecord] = {}
        self.endpoint_configs: dict[str, EndpointConfigRecord] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.tags: dict[str, list[dict[str, str]]] = {}
        self.lock = threading.RLock()
        self.registry = ModelRegistry(config, self.lock)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.runner = TrainingRunner(config, self.clients, self.faults)
        self.endpoint_manager = EndpointManager(config, self.clients, self.faults, self.models)

    # --- training jobs ------------------------------------------------------------------------

    def create_training_job(self, request: dict[str, Any]) -> dict[str, Any]:
        job = self._new_training_job(request)
        return {"TrainingJobArn": job.arn}

    def _new_training_job(
        self,
        request: dict[str, Any],
        tuning_job_arn: str | None = None,
        tuned: dict[str, str] | None = None,
    ) -> TrainingJob:
        name = request["TrainingJobName"]
        arn = self.config.arn("training-job", name)
        self._check_metric_definitions(request)
        self._check_instance_count(request)
        with self.lock:
            if name in self.training_jobs:
                raise ResourceInUse(
                    "Training job names must be unique within an AWS account and region, and a "
                    f"training job with this name already exists ({arn})"
                )
            try:
                job_dir = contained(self.config.state_dir / "jobs", name)
            except PathEscapeError as error:
                raise ValidationException(f"TrainingJobName {error}") from None
            if job_dir.exists():
                # Left by a job whose record is gone (a state from before persistence, or a
                # snapshot moved away): its old output must not mix with the new job's.
                logger.warning("removing %s: no training job record owns it", job_dir)
                shutil.rmtree(job_dir, ignore_errors=True)
            job = TrainingJob(
                request,
                arn,
                job_dir,
                tuning_job_arn,
                tuned,
                debugger_available=self.config.debugger_available,
            )
            self.training_jobs[name] = job
            self._store_tags(arn, request.get("Tags"))
        self.runner.submit(job)
        return job

    @staticmethod
    def _check_metric_definitions(request: dict[str, Any]) -> None:
        for definition in request.get("AlgorithmSpecification", {}).get("MetricDefinitions", []):
            try:
                re.compile(definition["Regex"])
            except re.error as error:
                raise ValidationException(
                    f"Metric definition {definition['Name']} has an invalid regular expression "
                    f"{definition['Regex']!r}: {error}"
                ) from error

    @staticmethod
    def _check_instance_count(request: dict[str, Any]) -> None:
        """What AWS checks beyond botocore's model (whose TrainingInstanceCount has only min 0):
        at least one instance, and no more than the account's quota per training job."""
        resource = request.get("ResourceConfig") or {}
        if "InstanceGroups" in resource or "InstanceCount" not in resource:
            return
        count = resource["InstanceCount"]
        if count < 1:
            raise ValidationException(
                f"1 validation error detected: Value '{count}' at 'resourceConfig.instanceCount' "
                "failed to satisfy constraint: Member must have value greater than or equal to 1"
            )
        if count > MAX_INSTANCES_PER_TRAINING_JOB:
            raise ResourceLimitExceeded(
                "The account-level service limit 'Number of instances per training job' is "
                f"{MAX_INSTANCES_PER_TRAINING_JOB} Instances, with current utilization of 0 "
                f"Instances and a request delta of {count} Instances. Please use AWS Service "
                "Quotas to request an increase for this quota. If AWS Service Quotas is not "
                "available, contact AWS support to request an increase for this quota."
            )

    def describe_training_job(self, request: dict[str, Any]) -> dict[str, Any]:
        job = self.training_jobs.get(request["TrainingJobName"])
        if job is None:
            raise ValidationException("Requested resource not found.")
        return job.describe()

    def stop_training_job(self, request: dict[str, Any]) -> dict[str, Any]:
        """Stop a job as SageMaker does: SIGTERM to every host, SIGKILL after the grace; what
        the hosts saved is uploaded (checkpoints included), and the job ends Stopped."""
        name = request["TrainingJobName"]
        job = self.training_jobs.get(name)
        if job is None:
            raise ResourceNotFound(f"Requested resource not found: training job {name}")
        if job.status in {"Completed", "Failed", "Stopped"}:
            raise ValidationException(
                f"The training job {name} has already ended with status {job.status} and "
                "cannot be stopped."
            )
        job.request_stop("Stopped", "Stopped by StopTrainingJob")
        return {}

    # --- tuning jobs --------------------------------------------------------------------------

    def create_hyper_parameter_tuning_job(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        arn = self.config.arn("hyper-parameter-tuning-job", name)
        definition = request.get("TrainingJobDefinition")
        for each in [definition, *request.get("TrainingJobDefinitions", [])]:
            if each is not None:
                self._check_metric_definitions(each)
                self._check_instance_count(each)
        with self.lock:
            if name in self.tuning_jobs:
                raise ResourceInUse(
                    f"Hyperparameter tuning job names must be unique within an AWS account and "
                    f"region, and a tuning job with this name already exists ({arn})"
                )
            job = TuningJob(request, arn, self.config, self._launch_trial, self.tuning_jobs.get)
            self.tuning_jobs[name] = job
            self._store_tags(arn, request.get("Tags"))
        job.start()
        return {"HyperParameterTuningJobArn": arn}

    def _launch_trial(
        self, request: dict[str, Any], tuning_job_arn: str, tuned: dict[str, str]
    ) -> TrainingJob:
        return self._new_training_job(request, tuning_job_arn, tuned)

    def _tuning_job(self, name: str) -> TuningJob:
        job = self.tuning_jobs.get(name)
        if job is None:
            raise ResourceNotFound(f"Amazon SageMaker can't find a tuning job with name {name}")
        return job

    def describe_hyper_parameter_tuning_job(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._tuning_job(request["HyperParameterTuningJobName"]).describe()

    def stop_hyper_parameter_tuning_job(self, request: dict[str, Any]) -> dict[str, Any]:
        job = self._tuning_job(request["HyperParameterTuningJobName"])
        if job.status in {"Completed", "Failed", "Stopped"}:
            raise ValidationException(
                f"The hyperparameter tuning job {job.name} has already ended with status "
                f"{job.status} and cannot be stopped."
            )
        job.stop()
        return {}

    def list_hyper_parameter_tuning_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            jobs = list(self.tuning_jobs.values())
        summaries = [job.summary() for job in jobs]
        summaries = [
            s
            for s in summaries
            if request.get("NameContains", "") in s["HyperParameterTuningJobName"]
            and request.get("StatusEquals", s["HyperParameterTuningJobStatus"])
            == s["HyperParameterTuningJobStatus"]
            and time_filters(
                request, s["CreationTime"], s.get("LastModifiedTime", s["CreationTime"])
            )
        ]
        summaries = sort_items(
            summaries,
            request.get("SortBy"),
            request.get("SortOrder"),
            {
                "Name": lambda s: s["HyperParameterTuningJobName"],
                "Status": lambda s: s["HyperParameterTuningJobStatus"],
                "CreationTime": lambda s: s["CreationTime"],
            },
            default_sort="Name",
        )
        page, token = paginate(summaries, request.get("NextToken"), request.get("MaxResults"))
        return {"HyperParameterTuningJobSummaries": page, "NextToken": token}

    def list_training_jobs_for_hyper_parameter_tuning_job(
        self, request: dict[str, Any]
    ) -> dict[str, Any]:
        job = self._tuning_job(request["HyperParameterTuningJobName"])
        summaries = job.trial_summaries()
        if "StatusEquals" in request:
            summaries = [s for s in summaries if s["TrainingJobStatus"] == request["StatusEquals"]]
        sort_by = request.get("SortBy") or "Name"
        if sort_by == "FinalObjectiveMetricValue":
            # AWS leaves out the training jobs that did not report the objective metric.
            summaries = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" in s]
        summaries = sort_items(
            summaries,
            sort_by,
            request.get("SortOrder"),
            {
                "Name": lambda s: s["TrainingJobName"],
                "CreationTime": lambda s: s["CreationTime"],
                "Status": lambda s: s["TrainingJobStatus"],
                "FinalObjectiveMetricValue": lambda s: s[
                    "FinalHyperParameterTuningJobObjectiveMetric"
                ]["Value"],
            },
            default_sort="Name",
        )
        page, token = paginate(summaries, request.get("NextToken"), request.get("MaxResults"))
        return {"TrainingJobSummaries": page, "NextToken": token}

    # --- models and endpoint configs ----------------------------------------------------------

    def create_model(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelName"]
        arn = self.config.arn("model", name)
        containers = request.get("Containers") or []
        if "PrimaryContainer" not in request and not containers:
            raise ValidationException(
                "Either PrimaryContainer or Containers must be set: the container image and "
                "ModelDataUrl of the model."
            )
        if len(containers) > 1:
            raise ValidationException(
                "The local SageMaker serves single-container models: set PrimaryContainer or "
                "one entry in Containers."
            )
        container = request.get("PrimaryContainer") or containers[0]
        with self.lock:
            if name in self.models:
                raise already_exists("model", arn)
            package_container = None
            if container.get("ModelPackageName"):
                package_container = self.registry.container_for_model(container["ModelPackageName"])
            self.models[name] = ModelRecord(name, arn, request, package_container=package_container)
            self._store_tags(arn, request.get("Tags"))
        return {"ModelArn": arn}

    def describe_model(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelName"]
        model = self.models.get(name)
        if model is None:
            raise not_found_by_arn("model", self.config.arn("model", name))
        return model.describe()

    def create_endpoint_config(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointConfigName"]
        arn = self.config.arn("endpoint-config", name)
        variants = request["ProductionVariants"]
        names = [v["VariantName"] for v in variants]
        if len(set(names)) != len(names):
            raise ValidationException(
                f"Production variant names must be unique within an endpoint config: {names}"
            )
        with self.lock:
            if name in self.endpoint_configs:
                raise already_exists("endpoint configuration", arn)
            for variant in variants:
                model_name = variant.get("ModelName")
                if model_name not in self.models:
                    raise not_found_by_arn("model", self.config.arn("model", str(model_name)))
            self.endpoint_configs[name] = EndpointConfigRecord(name, arn, request)
            self._store_tags(arn, request.get("Tags"))
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._endpoint_config(request["EndpointConfigName"]).describe()

    def _endpoint_config(self, name: str) -> EndpointConfigRecord:
        record = self.endpoint_configs.get(name)
        if record is None:
            raise not_found_by_arn(
                "endpoint configuration", self.config.arn("endpoint-config", name)
            )
        return record

    # --- model registry (registry.py) ---------------------------------------------------------

    def create_model_package_group(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            group = self.registry.create_group(request)
            self._store_tags(group.arn, request.get("Tags"))
        return {"ModelPackageGroupArn": group.arn}

    def describe_model_package_group(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.registry.group(request["ModelPackageGroupName"]).describe()

    def list_model_package_groups(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.registry.list_groups(request)

    def delete_model_package_group(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            group = self.registry.delete_group(request["ModelPackageGroupName"])
            self.tags.pop(group.arn, None)
        return {}

    def create_model_package(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ModelPackageArn": self.registry.create_package(request).arn}

    def describe_model_package(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.registry.package(request["ModelPackageName"]).describe()

    def list_model_packages(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.registry.list_packages(request)

    def update_model_package(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ModelPackageArn": self.registry.update_package(request).arn}

    # --- endpoints ----------------------------------------------------------------------------

    def _endpoint(self, name: str) -> Endpoint:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise not_found_by_arn("endpoint", self.config.arn("endpoint", name))
        return endpoint

    def create_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointName"]
        arn = self.config.arn("endpoint", name)
        with self.lock:
            if name in self.endpoints:
                raise already_exists("endpoint", arn)
            config = self._endpoint_config(request["EndpointConfigName"])
            endpoint = Endpoint(name, arn, config, request)
            self.endpoints[name] = endpoint
            self._store_tags(arn, request.get("Tags"))
        self.endpoint_manager.create(endpoint)
        return {"EndpointArn": arn}

    def update_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            endpoint = self._endpoint(request["EndpointName"])
            config = self._endpoint_config(request["EndpointConfigName"])
            policy = traffic_policy(request, config.request)
            with endpoint.lock:
                if endpoint.status == "Failed":
                    raise ValidationException(
                        f'Cannot update failed endpoint "{endpoint.arn}". '
                        "Delete it and create it again."
                    )
                if endpoint.status != "InService":
                    raise ValidationException(
                        f'Cannot update in-progress endpoint "{endpoint.arn}".'
                    )
                endpoint.status = "Updating"
                endpoint.failure_reason = None
                endpoint.last_modified_time = now()
        self.endpoint_manager.update(endpoint, config, policy)
        return {"EndpointArn": endpoint.arn}

    def describe_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._endpoint(request["EndpointName"]).describe()

    def delete_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            endpoint = self._endpoint(request["EndpointName"])
            del self.endpoints[endpoint.name]
            self.tags.pop(endpoint.arn, None)
        self.endpoint_manager.delete(endpoint)
        return {}

    def list_endpoints(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            summaries = [endpoint.summary() for endpoint in self.endpoints.values()]
        summaries = [
            s
            for s in summaries
            if request.get("NameContains", "") in s["EndpointName"]
            and request.get("StatusEquals", s["EndpointStatus"]) == s["EndpointStatus"]
            and time_filters(request, s["CreationTime"], s["LastModifiedTime"])
        ]
        summaries = sort_items(
            summaries,
            request.get("SortBy"),
            request.get("SortOrder") or "Descending",
            {
                "Name": lambda s: s["EndpointName"],
                "CreationTime": lambda s: s["CreationTime"],
                "Status": lambda s: s["EndpointStatus"],
            },
            default_sort="CreationTime",
        )
        page, token = paginate(summaries, request.get("NextToken"), request.get("MaxResults"))
        return {"Endpoints": page, "NextToken": token}

    def invoke_endpoint(
        self,
        name: str,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        target_variant: str | None = None,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
    ) -> Invocation:
        return invoke_endpoint(
            self.endpoint_manager,
            self.endpoints.get(name),
            name,
            body,
            content_type,
            accept,
            target_variant,
            inference_id,
            custom_attributes,
        )

    # --- tags ---------------------------------------------------------------------------------

    def _store_tags(self, arn: str, tags: list[dict[str, str]] | None) -> None:
        if tags:
            self._merge_tags(arn, tags)

    def _merge_tags(self, arn: str, tags: list[dict[str, str]]) -> None:
        current = {t["Key"]: t for t in self.tags.get(arn, [])}
        current.update({t["Key"]: t for t in tags})
        self.tags[arn] = list(current.values())

    def _resource_exists(self, arn: str) -> bool:
        match = ARN_RESOURCE.match(arn)
        if not match:
            return False
        kind = match.group(1)
        registries: dict[str, dict[str, Any]] = {
            "training-job": self.training_jobs,
            "hyper-parameter-tuning-job": self.tuning_jobs,
            "model": self.models,
            "endpoint-config": self.endpoint_configs,
            "endpoint": self.endpoints,
        }
        if kind in {"model-package-group", "model-package"}:
            return self.registry.resource_exists(arn)
        registry = registries.get(kind, {})
        return any(getattr(item, "arn", None) == arn for item in registry.values())

    def add_tags(self, request: dict[str, Any]) -> dict[str, Any]:
        arn = request["ResourceArn"]
        with self.lock:
            if not self._resource_exists(arn):
                raise ValidationException(f"Resource {arn} not found.")
            self._merge_tags(arn, request["Tags"])
            return {"Tags": list(self.tags[arn])}

    def list_tags(self, request: dict[str, Any]) -> dict[str, Any]:
        arn = request["ResourceArn"]
        with self.lock:
            if not self._resource_exists(arn):
                raise ValidationException(f"Resource {arn} not found.")
            tags = list(self.tags.get(arn, []))
        page, token = paginate(tags, request.get("NextToken"), request.get("MaxResults") or 50)
        return {"Tags": page, "NextToken": token}

    # --- lifecycle ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop every tuning job, training job and model server this backend started."""
        with self.lock:
            tuning_jobs = list(self.tuning_jobs.values())
        for tuning_job in tuning_jobs:
            tuning_job.stop()
        self.runner.shutdown()
        for tuning_job in tuning_jobs:
            tuning_job.join(5)
        self.endpoint_manager.shutdown()
        logger.info("local SageMaker backend shut down")
