"""Training jobs on the local SageMaker, run with the fixture script (fast, no torch)."""

from __future__ import annotations

import io
import itertools
import json
import re
import tarfile
from typing import Any

import pytest

from mlops.local.sagemaker.config import SCRIPT_WITHOUT_TOOLKIT_ENV
from tests.support.waiting import wait_for

from .helpers import (
    ARTIFACTS_BUCKET,
    OUTPUT_URI,
    hyperparameters,
    training_request,
    wait_training,
)

pytestmark = pytest.mark.timeout(120)
RULE_IMAGE = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"


def read_tarball(s3: Any, uri: str) -> dict[str, bytes]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def test_training_job_completes_with_metrics_artifacts_and_logs(
    sm: Any, s3: Any, logs: Any, service: Any
) -> None:
    sm.create_training_job(
        **training_request(
            "tj-complete",
            HyperParameters=hyperparameters(epochs=3, lr=0.1, flag=True),
            Environment={"MY_SETTING": "on"},
            Tags=[{"Key": "project", "Value": "mlops"}],
        )
    )
    first = sm.describe_training_job(TrainingJobName="tj-complete")
    assert first["TrainingJobStatus"] == "InProgress"

    job = wait_training(sm, "tj-complete")

    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["SecondaryStatus"] == "Completed"
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in t for t in job["SecondaryStatusTransitions"])
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert metrics["valid:loss"] == pytest.approx((-1 + 2) ** 2 + 0.5 / 3, abs=1e-5)
    assert metrics["test:accuracy"] == pytest.approx(0.7)
    assert job["TrainingTimeInSeconds"] >= 1 and job["BillableTimeInSeconds"] >= 1
    assert job["TrainingEndTime"] >= job["TrainingStartTime"] >= job["CreationTime"]
    model_uri = f"{OUTPUT_URI}/tj-complete/output/model.tar.gz"
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == model_uri

    model = read_tarball(s3, model_uri)
    assert {"model.pth", "model_info.json", "code/inference.py"} <= set(model)
    output = read_tarball(s3, f"{OUTPUT_URI}/tj-complete/output/output.tar.gz")
    run = json.loads(output["env.json"])
    env, argv = run["env"], run["argv"]
    # hyperparameters: JSON-decoded, sagemaker_* stripped, sorted, true -> "True" (the toolkit)
    assert argv == ["--epochs", "3", "--flag", "True", "--lr", "0.1"]
    assert env["SM_NUM_GPUS"] == "0" and env["SM_CURRENT_HOST"] == "algo-1"
    assert json.loads(env["SM_HPS"]) == {"epochs": 3, "flag": True, "lr": 0.1}
    assert json.loads(env["SM_TRAINING_ENV"])["job_name"] == "tj-complete"
    assert env["SM_CHANNEL_TRAIN"].endswith("jobs/tj-complete/input/data/train")
    assert env["MY_SETTING"] == "on" and env["TRAINING_JOB_NAME"] == "tj-complete"

    streams = logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="tj-complete/algo-1-"
    )["logStreams"]
    assert len(streams) == 1
    events = logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=streams[0]["logStreamName"]
    )["events"]
    assert any("split=valid loss=" in e["message"] for e in events)

    job_dir = service.config.state_dir / "jobs" / "tj-complete"
    assert (job_dir / "logs" / "training.log").read_text().count("[metric]") == 7
    usage = json.loads((job_dir / "resource_usage.json").read_text())
    assert {"samples", "peak_rss_bytes", "mean_cpu_percent"} <= set(usage)
    assert json.loads((job_dir / "describe.json").read_text())["TrainingJobStatus"] == "Completed"
    hp_file = json.loads((job_dir / "input" / "config" / "hyperparameters.json").read_text())
    assert hp_file["sagemaker_program"] == '"train.py"'
    tags = sm.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
    assert tags == [{"Key": "project", "Value": "mlops"}]


def test_training_job_failure_reason_names_the_script_error(sm: Any) -> None:
    sm.create_training_job(
        **training_request("tj-fail", HyperParameters=hyperparameters(fail="true"))
    )
    job = wait_training(sm, "tj-fail")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["SecondaryStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:")
    assert "ExitCode 1" in reason
    # The toolkit's ErrorMessage is the script's stderr from the first error line on, read in
    # pipe-sized chunks and split at newlines (process.py `watch`): where a chunk ends between
    # "ValueError" and ": synthetic ..." (seen on a loaded CI machine) the two come out on two
    # lines with the colon stripped, exactly as on SageMaker. Either way both are named.
    error_message = reason.split('ErrorMessage "', 1)[1]
    assert re.search(r"ValueError\W+synthetic failure in epoch 1", error_message), reason


