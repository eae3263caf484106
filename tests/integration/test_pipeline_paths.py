"""Every path through pipeline.asl.json, asserted on the execution history.

Lambda answers are scripted (pipeline_harness); the definition, its Retry/Catch clauses and
the DefinitionSubstitutions are the real ones.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3

from tests.integration.pipeline_harness import (
    APPROVED,
    MODEL_PACKAGE_ARN,
    LambdaError,
    deployment,
    endpoint_check,
    fail,
    happy_status_checks,
    sequence,
    status_checks,
)

TUNING_LOOP = ["WaitForTuning", "CheckTuning", "IsTuningDone"]
TRAINING_LOOP = ["WaitForTraining", "CheckTraining", "IsTrainingDone"]
ENDPOINT_LOOP = ["WaitForEndpoint", "CheckEndpoint", "IsEndpointInService"]
REPORT = ["WriteReport", "Outcome"]
FAILURE_TAIL = ["NotifyFailure", *REPORT, "PipelineFailed"]
HEAD = ["CheckInput", "Configure", "IsPromotion", "ValidateDataset", "StartTuning"]


def checks(**overrides):
    """The happy-path status answers with some kinds replaced."""
    return status_checks(**{**happy_status_checks(), **overrides})


def test_pipeline_happy_path_deploys_and_smoke_tests(pipeline):
    execution = pipeline.run()

    assert execution.status == "SUCCEEDED"
    assert execution.states == [
        *HEAD,
        *TUNING_LOOP * 2,
        "FindBest",
        "StartProfiledTraining",
        *TRAINING_LOOP * 2,
        "EvaluateRules",
        "RegisterModel",
        "IsModelApproved",
        "DeployEndpoint",
        "IsSuperseded",
        *ENDPOINT_LOOP * 2,
        "SmokeTest",
        *REPORT,
        "PipelineSucceeded",
    ]
    assert execution.failed_tasks() == []


def test_pipeline_passes_each_step_what_it_needs(pipeline):
    pipeline.run()

    [validate] = pipeline.invoked("ValidateDatasetFunction")
    assert validate == {
        "bucket": "mlops-data-123456789012-us-east-1",
        "manifest_key": "datasets/digits/manifest.json",
        "dataset": "digits",
        "execution_name": "run-1",
    }
    [training] = pipeline.invoked("StartProfiledTrainingFunction")
    assert training["best"]["hyperparameters"]["model"] == '"resnet18"'
    assert training["dataset"]["channels"]["train"].endswith("/datasets/digits/train/")
    [register] = pipeline.invoked("RegisterModelFunction")
    assert register["execution_arn"].endswith(":execution:mlops-pipeline:run-1")
    assert {k: register[k] for k in ("dataset", "manifest_version", "tuning_job_name")} == {
        "dataset": "digits",
        "manifest_version": "v:1",
        "tuning_job_name": "mlops-digits-tune-1a2b3c4d",
    }
    assert register["gate"]["approved"] is True
    [deploy] = pipeline.invoked("DeployEndpointFunction")
    approved_at = datetime.fromisoformat(deploy.pop("approved_at"))
    assert abs((datetime.now(UTC) - approved_at).total_seconds()) < 300
    assert deploy == {
        "action": "deploy",
        "execution_name": "run-1",
        "dataset": "digits",
        "training_job_name": "mlops-digits-retrain-1a2b3c4d",
        "model_package_arn": MODEL_PACKAGE_ARN,
        "test_accuracy": 0.95,
    }
    [smoke] = pipeline.invoked("SmokeTestFunction")
    assert smoke["sample_image"]["key"] == "datasets/digits/test/000.zero/0000.png"
    endpoint_checks = [
        p for p in pipeline.invoked("CheckStatusFunction") if p["kind"] == "endpoint"
    ]
    assert endpoint_checks[0]["expected_config"] == "mlops-digits-1a2b3c4d"


def test_pipeline_invalid_data_set_fails_before_any_compute(pipeline):
    pipeline.scripts["ValidateDatasetFunction"] = fail(
        "DatasetInvalid", "data set digits is invalid: 1 problem(s)"
    )

    execution = pipeline.run()

    assert execution.status == "FAILED"
    assert execution.states == [*HEAD[:4], *FAILURE_TAIL]
    assert execution.error == "DatasetInvalid"
    assert "1 problem(s)" in execution.cause
    assert pipeline.invoked("StartTuningFunction") == []
    assert "failed with DatasetInvalid" in execution.published_messages()[0]


def test_pipeline_tuning_failed(pipeline):
    pipeline.scripts["CheckStatusFunction"] = checks(
        tuning=fail("TuningFailed", "tuning job mlops-digits-tune-1a2b3c4d ended Failed")
    )

    execution = pipeline.run()

    assert execution.states == [*HEAD, *TUNING_LOOP[:2], *FAILURE_TAIL]
    assert execution.error == "TuningFailed"
    assert pipeline.invoked("FindBestFunction") == []


def test_pipeline_no_completed_trial(pipeline):
    pipeline.scripts["FindBestFunction"] = fail("NoCompletedTrainingJob", "0 of 3 trials completed")

    execution = pipeline.run()

    assert execution.states[-5:] == ["FindBest", *FAILURE_TAIL]
    assert execution.error == "NoCompletedTrainingJob"
    assert pipeline.invoked("StartProfiledTrainingFunction") == []


def test_pipeline_training_failed(pipeline):
    pipeline.scripts["CheckStatusFunction"] = checks(
        training=fail("TrainingFailed", "training job ended Failed: AlgorithmError")
    )

    execution = pipeline.run()

    assert execution.states[-6:] == ["WaitForTraining", "CheckTraining", *FAILURE_TAIL]
    assert execution.error == "TrainingFailed"


def rejected(summary: str, blocking: list[str]) -> dict:
    return {**APPROVED, "approved": False, "summary": summary, "blocking": blocking}


def test_pipeline_rules_rejected_leaves_the_endpoint_alone(pipeline):
    summary = "rejected by 1 blocking finding(s): LossNotDecreasing (job): IssuesFound: loss flat"
    pipeline.scripts["EvaluateRulesFunction"] = sequence(rejected(summary, ["LossNotDecreasing"]))

    execution = pipeline.run()

    assert execution.status == "FAILED"
    assert execution.states[-7:] == [
        "EvaluateRules",
        "RegisterModel",
        "IsModelApproved",
        "NotifyRejection",
        *REPORT,
        "ModelRejected",
    ]
    assert (execution.error, execution.cause) == ("ModelRejected", summary)
    assert pipeline.invoked("DeployEndpointFunction") == []
    [register] = pipeline.invoked("RegisterModelFunction")
    assert register["gate"]["approved"] is False  # a rejected model is registered as Rejected
    assert "the endpoint is unchanged" in execution.published_messages()[0]


def test_pipeline_quality_gate_rejected(pipeline):
    summary = (
        "rejected by 1 blocking finding(s): MinTestAccuracy (quality): Failed: test accuracy 0.5000"
    )
    pipeline.scripts["EvaluateRulesFunction"] = sequence(rejected(summary, ["MinTestAccuracy"]))

    execution = pipeline.run()

    assert execution.states[-4:] == ["NotifyRejection", *REPORT, "ModelRejected"]
    assert "MinTestAccuracy" in execution.cause
    assert pipeline.invoked("DeployEndpointFunction") == []


def test_pipeline_endpoint_never_reaches_in_service(pipeline):
    pipeline.scripts["CheckStatusFunction"] = checks(
        endpoint=sequence(
            endpoint_check("Updating", done=False, endpoint_config="mlops-digits-00000000"),
            LambdaError(
                "EndpointFailed", "endpoint mlops-classifier is InService with its old config"
            ),
        ),
    )

    execution = pipeline.run()

    assert (
        execution.states[-8:]
        == [*ENDPOINT_LOOP, "WaitForEndpoint", "CheckEndpoint", *FAILURE_TAIL][-8:]
    )
    assert execution.error == "EndpointFailed"
    assert pipeline.invoked("SmokeTestFunction") == []


def test_pipeline_smoke_test_failure_rolls_the_endpoint_back(pipeline):
    pipeline.scripts["SmokeTestFunction"] = fail("SmokeTestFailed", "endpoint answered non-JSON")
    pipeline.scripts["DeployEndpointFunction"] = lambda payload: (
        {"operation": "rolled-back"} if payload["action"] == "rollback" else deployment()
    )

    execution = pipeline.run()

    assert execution.states[-6:] == ["SmokeTest", "RollbackEndpoint", *FAILURE_TAIL]
    assert execution.error == "SmokeTestFailed"
    rollback = pipeline.invoked("DeployEndpointFunction")[-1]
    assert rollback["action"] == "rollback"
    assert rollback["endpoint_config_name"] == "mlops-digits-00000000"


def test_pipeline_throttling_is_retried_with_backoff(pipeline):
    pipeline.scripts["StartTuningFunction"] = sequence(
        LambdaError("SageMakerThrottled", "Rate exceeded"),
        LambdaError("SageMakerThrottled", "Rate exceeded"),
        {
            "job_name": "mlops-digits-tune-1a2b3c4d",
            "warm_start_parent": None,
            "strategy": "Bayesian",
        },
    )

    execution = pipeline.run()

    assert execution.status == "SUCCEEDED"
    assert execution.failed_tasks()[:2] == ["SageMakerThrottled", "SageMakerThrottled"]
    assert len(pipeline.invoked("StartTuningFunction")) == 3
    assert len(pipeline.sleeps) == 2 and all(0 <= s <= 10 for s in pipeline.sleeps)


def test_pipeline_quota_exhaustion_ends_after_its_retries(pipeline):
    pipeline.scripts["StartProfiledTrainingFunction"] = fail(
        "ResourceLimitExceeded", "ml.g4dn.xlarge quota"
    )

    execution = pipeline.run()

    assert execution.error == "ResourceLimitExceeded"
    assert len(pipeline.invoked("StartProfiledTrainingFunction")) == 6  # first try + 5 retries
    assert max(pipeline.sleeps) <= 900


def test_pipeline_busy_endpoint_waits_its_turn(pipeline):
    happy = pipeline.scripts["DeployEndpointFunction"]
    pipeline.scripts["DeployEndpointFunction"] = sequence(
        LambdaError("EndpointBusy", "endpoint mlops-classifier is Updating"),
        happy({}),
    )

    execution = pipeline.run()

    assert execution.status == "SUCCEEDED"
    assert len(pipeline.invoked("DeployEndpointFunction")) == 2


def test_pipeline_superseded_model_ends_without_touching_the_endpoint(pipeline):
    pipeline.scripts["DeployEndpointFunction"] = sequence(
        deployment(
            operation="superseded",
            previous_endpoint_config=None,
            superseded_by="mlops-digits-99999999",
        )
    )

    execution = pipeline.run()

    assert execution.status == "SUCCEEDED"
    assert execution.states[-6:] == [
        "IsModelApproved",
        "DeployEndpoint",
        "IsSuperseded",
        *REPORT,
        "PipelineSucceeded",
    ]
    assert pipeline.invoked("SmokeTestFunction") == []


def test_pipeline_update_replaced_by_a_newer_run_skips_the_smoke_test(pipeline):
    newer = "mlops-digits-99999999"
    pipeline.scripts["CheckStatusFunction"] = checks(
        endpoint=sequence(
            endpoint_check("Updating", done=False),
            endpoint_check("InService", done=True, endpoint_config=newer, superseded_by=newer),
        )
    )

    execution = pipeline.run()

    assert execution.status == "SUCCEEDED"
    assert execution.states[-6:] == [
        "WaitForEndpoint",
        "CheckEndpoint",
        "IsEndpointInService",
        *REPORT,
        "PipelineSucceeded",
    ]
    assert pipeline.invoked("SmokeTestFunction") == []


def test_pipeline_lambda_service_errors_are_retried(pipeline):
    pipeline.scripts["FindBestFunction"] = sequence(
        LambdaError("Lambda.TooManyRequestsException", "Rate exceeded"),
        pipeline.scripts["FindBestFunction"]({}),
    )

    execution = pipeline.run()

    assert execution.status == "SUCCEEDED"


def test_pipeline_lambda_client_execution_timeout_is_retried(pipeline):
    """AWS's recommended service-error name (bp-lambda-serviceexception) is retried."""
    pipeline.scripts["FindBestFunction"] = sequence(
        LambdaError("Lambda.ClientExecutionTimeoutException", "Client execution did not complete"),
        pipeline.scripts["FindBestFunction"]({}),
    )

    execution = pipeline.run()

    assert execution.status == "SUCCEEDED"
    assert len(pipeline.invoked("FindBestFunction")) == 2


