"""The sagemaker SDK's resource classes (which validate every response field) read the service."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from .helpers import (
    REGION,
    make_config,
    training_request,
    tuning_request,
    wait_endpoint,
    wait_training,
    wait_tuning,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def service(service_factory: Any) -> Any:
    """A job below asks for Debugger rule jobs: an account that still has SageMaker Debugger."""
    return service_factory(debugger_available=True)


def test_sagemaker_core_resources_load_tuning_job_best_training_job_and_endpoint(
    sm: Any, s3: Any, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = pytest.importorskip("sagemaker.core.resources")
    sm.create_hyper_parameter_tuning_job(
        **tuning_request("tune-core", strategy="Random", max_jobs=2, max_parallel=2)
    )
    sm.create_training_job(
        **training_request(
            "tj-core-rules",
            DebugHookConfig={"S3OutputPath": "s3://local-sm-artifacts/debug"},
            DebugRuleConfigurations=[
                {
                    "RuleConfigurationName": "Overfit",
                    "RuleEvaluatorImage": "debugger-rules:latest",
                    "RuleParameters": {"rule_to_invoke": "Overfit"},
                }
            ],
        )
    )
    sm.create_endpoint(EndpointName="ep-core", EndpointConfigName=make_config(sm, s3, "c1"))
    wait_tuning(sm, "tune-core")
    wait_training(sm, "tj-core-rules")
    wait_endpoint(sm, "ep-core")

    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", service.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", service.url)
    session = boto3.Session(region_name=REGION)

    tuning = resources.HyperParameterTuningJob.get("tune-core", session=session, region=REGION)
    assert tuning.hyper_parameter_tuning_job_status == "Completed"
    best_name = tuning.best_training_job.training_job_name
    best = resources.TrainingJob.get(best_name, session=session, region=REGION)
    assert best.training_job_status == "Completed"
    assert best.model_artifacts.s3_model_artifacts.endswith(f"/{best_name}/output/model.tar.gz")
    with_rules = resources.TrainingJob.get("tj-core-rules", session=session, region=REGION)
    assert with_rules.debug_rule_evaluation_statuses[0].rule_configuration_name == "Overfit"
    endpoint = resources.Endpoint.get("ep-core", session=session, region=REGION)
    assert endpoint.endpoint_status == "InService"
    assert endpoint.production_variants[0].variant_name == "AllTraffic"
    config = resources.EndpointConfig.get("config-c1", session=session, region=REGION)
    assert config.production_variants[0].model_name == "model-c1"