def test_training_job_failure_file_wins_over_the_log(sm: Any) -> None:
    """The toolkit writes /opt/ml/output/failure only when the script did not (files.py:
    "Write failure file only if it does not exist"); SageMaker reports that file."""
    sm.create_training_job(
        **training_request(
            "tj-failure-file",
            HyperParameters=hyperparameters(fail="true", **{"write-failure-file": "true"}),
        )
    )
    reason = wait_training(sm, "tj-failure-file")["FailureReason"]
    assert reason.startswith("AlgorithmError: ")
    assert "the data set has no valid images" in reason
    assert "synthetic failure" not in reason


def test_training_job_missing_channel_data_is_a_client_error(sm: Any) -> None:
    request = training_request("tj-no-data")
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = (
        "s3://local-sm-data/datasets/does-not-exist/train"
    )
    sm.create_training_job(**request)
    job = wait_training(sm, "tj-no-data")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("ClientError: Data download failed:")
    assert "does-not-exist" in job["FailureReason"]


def test_training_job_max_runtime_stops_it(sm: Any) -> None:
    sm.create_training_job(
        **training_request(
            "tj-max-runtime",
            # 1,000 s if nothing stopped it: ending at all within the wait is the stop's doing
            HyperParameters=hyperparameters(epochs=10_000, **{"epoch-seconds": 0.1}),
            StoppingCondition={"MaxRuntimeInSeconds": 1},
        )
    )
    job = wait_training(sm, "tj-max-runtime", timeout=180)
    assert job["TrainingJobStatus"] == "Stopped"
    assert job["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]][-2:] == [
        "Stopping",
        "MaxRuntimeExceeded",
    ]
    # A wall-clock bound here failed at load 15 (12 s); what matters is that the job was cut short.
    assert job["TrainingTimeInSeconds"] < 180


def test_training_job_ignoring_sigterm_is_killed_after_the_grace_period(
    service_factory: Any,
) -> None:
    import boto3

    service = service_factory(stop_grace_s=0.5)
    sm = boto3.client("sagemaker", endpoint_url=service.url)
    sm.create_training_job(
        **training_request(
            "tj-stubborn",
            HyperParameters=hyperparameters(
                epochs=200, **{"epoch-seconds": 0.1, "ignore-sigterm": "true"}
            ),
            StoppingCondition={"MaxRuntimeInSeconds": 1},
        )
    )
    job = wait_training(sm, "tj-stubborn", timeout=30)
    assert job["TrainingJobStatus"] == "Stopped"


def test_processes_left_behind_by_the_script_are_killed(sm: Any, service: Any) -> None:
    """A forgotten background process that keeps the script's output pipe open.

    The real toolkit reads the script's stdout/stderr to their end (process.py, asyncio
    gather) before it returns, so on SageMaker such a job stays in Training until
    MaxRuntimeInSeconds; the local SageMaker then stops it and kills every process of the
    job. Without the toolkit the local runner itself kills stragglers once the script exits.
    """
    sm.create_training_job(
        **training_request(
            "tj-straggler",
            HyperParameters=hyperparameters(**{"leave-child": "true"}),
            StoppingCondition={"MaxRuntimeInSeconds": 15},
        )
    )
    job = wait_training(sm, "tj-straggler", timeout=60)
    if service.config.image_python:
        assert job["TrainingJobStatus"] == "Stopped"
        assert job["SecondaryStatus"] == "MaxRuntimeExceeded"
    else:
        assert job["TrainingJobStatus"] == "Completed"
        assert job["TrainingTimeInSeconds"] < 20