def test_pipeline_lambda_unknown_is_retried_once_like_a_timeout(pipeline):
    """Lambda.Unknown (out of memory, a timeout as Step Functions reports it) gets one retry."""
    pipeline.scripts["EvaluateRulesFunction"] = fail("Lambda.Unknown", "Runtime exited")

    execution = pipeline.run()

    assert execution.states[-5:] == ["EvaluateRules", *FAILURE_TAIL]
    assert execution.error == "Lambda.Unknown"
    assert len(pipeline.invoked("EvaluateRulesFunction")) == 2


def test_pipeline_unexpected_handler_crash_is_notified(pipeline):
    pipeline.scripts["EvaluateRulesFunction"] = fail("KeyError", "'ModelArtifacts'")

    execution = pipeline.run()

    assert execution.states[-5:] == ["EvaluateRules", *FAILURE_TAIL]
    assert execution.error == "KeyError"
    assert len(pipeline.invoked("EvaluateRulesFunction")) == 1  # not retried


def test_pipeline_refuses_an_input_without_its_keys(pipeline):
    execution = pipeline.run({"hello": "world"})

    assert execution.states == ["CheckInput", "InvalidExecutionInput"]
    assert execution.error == "InvalidExecutionInput"


def test_pipeline_state_output_stays_small(pipeline):
    execution = pipeline.run()

    largest = max(
        len(e["stateExitedEventDetails"]["output"])
        for e in execution.events
        if "stateExitedEventDetails" in e
    )
    assert largest < 16 * 1024, "keep each state's output far below the 256 KB limit"
    final = json.loads(execution.events[-2]["stateExitedEventDetails"]["output"])
    assert set(final) >= {
        "validated",
        "tuning",
        "best",
        "training",
        "gate",
        "deployment",
        "smoke_test",
    }


def test_pipeline_failed_rollback_still_reports_the_smoke_test_failure(pipeline):
    pipeline.scripts["SmokeTestFunction"] = fail("SmokeTestFailed", "endpoint answered non-JSON")
    happy_deploy = pipeline.scripts["DeployEndpointFunction"]({})

    def deploy_but_fail_rollback(payload):
        if payload["action"] == "rollback":
            raise LambdaError("AwsCallFailed", "UpdateEndpoint failed")
        return happy_deploy

    pipeline.scripts["DeployEndpointFunction"] = deploy_but_fail_rollback

    execution = pipeline.run()

    assert execution.states[-6:] == ["SmokeTest", "RollbackEndpoint", *FAILURE_TAIL]
    assert execution.error == "SmokeTestFailed"


def test_pipeline_fails_cleanly_when_the_notification_cannot_be_sent(pipeline):
    topic = next(t["TopicArn"] for t in boto3.client("sns").list_topics()["Topics"])
    boto3.client("sns").delete_topic(TopicArn=topic)
    pipeline.scripts["ValidateDatasetFunction"] = fail("DatasetInvalid", "no valid split")

    execution = pipeline.run()

    assert execution.states[-4:] == FAILURE_TAIL
    assert execution.error == "DatasetInvalid"
    assert len(execution.failed_tasks()) == 1 + 4  # the step, then the publish and 3 retries
    assert execution.failed_tasks()[-1].startswith("SNS.")


def test_pipeline_writes_the_report_of_its_own_execution_last(pipeline):
    execution = pipeline.run()

    [report] = pipeline.invoked("WriteReportFunction")
    assert report["execution_name"] == "run-1"
    assert report["execution_arn"].endswith(":run-1")
    assert execution.states[-3:] == [*REPORT, "PipelineSucceeded"]


def test_pipeline_a_report_that_cannot_be_written_keeps_each_outcome(pipeline):
    pipeline.scripts["WriteReportFunction"] = fail("ClientError", "AccessDenied on PutObject")
    succeeded = pipeline.run()
    pipeline.scripts["EvaluateRulesFunction"] = sequence(
        rejected("rejected by MinTestAccuracy", ["MinTestAccuracy"])
    )
    rejected_run = pipeline.wait(pipeline.start(name="run-2"))

    assert succeeded.status == "SUCCEEDED"
    assert succeeded.states[-3:] == [*REPORT, "PipelineSucceeded"]
    assert len(pipeline.invoked("WriteReportFunction")) == 4  # one retry each
    assert (rejected_run.error, rejected_run.states[-1]) == ("ModelRejected", "ModelRejected")