def test_training_jobs_respect_the_concurrency_limit(service_factory: Any) -> None:
    import boto3

    service = service_factory(max_concurrent_jobs=1)
    sm = boto3.client("sagemaker", endpoint_url=service.url)
    for index in range(3):
        sm.create_training_job(
            **training_request(
                f"tj-queue-{index}", HyperParameters=hyperparameters(**{"epoch-seconds": 0.3})
            )
        )
    queued = sm.describe_training_job(TrainingJobName="tj-queue-2")
    assert queued["TrainingJobStatus"] == "InProgress"
    assert queued["SecondaryStatus"] == "Starting"
    jobs = [wait_training(sm, f"tj-queue-{i}") for i in range(3)]
    assert [j["TrainingJobStatus"] for j in jobs] == ["Completed"] * 3
    spans = sorted((j["TrainingStartTime"], j["TrainingEndTime"]) for j in jobs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two jobs trained at once with max_concurrent_jobs=1"


def test_training_job_checkpoints_are_synced_and_restored(sm: Any, s3: Any, service: Any) -> None:
    checkpoint = {"S3Uri": f"s3://{ARTIFACTS_BUCKET}/checkpoints/tj-ckpt"}
    sm.create_training_job(
        **training_request(
            "tj-ckpt-1",
            HyperParameters=hyperparameters(epochs=2),
            CheckpointConfig=checkpoint,
        )
    )
    assert wait_training(sm, "tj-ckpt-1")["TrainingJobStatus"] == "Completed"
    state = s3.get_object(Bucket=ARTIFACTS_BUCKET, Key="checkpoints/tj-ckpt/state.json")
    assert json.loads(state["Body"].read()) == {"epoch": 2}

    sm.create_training_job(
        **training_request(
            "tj-ckpt-2",
            HyperParameters=hyperparameters(epochs=3),
            CheckpointConfig=checkpoint,
        )
    )
    job = wait_training(sm, "tj-ckpt-2")
    assert job["TrainingJobStatus"] == "Completed"
    log = (service.config.state_dir / "jobs" / "tj-ckpt-2" / "logs" / "training.log").read_text()
    assert "starting at epoch 3" in log


def debugger_request(name: str) -> dict[str, Any]:
    """A job asking for a hook, two project rules, one built-in-only rule and a profiler rule."""
    rules = [
        {
            "RuleConfigurationName": "LossNotDecreasing",
            "RuleEvaluatorImage": RULE_IMAGE,
            "RuleParameters": {"rule_to_invoke": "LossNotDecreasing", "num_steps": "10"},
        },
        {
            "RuleConfigurationName": "Overfit",
            "RuleEvaluatorImage": RULE_IMAGE,
            "RuleParameters": {"rule_to_invoke": "Overfit"},
        },
        {
            "RuleConfigurationName": "BuiltInOnly",
            "RuleEvaluatorImage": RULE_IMAGE,
        },
    ]
    return training_request(
        name,
        DebugHookConfig={
            "S3OutputPath": f"s3://{ARTIFACTS_BUCKET}/debug",
            "HookParameters": {"save_interval": "1"},
            "CollectionConfigurations": [
                {"CollectionName": "losses", "CollectionParameters": {"save_interval": "1"}}
            ],
        },
        DebugRuleConfigurations=rules,
        ProfilerRuleConfigurations=[
            {
                "RuleConfigurationName": "LowGPUUtilization",
                "RuleEvaluatorImage": RULE_IMAGE,
                "RuleParameters": {"rule_to_invoke": "LowGPUUtilization"},
            }
        ],
    )


def test_debug_rules_fill_rule_evaluation_statuses(service_factory: Any) -> None:
    """An account that still has SageMaker Debugger (DebuggerAvailable=true)."""
    import boto3

    service = service_factory(debugger_available=True)
    sm = boto3.client("sagemaker", endpoint_url=service.url, region_name="us-east-1")
    sm.create_training_job(**debugger_request("tj-rules"))
    early = sm.describe_training_job(TrainingJobName="tj-rules")
    assert {s["RuleEvaluationStatus"] for s in early["DebugRuleEvaluationStatuses"]} == {
        "InProgress"
    }
    job = wait_for(
        lambda: sm.describe_training_job(TrainingJobName="tj-rules"),
        60,
        "the rules of tj-rules to finish",
        done=lambda d: all(
            s["RuleEvaluationStatus"] != "InProgress" for s in d["DebugRuleEvaluationStatuses"]
        ),
    )
    assert job["TrainingJobStatus"] == "Completed"
    statuses = {s["RuleConfigurationName"]: s for s in job["DebugRuleEvaluationStatuses"]}
    assert statuses["LossNotDecreasing"]["RuleEvaluationStatus"] == "IssuesFound"
    assert "LossNotDecreasing.num_steps=10" in statuses["LossNotDecreasing"]["StatusDetails"]
    assert statuses["Overfit"]["RuleEvaluationStatus"] == "NoIssuesFound"
    assert statuses["BuiltInOnly"]["RuleEvaluationStatus"] == "Error"
    assert ":processing-job/" in statuses["Overfit"]["RuleEvaluationJobArn"]
    profiler = job["ProfilerRuleEvaluationStatuses"][0]
    assert profiler["RuleEvaluationStatus"] == "NoIssuesFound"
    hook_config = json.loads(
        (
            service.config.state_dir
            / "jobs"
            / "tj-rules"
            / "input"
            / "config"
            / "debughookconfig.json"
        ).read_text()
    )
    assert hook_config["LocalPath"].endswith("jobs/tj-rules/output/tensors")
    assert hook_config["CollectionConfigurations"][0]["CollectionName"] == "losses"


def test_without_debugger_nothing_acts_on_the_debugger_members(sm: Any, service: Any) -> None:
    """The default, like an account opened after 2026-07-30: no hook config file reaches the
    script and DescribeTrainingJob invents no rule evaluations; the job itself must judge."""
    assert service.config.debugger_available is False
    sm.create_training_job(**debugger_request("tj-no-debugger"))
    job = wait_training(sm, "tj-no-debugger")
    assert job["TrainingJobStatus"] == "Completed"
    assert "DebugRuleEvaluationStatuses" not in job
    assert "ProfilerRuleEvaluationStatuses" not in job
    assert job["ProfilingStatus"] == "Disabled"
    job_dir = service.config.state_dir / "jobs" / "tj-no-debugger"
    assert not (job_dir / "input" / "config" / "debughookconfig.json").exists()
    seen = json.loads((job_dir / "output" / "data" / "env.json").read_text())["env"]
    assert seen["SMDEBUG_CONFIG_FILE_PATH"] is None


def test_stop_of_a_queued_job_before_it_runs(service_factory: Any) -> None:
    """A stopped tuning job stops its queued trials; the runner must not start them."""
    import boto3

    service = service_factory(max_concurrent_jobs=1)
    sm = boto3.client("sagemaker", endpoint_url=service.url)
    sm.create_training_job(
        **training_request("tj-busy", HyperParameters=hyperparameters(**{"epoch-seconds": 0.5}))
    )
    sm.create_training_job(**training_request("tj-waiting"))
    waiting = service.backend.training_jobs["tj-waiting"]
    waiting.request_stop()
    job = wait_training(sm, "tj-waiting")
    assert job["TrainingJobStatus"] == "Stopped"
    assert "Training" not in [t["Status"] for t in job["SecondaryStatusTransitions"]]
    wait_training(sm, "tj-busy")  # its slot is free: a runner that ignored the stop starts now
    after = sm.describe_training_job(TrainingJobName="tj-waiting")
    assert after["TrainingJobStatus"] == "Stopped"
    assert "Training" not in [t["Status"] for t in after["SecondaryStatusTransitions"]]


def test_a_missing_image_environment_fails_the_job_and_names_the_fix(
    service_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without .venv-image the job must not silently run without the real training toolkit."""
    import boto3

    monkeypatch.delenv(SCRIPT_WITHOUT_TOOLKIT_ENV, raising=False)
    service = service_factory(image_python=None)
    sm = boto3.client("sagemaker", endpoint_url=service.url)
    sm.create_training_job(**training_request("tj-no-image"))

    job = wait_training(sm, "tj-no-image")

    assert job["TrainingJobStatus"] == "Failed"
    assert "make image-venv" in job["FailureReason"]
    assert SCRIPT_WITHOUT_TOOLKIT_ENV in job["FailureReason"]
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert "Training" not in statuses  # the script never started


def test_the_script_only_fallback_runs_when_a_test_opts_in(
    service_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The explicit opt-in: the script runs under the SM_* contract written by hand."""
    import boto3

    monkeypatch.setenv(SCRIPT_WITHOUT_TOOLKIT_ENV, "1")
    service = service_factory(image_python=None)
    sm = boto3.client("sagemaker", endpoint_url=service.url)
    sm.create_training_job(**training_request("tj-script-only"))

    job = wait_training(sm, "tj-script-only")

    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    log = (service.config.state_dir / "jobs" / "tj-script-only" / "logs").glob("*.log")
    text = "".join(path.read_text() for path in log)
    assert f"{SCRIPT_WITHOUT_TOOLKIT_ENV} set" in text


def test_stop_training_job_stops_it_and_uploads_its_checkpoints(
    sm: Any, s3: Any, service: Any
) -> None:
    checkpoint = {"S3Uri": f"s3://{ARTIFACTS_BUCKET}/checkpoints/tj-stop"}
    sm.create_training_job(
        **training_request(
            "tj-stop",
            HyperParameters=hyperparameters(epochs=50, **{"epoch-seconds": 0.2}),
            CheckpointConfig=checkpoint,
        )
    )
    local = service.config.state_dir / "jobs" / "tj-stop" / "checkpoints" / "state.json"
    wait_for(local.is_file, 60, "the first checkpoint of tj-stop", interval=0.05)

    sm.stop_training_job(TrainingJobName="tj-stop")
    job = wait_training(sm, "tj-stop")

    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    state = s3.get_object(Bucket=ARTIFACTS_BUCKET, Key="checkpoints/tj-stop/state.json")
    assert 1 <= json.loads(state["Body"].read())["epoch"] < 50
    with pytest.raises(sm.exceptions.ClientError) as ended:
        sm.stop_training_job(TrainingJobName="tj-stop")
    assert ended.value.response["Error"]["Code"] == "ValidationException"
    assert "already ended with status Stopped" in ended.value.response["Error"]["Message"]


def test_stop_training_job_of_an_unknown_job_is_resource_not_found(sm: Any) -> None:
    with pytest.raises(sm.exceptions.ClientError) as caught:
        sm.stop_training_job(TrainingJobName="tj-nobody")
    assert caught.value.response["Error"]["Code"] == "ResourceNotFound"
